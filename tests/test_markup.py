"""HTML -> markdown (``aisearch_ingest.markup``) and its use in every route's document and page modes.

Fixtures in ``tests/fixtures/markup/``: each ``NAME.html`` beside the ``NAME.md`` it must give (``odd_tables``:
captions, colspan, rowspan, ragged rows, two bodies, nested and one-column tables, pipes; ``vendor_style``: the
shapes document-analyze answers for PPTX slides, TXT paragraphs, images, scripts, code, MathML). The two notebook
samples are parsed by the emulator over a real socket and compared with ``NAME.docx.md`` / ``NAME.html.md``. After an
intended change, regenerate with ``UPDATE_MARKUP_FIXTURES=1 pytest tests/test_markup.py`` and review the diff.
The markdown is also checked the other way round: rendered by markdown-it-py (GFM tables), every table has the
cells of the HTML table it came from.
"""

from __future__ import annotations

import doctest
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from selectolax.lexbor import LexborHTMLParser

from aisearch_ingest import DocumentAnalyzer, PollPolicy, markup
from aisearch_ingest.cli import main
from aisearch_ingest.emulator import Emulator
from aisearch_ingest.langchain import DocumentAnalyzeLoader, DocumentAnalyzeParser
from aisearch_ingest.llama_index import DocumentAnalyzeReader
from aisearch_ingest.markup import html_to_markdown, markdown_result
from aisearch_ingest.testing import EMULATOR_API_KEY

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "notebooks" / "data"
FIXTURES = Path(__file__).parent / "fixtures" / "markup"
UPDATE = os.environ.get("UPDATE_MARKUP_FIXTURES") == "1"


@pytest.fixture(scope="module")
def client(emu: Emulator) -> Iterator[DocumentAnalyzer]:
    poll = PollPolicy(min_interval=0.05, max_interval=0.1)
    with DocumentAnalyzer(endpoint=emu.url, api_key=EMULATOR_API_KEY, poll=poll) as client:
        yield client


def _compare(markdown: str, expected: Path) -> None:
    if UPDATE:
        expected.write_text(markdown + "\n", encoding="utf-8")
    assert markdown + "\n" == expected.read_text(encoding="utf-8")


def _md_tables(markdown: str) -> list[list[list[str]]]:
    """Every table markdown-it-py (GFM) finds in ``markdown``: rows of cell texts."""
    tables: list[list[list[str]]] = []
    in_cell = False
    for token in MarkdownIt("commonmark").enable("table").parse(markdown):
        if token.type == "table_open":
            tables.append([])
        elif token.type == "tr_open":
            tables[-1].append([])
        elif token.type in ("th_open", "td_open"):
            in_cell = True
            tables[-1][-1].append("")
        elif token.type in ("th_close", "td_close"):
            in_cell = False
        elif token.type == "inline" and in_cell:
            text = "".join(child.content for child in token.children or [] if child.type in ("text", "code_inline"))
            tables[-1][-1][-1] = " ".join(text.split())
    return tables


# --- fixtures ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["odd_tables", "vendor_style"])
def test_fixture_html_gives_its_markdown(name: str) -> None:
    html = (FIXTURES / f"{name}.html").read_text(encoding="utf-8")
    _compare(html_to_markdown(html), FIXTURES / f"{name}.md")


@pytest.mark.parametrize("name", ["product_faq.docx", "overview.html"])
def test_the_emulators_html_of_the_notebook_samples(client: DocumentAnalyzer, name: str) -> None:
    result = client.parse(DATA / name)
    assert result.content_type == "html" and "<h1>" in result.content
    markdown = html_to_markdown(result.content)
    _compare(markdown, FIXTURES / f"{name}.md")
    # The tables are GFM tables with the HTML's cells, header first, every row as wide as the header.
    html_rows = [
        [" ".join(cell.text(deep=True).split()) for cell in tr.css("td, th")]
        for tr in LexborHTMLParser(result.content).css("tr")
    ]
    [table] = _md_tables(markdown)
    assert table == html_rows
    assert "<" not in markdown.replace("<http", "").replace("< ", "")  # no tag is left


