"""HTML -> atoms with selectolax (lexbor): headings, paragraphs, ``<pre>``, tables, list items and formulas.

The text of each block is what a reader sees, in source order: inline elements (``<code>``, ``<b>``, links) stay in
place inside their sentence, whitespace runs collapse to one space except inside ``<pre>``, which is kept exactly and
fenced with backticks. Headings become ``#`` lines and drive the breadcrumb. Tables become pipe rows in source cell
order, header row first; rows tied together by ``rowspan`` form one atom so they are never separated. MathML
(``<math>``, its TeX annotation when present) and Sphinx/MathJax ``div.math`` become formula atoms.
"""

from __future__ import annotations

import re
from typing import Any

from .model import Atom, HeadingState

__all__ = ["html_atoms", "html_table_parts", "html_table_segments"]

_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_SKIP = frozenset(
    {"script", "style", "noscript", "template", "head", "title", "meta", "link", "svg", "canvas", "iframe", "object"}
)
_CONTAINERS = frozenset(
    {
        "html", "body", "div", "section", "article", "main", "header", "footer", "aside", "nav", "blockquote",
        "figure", "details", "form", "fieldset", "center", "address", "dl", "hgroup", "search", "span", "a", "font",
        "li", "dd", "td", "th", "caption", "summary", "label", "picture", "tbody", "thead", "tfoot", "tr",
    }
)  # fmt: skip
_BLOCKS = frozenset(
    {
        "p", "div", "section", "article", "main", "header", "footer", "aside", "nav", "blockquote", "figure",
        "figcaption", "details", "summary", "form", "fieldset", "center", "address", "dl", "dt", "dd", "ul", "ol",
        "li", "table", "pre", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "hgroup", "search", "menu", "math", "caption",
        "listing", "xmp", "plaintext", "body", "html",
    }
)  # fmt: skip
_LEAVES = frozenset({"p", "dt", "figcaption", "caption", "summary", "legend"})
_WS = re.compile(r"\s+")


def _collapse(text: str) -> str:
    return " ".join(text.split())


