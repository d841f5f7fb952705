"""HTML -> markdown, for readable text: document-analyze answers HTML for DOC/DOCX/PPT/PPTX/HTML/TXT inputs.

One conversion, :func:`html_to_markdown`, built on markdownify (tables, lists, links, code, emphasis) with the HTML
put in shape first, so that the markdown is what a reader (and an embedding model) should see:

* the document is parsed the way a browser parses it (selectolax/lexbor: unclosed tags, implied ``<tbody>``); only
  ``<body>`` is kept, and ``script``, ``style``, ``template``, ``noscript``, ``svg`` and the like are dropped with
  their content;
* headings are ATX (``#``), bullets ``-``, code blocks fenced (with the ``language-*`` class when there is one);
* tables become GFM pipe tables: the first row is the header, cells that span rows are repeated in every row they
  cover (a row read alone still says what it is about), rows are padded to the table's width, cell text is one line
  with ``|`` escaped; a table nested in a cell becomes that cell's text (``a, b; c, d``); a one-column table (a
  layout table) becomes its content; a caption becomes a paragraph above the table;
* images keep their alt text and ``src`` (``![alt](src)``), but inline ``data:`` URIs (``image_storage="base64"``)
  lose their payload -- base64 is no text to embed (the raw HTML keeps it);
* MathML becomes ``$TeX$`` (``$$`` for display math) from its TeX annotation, else its ``alttext``;
* runs of blank lines collapse to one, outside code blocks.

:func:`markdown_result` applies it to a :class:`~aisearch_ingest.results.ParseResult` (its content and every page)
and marks it ``content_type="markdown"``; the loaders, readers and the CLI call it unless told to keep the HTML.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
from typing import Any

from .results import ParseResult

__all__ = ["html_to_markdown", "markdown_result"]

# Elements dropped with everything inside them (their text is no document text).
_DROP = ("script", "style", "noscript", "template", "svg", "canvas", "iframe", "object", "head", "title", "meta")
_CELLS = ("td", "th")
_SECTIONS = ("section", "article", "aside", "header", "footer", "nav", "main", "figure", "details", "address")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


@functools.lru_cache(maxsize=1)
def _converter() -> Any:
    from markdownify import MarkdownConverter

    class Converter(MarkdownConverter):  # type: ignore[misc]  # markdownify ships no type hints
        """markdownify, with table cells on one line and their pipes escaped (``*args``: its signature changed
        between releases, the first two arguments did not)."""

        def convert_td(self, el: Any, text: str, *args: Any, **kwargs: Any) -> str:
            return str(super().convert_td(el, _cell(text), *args, **kwargs))  # type: ignore[misc]

        def convert_th(self, el: Any, text: str, *args: Any, **kwargs: Any) -> str:
            return str(super().convert_th(el, _cell(text), *args, **kwargs))  # type: ignore[misc]

    return Converter(
        heading_style="ATX",
        bullets="-",
        escape_underscores=False,  # snake_case names stay readable; intraword _ is no emphasis anyway
        table_infer_header=True,
        keep_inline_images_in=list(_CELLS),
        code_language_callback=_code_language,
    )


def _cell(text: str) -> str:
    text = " ".join(text.split())
    return re.sub(r"(?<!\\)\|", r"\\|", text)


def _code_language(el: Any) -> str:
    for node in (el, el.find("code")):
        for name in (node.get("class") or []) if node is not None else []:
            if name.startswith(("language-", "lang-")):
                return str(name.split("-", 1)[1])
    return ""


def _int(value: Any, default: int = 1) -> int:
    try:
        return max(1, min(int(str(value).strip()), 1000))
    except (TypeError, ValueError):
        return default


def _rows(table: Any) -> list[Any]:
    return [tr for tr in table.find_all("tr") if tr.find_parent("table") is table]


def _flatten_nested(table: Any) -> None:
    """A table inside a cell becomes text: cells joined by ``, ``, rows by ``; ``."""
    rows = []
    for tr in _rows(table):
        cells = [" ".join(c.get_text(" ").split()) for c in tr.find_all(_CELLS)]
        cells = [c for c in cells if c]
        if cells:
            rows.append(", ".join(cells))
    table.replace_with("; ".join(rows))


def _shape_table(soup: Any, table: Any) -> None:
    caption = table.find("caption")
    if caption is not None:
        para = soup.new_tag("p")
        para.extend(list(caption.contents))
        caption.decompose()
        table.insert_before(para)
    for tag in table.find_all(["colgroup", "col"]):
        tag.decompose()
    for tag in table.find_all(["thead", "tbody", "tfoot"]):
        tag.unwrap()  # rows straight under <table>: one header row (the first), no header inside the body
    rows = _rows(table)
    for tr in rows:
        if not tr.find(_CELLS):
            tr.decompose()
    rows = [tr for tr in rows if tr.parent is not None]
    if not rows:
        table.decompose()
        return
    if max(sum(_int(c.get("colspan")) for c in tr.find_all(_CELLS, recursive=False)) for tr in rows) <= 1:
        for tr in rows:  # a layout table: its content, not a grid of one column
            for cell in tr.find_all(_CELLS, recursive=False):
                cell.name = "div"
            tr.unwrap()
        table.name = "div"
        return
    _fill_rowspans(soup, rows)


def _fill_rowspans(soup: Any, rows: list[Any]) -> None:
    """Repeat each cell that spans rows in the rows it covers, then pad every row to the table's width."""
    pending: dict[int, tuple[Any, int]] = {}  # column -> (cell to repeat, rows it still covers)
    widths: list[int] = []
    for tr in rows:
        queue = list(tr.find_all(_CELLS, recursive=False))
        out: list[Any] = []
        col = 0
        while queue or any(left > 0 for c, (_, left) in pending.items() if c >= col):
            spanned = pending.get(col)
            if spanned is not None and spanned[1] > 0:
                cell, left = spanned
                out.append(copy.copy(cell))
                pending[col] = (cell, left - 1)
                col += _int(cell.get("colspan"))
                continue
            if not queue:  # a gap before a spanned column further right
                out.append(soup.new_tag("td"))
                col += 1
                continue
            cell = queue.pop(0)
            out.append(cell)
            span = _int(cell.get("rowspan"))
            del cell["rowspan"]
            if span > 1:
                pending[col] = (copy.copy(cell), span - 1)
            col += _int(cell.get("colspan"))
        tr.clear()  # the cells (re-added in order) and the whitespace between them
        tr.extend(out)
        widths.append(col)
    width = max(widths)
    for tr, used in zip(rows, widths, strict=True):
        for _ in range(width - used):
            tr.append(soup.new_tag("td"))