def test_odd_tables_render_as_rectangular_gfm_tables() -> None:
    markdown = html_to_markdown((FIXTURES / "odd_tables.html").read_text(encoding="utf-8"))
    support, pipes = _md_tables(markdown)
    assert support[0] == ["Region | site", "", "Plan"]  # colspan: the text, then an empty cell; the pipe escaped
    assert support[1] == ["Europe", "Bergen Norway", "Basic Professional"]  # <br> and paragraphs: one line
    assert support[2] == ["Europe", "Rotterdam", "EUR 9, monthly; EUR 90, yearly"]  # rowspan repeated; nested table
    assert support[3] == ["Asia", "", ""]  # a short row padded; the empty <tr> dropped
    assert support[4][0] == "Americas"  # the second <tbody> goes on the same table, with no header of its own
    assert all(len(row) == 3 for row in support)
    assert pipes == [["Name", "Value"], ["pipe", "a|b"]]
    assert "## A layout table" in markdown  # a one-column table is its content
    assert markdown.startswith("Support matrix **2026**\n\n|")  # the caption is a paragraph above its table


@pytest.mark.parametrize(
    ("html", "markdown"),
    [
        ("", ""),
        ("   \n", ""),
        ("plain words", "plain words"),
        ("<h3>Deep</h3><h6>Deeper</h6>", "### Deep\n\n###### Deeper"),
        ("<h2> </h2><p>x</p>", "x"),  # an empty heading is dropped
        ("<ul><li>a<ul><li>b</li></ul></li></ul>", "- a\n  - b"),
        ('<a href="https://x.example/p">the page</a>', "[the page](https://x.example/p)"),
        ('<img src="a.png" alt="A chart">', "![A chart](a.png)"),
        ('<img src="data:image/png;base64,AAAA" alt="logo">', "![logo]()"),  # no base64 in the text
        ('<img src="data:image/png;base64,AAAA">', ""),
        ("<html><head><title>T</title><style>p{}</style></head><body><p>b</p></body></html>", "b"),
        ("<p>a</p><script>x()</script><template><p>t</p></template><p>b</p>", "a\n\nb"),
        ("<p>a</p><p></p><div><br><br></div><p>b</p>", "a\n\nb"),
        ("<pre><code>x\n\n\n\ny</code></pre>", "```\nx\n\n\n\ny\n```"),  # code keeps its blank lines
        ('<pre><code class="language-python">x = 1</code></pre>', "```python\nx = 1\n```"),
        ("<p>a_b_c and 2*3</p>", "a_b_c and 2\\*3"),
        ("<p>one<p>two", "one\n\ntwo"),  # unclosed tags, as a browser reads them
        ('<math display="block" alttext="x^2"><mi>x</mi></math>', "$$x^2$$"),
        ("<table><tr><th>A</th></tr><tr><td>1</td></tr></table>", "A\n\n1"),  # one column: content
        ("<table></table><p>after</p>", "after"),
    ],
)
def test_html_to_markdown_cases(html: str, markdown: str) -> None:
    assert html_to_markdown(html) == markdown


def test_the_module_examples() -> None:
    outcome = doctest.testmod(markup, optionflags=doctest.ELLIPSIS)
    assert outcome.failed == 0 and outcome.attempted >= 4


def test_markdown_result_leaves_other_content_types_alone(client: DocumentAnalyzer) -> None:
    pdf = client.parse(DATA / "annual_report.pdf")
    assert pdf.content_type == "markdown"
    assert markdown_result(pdf) is pdf
    docx = client.parse(DATA / "product_faq.docx")
    converted = markdown_result(docx)
    assert converted.content_type == "markdown" and docx.content_type == "html"  # a copy
    assert [p.content for p in converted.pages] == [converted.content]
    assert converted.usage == docx.usage and converted.source_sha256 == docx.source_sha256