class _Walker:
    """Walks the DOM once and appends (kind, text, level, title, parts, head_parts) blocks."""

    def __init__(self) -> None:
        self.blocks: list[tuple[str, str, int, str, list[str] | None, int]] = []
        self.buf: list[str] = []
        self.prefix = ""

    def flush(self) -> None:
        if self.buf:
            text = _collapse("".join(self.buf))
            self.buf = []
            if text:
                self.blocks.append(("list" if self.prefix else "text", self.prefix + text, 0, "", None, 0))
                self.prefix = ""

    def walk(self, node: Any, depth: int = 0) -> None:
        buf = self.buf
        for child in node.iter(include_text=True):
            tag = child.tag
            if tag == "-text":
                buf.append(child.text_content or "")
                continue
            if tag[0] in "-_!" or tag in _SKIP:
                continue
            level = _HEADINGS.get(tag)
            if level is not None:
                self.flush()
                title = _collapse(child.text(deep=True))
                if title:
                    self.blocks.append(("heading", "#" * level + " " + title, level, title, None, 0))
                continue
            if tag in _LEAVES:
                self.flush()
                text = _collapse(child.text(deep=True))
                if text:
                    self.blocks.append(("text", text, 0, "", None, 0))
                continue
            if tag == "pre" or tag == "listing" or tag == "xmp":
                self.flush()
                self._pre(child)
                continue
            if tag == "table":
                self.flush()
                self._table(child, depth)
                continue
            if tag == "ul" or tag == "ol" or tag == "menu":
                self.flush()
                self._list(child, depth, tag == "ol")
                buf = self.buf
                continue
            if tag == "math":
                if child.attributes.get("display") == "block" or not buf or not "".join(buf).strip():
                    self.flush()
                    tex = _tex(child)
                    if tex:
                        self.blocks.append(("formula", tex, 0, "", None, 0))
                else:
                    buf.append(_tex(child) or "")
                continue
            if tag == "br":
                buf.append("\n")
                continue
            if tag == "hr":
                self.flush()
                continue
            if tag in _BLOCKS or tag in _CONTAINERS:
                if tag == "div" and "math" in (child.attributes.get("class") or ""):
                    self.flush()
                    text = (child.text(deep=True) or "").strip()
                    if text:
                        self.blocks.append(("formula", text, 0, "", None, 0))
                    continue
                if tag in _BLOCKS:
                    self.flush()
                if depth < 200:
                    self.walk(child, depth + 1)
                else:  # pragma: no cover - pathological nesting
                    buf.append(child.text(deep=True) or "")
                buf = self.buf
                if tag in _BLOCKS:
                    self.flush()
                continue
            # Inline element: its text stays in place in the running paragraph.
            buf.append(child.text(deep=True) or "")

    def _pre(self, node: Any) -> None:
        code = node.text(deep=True) or ""
        code = code.strip("\n").rstrip()
        if not code.strip():
            return
        fence = "````" if "```" in code else "```"
        self.blocks.append(("code", f"{fence}\n{code}\n{fence}", 0, "", None, 0))

    def _list(self, node: Any, depth: int, ordered: bool) -> None:
        number = 0
        indent = "  " * min(depth, 8) if depth else ""
        for child in node.iter(include_text=False):
            if child.tag != "li":
                if child.tag in ("ul", "ol"):
                    self._list(child, depth + 1, child.tag == "ol")
                elif child.tag not in _SKIP and child.tag[0] not in "-_!":
                    # Invalid but common: <ul><a><li>...</li></a></ul>. Keep the content.
                    self.flush()
                    self.walk(child, depth + 1)
                    self.flush()
                continue
            number += 1
            self.flush()
            self.prefix = indent + (f"{number}. " if ordered else "- ")
            self.walk(child, depth + 1)
            self.flush()
            self.prefix = ""

    def _table(self, node: Any, depth: int) -> None:
        rows: list[tuple[str, int]] = []  # (row text, rowspan reach)
        caption = ""
        for part in node.iter(include_text=False):
            tag = part.tag
            if tag == "caption":
                caption = _collapse(part.text(deep=True))
            elif tag == "tr":
                rows.append(_row(part))
            elif tag in ("thead", "tbody", "tfoot"):
                for tr in part.iter(include_text=False):
                    if tr.tag == "tr":
                        rows.append(_row(tr))
        if caption:
            self.blocks.append(("text", caption, 0, "", None, 0))
        rows = [r for r in rows if r[0]]
        if not rows:
            return
        # Rows bound by rowspan stay together in one part; the first part is the (repeatable) header.
        groups: list[list[str]] = []
        reach = -1
        for k, (row_text, span) in enumerate(rows):
            if groups and k <= reach:
                groups[-1].append(row_text)
            else:
                groups.append([row_text])
            reach = max(reach, k + span - 1)
        header = "\n".join(groups[0])
        if len(groups) == 1:
            parts = [header]
            head_parts = 1
        else:
            ncols = groups[0][0].count(" | ") + 1
            delim = "|" + " --- |" * ncols
            parts = [header, delim, *("\n".join(g) for g in groups[1:])]
            head_parts = 2
        self.blocks.append(("table", "\n".join(parts), 0, "", parts, head_parts))


def _row(tr: Any) -> tuple[str, int]:
    cells: list[str] = []
    span = 1
    for cell in tr.iter(include_text=False):
        if cell.tag != "td" and cell.tag != "th":
            continue
        cells.append(_collapse(cell.text(deep=True)).replace("|", "\\|"))
        rs = cell.attributes.get("rowspan")
        if rs:
            try:
                span = max(span, min(int(rs), 1000))
            except ValueError:
                pass
    if not cells or not any(cells):
        return "", 1
    return "| " + " | ".join(cells) + " |", span


def _tex(node: Any) -> str:
    ann = node.css_first('annotation[encoding="application/x-tex"]')
    if ann is not None:
        return str(ann.text(deep=True) or "").strip()
    alt = node.attributes.get("alttext")
    if alt:
        return str(alt).strip()
    return _collapse(node.text(deep=True))