def _math(soup: Any, node: Any) -> None:
    ann = node.find("annotation", attrs={"encoding": "application/x-tex"})
    tex = ann.get_text() if ann is not None else node.get("alttext") or node.get_text(" ")
    tex = " ".join(str(tex).split())
    if not tex:
        node.decompose()
        return
    if node.get("display") == "block":
        node.replace_with(soup.new_string(f"\n\n$${tex}$$\n\n"))
    else:
        node.replace_with(soup.new_string(f"${tex}$"))


def _prepare(html: str) -> Any:
    from bs4 import BeautifulSoup
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    tree.strip_tags(list(_DROP))
    body = tree.body
    soup = BeautifulSoup((body.html or "") if body is not None else "", "html.parser")
    for block in soup.find_all(_SECTIONS):
        block.name = "div"  # blocks markdownify would run inline (a slide's notes into its picture's line)
    for heading in soup.find_all(["h1", "h2", "h3", "h4", "h5", "h6"]):
        if not heading.get_text(strip=True) and heading.find("img") is None:
            heading.decompose()
    for node in soup.find_all("math"):
        _math(soup, node)
    for img in soup.find_all("img"):
        if str(img.get("src") or "").lower().startswith("data:"):
            if not img.get("alt"):
                img.decompose()
            else:
                img["src"] = ""
    # Innermost tables first: a nested table is text by the time its outer table is shaped.
    for table in reversed(soup.find_all("table")):
        if table.find_parent(_CELLS) is not None:
            _flatten_nested(table)
    for table in soup.find_all("table"):
        _shape_table(soup, table)
    return soup


def _tidy(markdown: str) -> str:
    """Blank-only lines emptied and runs of blank lines collapsed, outside fenced code."""
    out: list[str] = []
    fence = ""
    for line in markdown.split("\n"):
        match = _FENCE.match(line)
        if fence:
            out.append(line)
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
                fence = ""
            continue
        if match:
            fence = match.group(1)
        if line.strip():
            out.append(line)
        elif out and out[-1]:
            out.append("")
    return "\n".join(out).strip("\n")


def html_to_markdown(html: str) -> str:
    """The markdown of an HTML document or fragment (see the module docstring for what becomes what).

    Args:
        html: HTML as document-analyze returns it (a whole document or a fragment).

    Returns:
        Markdown, without leading or trailing blank lines.

    Example:
        >>> print(html_to_markdown(
        ...     "<h1>Plans</h1><table><tr><td>Plan</td><td>Price</td></tr><tr><td>Pro | EU</td><td>9</td></tr>"
        ...     "</table><script>track()</script><ul><li>monthly</li></ul>"))
        # Plans
        <BLANKLINE>
        | Plan | Price |
        | --- | --- |
        | Pro \\| EU | 9 |
        <BLANKLINE>
        - monthly
    """
    if not html.strip():
        return ""
    return _tidy(str(_converter().convert_soup(_prepare(html))))


def markdown_result(result: ParseResult) -> ParseResult:
    """``result`` with its HTML content and pages turned into markdown (:func:`html_to_markdown`) and
    ``content_type="markdown"``; any other content type is returned as it is. ``result`` itself is not changed.

    Example:
        >>> from aisearch_ingest import Page
        >>> r = ParseResult(source="a.docx", file_name="a.docx", file_type="docx", service="document-analyze",
        ...                 service_id="ops-document-analyze-001", content="<h1>A</h1><p>b</p>",
        ...                 content_type="html", pages=[Page(1, "<h1>A</h1><p>b</p>")])
        >>> converted = markdown_result(r)
        >>> converted.content_type, converted.content, converted.pages[0].content, r.content_type
        ('markdown', '# A\\n\\nb', '# A\\n\\nb', 'html')
    """
    if result.content_type != "html":
        return result
    converted: dict[str, str] = {}  # a one-page result's page is its content: converted once

    def convert(text: str) -> str:
        if text not in converted:
            converted[text] = html_to_markdown(text)
        return converted[text]

    pages = [dataclasses.replace(page, content=convert(page.content)) for page in result.pages]
    return dataclasses.replace(result, content=convert(result.content), content_type="markdown", pages=pages)