# --- every route -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["document", "page"])
def test_loader_parser_and_reader_give_markdown_or_keep_the_html(client: DocumentAnalyzer, mode: str) -> None:
    from langchain_community.document_loaders.generic import GenericLoader

    path = DATA / "product_faq.docx"
    expected = (FIXTURES / "product_faq.docx.md").read_text(encoding="utf-8").rstrip("\n")
    raw = client.parse(path).content
    loader = DocumentAnalyzeLoader(path, mode=mode, client=client)  # type: ignore[arg-type]
    parser = DocumentAnalyzeParser(mode=mode, client=client)  # type: ignore[arg-type]
    blobs = GenericLoader.from_filesystem(DATA, glob="product_faq.docx", parser=parser)
    reader = DocumentAnalyzeReader(mode=mode, client=client)
    routes = {
        "loader": [(d.page_content, d.metadata) for d in loader.load()],
        "parser": [(d.page_content, d.metadata) for d in blobs.load()],
        "reader": [(d.text, d.metadata) for d in reader.load_data(path)],
    }
    for route, docs in routes.items():
        [(text, meta)] = docs
        assert (text, meta["content_type"]) == (expected, "markdown"), route
    kept_loader = DocumentAnalyzeLoader(path, mode=mode, client=client, html_to_markdown=False)  # type: ignore[arg-type]
    kept_reader = DocumentAnalyzeReader(mode=mode, client=client, html_to_markdown=False)
    [lc], [li] = kept_loader.load(), kept_reader.load_data(path)
    assert (lc.page_content, lc.metadata["content_type"]) == (raw, "html")
    assert (li.text, li.metadata["content_type"]) == (raw, "html")
    # One document, other text: the id stays the file's (index() and docstores update it through the hash).
    assert lc.id == loader.load()[0].id and li.id_ == reader.load_data(path)[0].id_


def test_pdf_text_is_the_same_either_way(client: DocumentAnalyzer) -> None:
    path = DATA / "annual_report.pdf"
    for mode in ("document", "page", "chunk"):
        default = DocumentAnalyzeLoader(path, mode=mode, client=client).load()  # type: ignore[arg-type]
        kept = DocumentAnalyzeLoader(path, mode=mode, client=client, html_to_markdown=False).load()  # type: ignore[arg-type]
        assert [(d.id, d.page_content) for d in default] == [(d.id, d.page_content) for d in kept], mode


def test_reader_field_survives_serialisation() -> None:
    reader = DocumentAnalyzeReader(api_key="k", endpoint="http://127.0.0.1:9", html_to_markdown=False)
    assert DocumentAnalyzeReader.from_dict(reader.to_dict()).html_to_markdown is False
    with pytest.raises(TypeError, match="did you mean 'html_to_markdown'"):
        DocumentAnalyzeReader(api_key="k", endpoint="http://127.0.0.1:9", html_to_markdwn=False)
    with pytest.raises(TypeError, match="did you mean 'html_to_markdown'"):
        DocumentAnalyzeLoader("x", api_key="k", endpoint="http://127.0.0.1:9", html_to_markdwn=False)


@pytest.mark.parametrize("keep", [False, True])
def test_cli_document_mode_and_keep_html(
    emu: Emulator, client: DocumentAnalyzer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: bool
) -> None:
    monkeypatch.setenv("AISEARCH_ENDPOINT", emu.url)
    monkeypatch.setenv("AISEARCH_API_KEY", EMULATOR_API_KEY)
    out = tmp_path / "docs.jsonl"
    path = str(DATA / "product_faq.docx")
    argv = ["ingest", path, "--out", str(out), "--mode", "page", "--no-progress", *(["--keep-html"] if keep else [])]
    assert main(argv) == 0
    [line] = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    if keep:
        assert (line["text"], line["metadata"]["content_type"]) == (client.parse(path).content, "html")
    else:
        expected = (FIXTURES / "product_faq.docx.md").read_text(encoding="utf-8").rstrip("\n")
        assert (line["text"], line["metadata"]["content_type"]) == (expected, "markdown")