def html_atoms(text: str, state: HeadingState | None = None, page: int | None = None) -> list[Atom]:
    """Cut HTML into atoms, tracking the heading path in ``state``.

    Args:
        text: an HTML document or fragment.
        state: heading stack to continue from; updated in place.
        page: page number stamped on every atom.

    Returns:
        The atoms (joined by blank lines, table rows by newlines); the last one has an empty separator.
    """
    from selectolax.lexbor import LexborHTMLParser

    if state is None:
        state = HeadingState()
    tree = LexborHTMLParser(text)
    root = tree.body if tree.body is not None else tree.root
    walker = _Walker()
    if root is not None:
        walker.walk(root)
        walker.flush()
    atoms: list[Atom] = []
    path = state.path
    for kind, body, level, title, parts, head_parts in walker.blocks:
        if kind == "heading":
            path = state.push(level, title)
        atom = Atom(body, "\n\n", kind, path, page, level)
        if level and title:
            atom.titled = True
        if parts is not None:
            atom.parts = parts
            atom.head_parts = head_parts
        atoms.append(atom)
    if atoms:
        atoms[-1].sep = ""
    return atoms


_TR = re.compile(r"<tr[\s>]", re.I)
_ROWSPAN = re.compile(r"rowspan\s*=\s*[\"']?(\d+)", re.I)
_TABLE_OPEN = re.compile(r"<table[\s>]", re.I)


def html_table_parts(src: str) -> tuple[list[str], list[str], int, str | None]:
    """Split raw HTML table source (as found in markdown) into parts at ``<tr`` tags, keeping rowspan groups.

    Returns:
        ``(parts, seps, head_parts, tail)``: slices of ``src`` (stripped), the whitespace after each, how many leading
        parts form the repeatable header (the table opener and first row), and the closing text to append when a
        chunk ends inside the table. ``parts`` is empty when ``src`` holds more than one table or no rows.
    """
    if len(_TABLE_OPEN.findall(src)) != 1:
        return [], [], 0, None
    starts = []
    for m in _TR.finditer(src):
        k = m.start()
        # Start a row at its line start when only indentation precedes it, so joins stay at line boundaries.
        b = k
        while b > 0 and src[b - 1] in " \t":
            b -= 1
        starts.append(b if b == 0 or src[b - 1] == "\n" else k)
    if len(starts) < 2:
        return [], [], 0, None
    bounds = [0, *starts[1:], len(src)]
    raw = [src[bounds[k] : bounds[k + 1]] for k in range(len(bounds) - 1)]
    # Group rows tied by rowspan.
    merged: list[str] = []
    reach = 0
    for k, piece in enumerate(raw):
        spans = [int(x) for x in _ROWSPAN.findall(piece) if x.isdigit()]
        if merged and k <= reach:
            merged[-1] += piece
        else:
            merged.append(piece)
        if spans:
            reach = max(reach, k + min(max(spans), 1000) - 1)
    parts = [p.rstrip() for p in merged]
    seps = [m[len(p) :] for m, p in zip(merged, parts, strict=False)]
    low = src.lower()
    tail = "</table>" if "</table>" in low else None
    head_parts = 1 if len(parts) > 1 and not _ROWSPAN.search(parts[0][parts[0].lower().rfind("<tr") :]) else 0
    return parts, seps, head_parts, tail


def _line_start(src: str, k: int) -> int:
    b = k
    while b > 0 and src[b - 1] in " \t":
        b -= 1
    return b if b == 0 or src[b - 1] == "\n" else k


def html_table_segments(src: str) -> list[tuple[str, str]]:
    """Cut raw HTML holding several tables at each ``<table`` (moved back to its line start when only indentation
    precedes it). Returns ``(text, whitespace after it)`` pairs; one pair when there is at most one table."""
    starts = [_line_start(src, m.start()) for m in _TABLE_OPEN.finditer(src)]
    if len(starts) <= 1:
        return [(src, "")]
    bounds = [0, *[k for k in starts if k > 0], len(src)]
    out: list[tuple[str, str]] = []
    for k in range(len(bounds) - 1):
        piece = src[bounds[k] : bounds[k + 1]]
        text = piece.rstrip()
        if text:
            out.append((text, piece[len(text) :]))
        elif out:
            out[-1] = (out[-1][0], out[-1][1] + piece)
    return out
