"""StructuredChunker: table-driven unit tests and fixture tests on real parser output.

Fixtures live in ``tests/fixtures/chunking/`` (sources and licences in its README): each input has an
``.expected.json`` beside it with the chunks' token counts, kinds, breadcrumbs, page spans and first lines. After an
intended change of behaviour, regenerate them with ``UPDATE_CHUNK_FIXTURES=1 pytest tests/test_chunking.py`` and
review the diff.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from aisearch_ingest.chunking import Chunk, StructuredChunker, get_encoding
from aisearch_ingest.results import Page, ParseResult

FIXTURES = Path(__file__).parent / "fixtures" / "chunking"
ENC = get_encoding()


def count(text: str) -> int:
    return len(ENC.encode_ordinary(text))


def check_invariants(chunks: list[Chunk], max_tokens: int) -> None:
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.count == len(chunks)
        assert c.tokens == count(c.text), c.text[:200]
        assert c.tokens <= max_tokens
        assert c.kind in ("text", "table", "code", "formula")
        assert c.text == c.text.strip("\n")


# --------------------------------------------------------------------------------------------------------------------
# Markdown structure


def test_headings_give_the_full_breadcrumb() -> None:
    md = "# Guide\n\nIntro text.\n\n## Install\n\n### Linux\n\nRun it.\n\n## Use\n\nMore text.\n"
    chunks = StructuredChunker(max_tokens=512, min_tokens=0).chunk_text(md)
    assert [c.headings for c in chunks] == [("Guide",), ("Guide", "Install", "Linux"), ("Guide", "Use")]
    assert [c.breadcrumb for c in chunks] == ["Guide", "Guide > Install > Linux", "Guide > Use"]
    assert chunks[1].text == "## Install\n\n### Linux\n\nRun it."


def test_small_sections_merge_instead_of_fragmenting() -> None:
    md = "# A\n\nshort.\n\n# B\n\nalso short.\n\n# C\n\n" + "Long sentence number one. " * 20 + "\n"
    chunks = StructuredChunker(max_tokens=512).chunk_text(md)
    assert len(chunks) == 1  # the first two sections are under min_tokens
    chunks = StructuredChunker(max_tokens=512, min_tokens=0).chunk_text(md)
    assert len(chunks) == 3


def test_setext_headings_and_inline_markup_in_titles() -> None:
    md = "Title with `code`\n=================\n\nText.\n\nSub [link](http://x) **bold**\n---\n\nMore.\n"
    chunks = StructuredChunker(max_tokens=512, min_tokens=0).chunk_text(md)
    assert chunks[-1].headings == ("Title with code", "Sub link bold")


def test_oversized_table_repeats_its_header_and_keeps_rows_whole() -> None:
    rows = "".join(f"| 行{i} | 值 {i} 的说明，含有中文 | `x{i}` |\n" for i in range(60))
    md = "## 表格\n\n| 名称 | 说明 | 代码 |\n|:---|---|--:|\n" + rows
    chunks = StructuredChunker(max_tokens=120).chunk_text(md)
    check_invariants(chunks, 120)
    assert len(chunks) > 3
    for c in chunks:
        assert c.kind == "table"
        assert c.headings == ("表格",)
        lines = c.text.split("\n")
        start = 2 if c.index == 0 else 0
        assert lines[start : start + 2] == ["| 名称 | 说明 | 代码 |", "|:---|---|--:|"]
        for line in lines[start + 2 :]:
            assert line in rows.split("\n")
    body = [ln for c in chunks for ln in c.text.split("\n")[(4 if c.index == 0 else 2) :]]
    assert body == rows.rstrip("\n").split("\n")


def test_oversized_code_block_reopens_the_fence_and_keeps_indentation() -> None:
    code = "".join(f"    if x{i}:\n        return compute({i})  # 注释\n" for i in range(40))
    md = "```python\n" + code + "```\n"
    chunks = StructuredChunker(max_tokens=100).chunk_text(md)
    check_invariants(chunks, 100)
    assert len(chunks) > 3
    for c in chunks:
        assert c.kind == "code"
        assert c.text.startswith("```python\n")
        assert c.text.endswith("\n```")
    inner = "".join(c.text[len("```python\n") : -len("```")] for c in chunks)
    assert inner == code


def test_a_fitting_block_is_never_cut_even_at_exactly_the_budget() -> None:
    block = "```\n" + "\n".join(f"line {i} of code" for i in range(30)) + "\n```"
    exact = count(block)
    md = "Some text before.\n\n" + block + "\n\nSome text after.\n"
    chunks = StructuredChunker(max_tokens=exact).chunk_text(md)
    assert any(c.text == block for c in chunks)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("include_headings", [False, True])
def test_a_paragraph_underlined_as_a_heading_is_cut_to_the_budget(include_headings: bool) -> None:
    # "---" under a paragraph makes the whole paragraph a setext heading title: 1,800 tokens of heading.
    para = " ".join(f"Sentence number {i} of a long paragraph." for i in range(200))
    md = "# Top\n\n" + para + "\n---\n\nBody text under it.\n\n```\n" + "\n".join(f"x = {i}" for i in range(400))
    chunker = StructuredChunker(max_tokens=512, include_headings=include_headings)
    chunks = chunker.chunk_text(md + "\n```\n")
    assert all(c.tokens <= 512 and c.tokens == chunker.count_tokens(c.text) for c in chunks)
    assert "".join(c.text for c in chunks).count("Sentence number") == 200
    assert all(len(c.headings) == 2 for c in chunks[1:])  # the long title stays in the metadata, not the text
    assert not any(c.text.startswith("Top > Sentence") for c in chunks)


@pytest.mark.timeout(60)
def test_a_breadcrumb_larger_than_the_budget_still_terminates_within_budget() -> None:
    rows = "\n".join(f"<tr><td>row {i} " + "word " * 5 + "</td></tr>" for i in range(30))
    md = "# " + "configuration " * 10 + "\n\n## " + "tokenizer " * 10 + "\n\n<table>" + rows + "</table>\n"
    chunker = StructuredChunker(max_tokens=16, include_headings=True)
    chunks = chunker.chunk_text(md)
    assert chunks and all(c.tokens <= 16 and c.tokens == chunker.count_tokens(c.text) for c in chunks)
    text = "".join(c.text for c in chunks)
    assert all(re.search(rf"row {i}\b", text) for i in range(30))


def test_formula_and_list_items_stay_whole() -> None:
    formula = "$$\n\\sum_{i=1}^{n} x_i^2 = \\frac{a}{b}\n$$"
    items = [f"- item {i}: " + "word " * 12 + f"end{i}" for i in range(12)]
    md = "Intro paragraph.\n\n" + formula + "\n\n" + "\n".join(items) + "\n"
    chunks = StructuredChunker(max_tokens=60).chunk_text(md)
    check_invariants(chunks, 60)
    assert any(formula in c.text for c in chunks)
    for item in items:
        assert any(item in c.text.split("\n") for c in chunks)


def test_oversized_paragraph_splits_between_sentences_cjk_and_latin() -> None:
    zh = "".join(f"这是第{i}个句子，用来测试中文的分句。" for i in range(40))
    en = " ".join(f"This is sentence number {i} of the test." for i in range(40))
    for text in (zh, en):
        chunks = StructuredChunker(max_tokens=64).chunk_text(text, "plain")
        check_invariants(chunks, 64)
        assert len(chunks) > 2
        for c in chunks:
            assert c.text[-1] in "。.", c.text
        joined = ("" if text is zh else " ").join(c.text for c in chunks)
        assert joined == text


def test_a_huge_word_is_cut_at_token_boundaries() -> None:
    word = "abcdefghij" * 300
    chunks = StructuredChunker(max_tokens=50).chunk_text(word, "plain")
    check_invariants(chunks, 50)
    assert "".join(c.text for c in chunks) == word


def test_source_text_is_preserved_exactly() -> None:
    md = (
        "# T\n\n- a list item with `inline code` in place\n    continued with indentation\n\n"
        "    indented code block\n      more\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    )
    chunks = StructuredChunker(max_tokens=512).chunk_text(md)
    assert len(chunks) == 1
    assert chunks[0].text == md.rstrip("\n")


def test_html_table_inside_markdown_is_split_between_rows() -> None:
    rows = "".join(
        f"  <tr>\n    <td><code>OPT_{i}</code></td>\n    <td>Description {i}.</td>\n  </tr>\n" for i in range(40)
    )
    md = (
        "Constants:\n\n<table>\n  <tr>\n    <th>Constant</th>\n    <th>Description</th>\n  </tr>\n"
        + rows
        + "</table>\n"
    )
    chunks = StructuredChunker(max_tokens=150).chunk_text(md)
    check_invariants(chunks, 150)
    assert len(chunks) > 2
    for c in chunks[1:]:
        assert c.text.startswith("<table>\n  <tr>\n    <th>Constant</th>")
        assert c.text.endswith("</table>")
        assert c.text.count("<tr>") == c.text.count("</tr>")


def test_overlap_repeats_whole_blocks() -> None:
    md = "\n\n".join(f"Paragraph {i} has a few words in it." for i in range(30)) + "\n"
    chunks = StructuredChunker(max_tokens=60, overlap_tokens=15).chunk_text(md)
    check_invariants(chunks, 60)
    for prev, nxt in itertools.pairwise(chunks):
        first = nxt.text.split("\n\n")[0]
        assert first in prev.text


def test_include_headings_prefixes_the_breadcrumb_and_counts_it() -> None:
    md = "# Guide\n\n## Install\n\n" + "Install it like this. " * 60 + "\n"
    chunks = StructuredChunker(max_tokens=64, include_headings=True).chunk_text(md)
    check_invariants(chunks, 64)
    assert len(chunks) > 2
    # The first chunk opens with the top-level heading itself: nothing to add in front of it.
    assert chunks[0].text.startswith("# Guide\n\n## Install")
    for c in chunks[1:]:
        assert c.text.startswith("Guide > Install\n\nInstall it like this.")
    assert all(c.headings == ("Guide", "Install") for c in chunks)


def test_include_headings_does_not_repeat_the_heading_the_chunk_starts_with() -> None:
    md = (
        "# Financial Performance\n\n"
        + "The year in review, in numbers and words. " * 5
        + "\n\n#### Quarterly revenue 2024\n\n| Quarter | Revenue |\n|---|---|\n"
        + "".join(f"| Q{k % 4 + 1} {k} | {k * 1000} |\n" for k in range(40))
    )
    plain = StructuredChunker(max_tokens=120).chunk_text(md)
    chunks = StructuredChunker(max_tokens=120, include_headings=True).chunk_text(md)
    check_invariants(chunks, 120)
    by_start = {c.text.split("\n", 1)[0]: c for c in chunks}
    quarterly = next(c for c in chunks if "#### Quarterly revenue 2024" in c.text)
    assert quarterly.headings == ("Financial Performance", "Quarterly revenue 2024")  # the metadata keeps it all
    assert quarterly.text.startswith("Financial Performance\n\n#### Quarterly revenue 2024\n\n| Quarter |")
    assert quarterly.tokens == count(quarterly.text)
    # Continuations of the table carry the full breadcrumb (they do not start with the heading).
    rest = chunks[chunks.index(quarterly) + 1 :]
    assert rest and all(
        c.text.startswith("Financial Performance > Quarterly revenue 2024\n\n| Quarter |") for c in rest
    )
    assert "# Financial Performance" in by_start  # a top-level heading at the start: no prefix at all
    assert by_start["# Financial Performance"].headings == ("Financial Performance",)
    # Without the option the same text is there, unprefixed.
    assert "".join(c.text for c in plain).count("Quarterly revenue 2024") == 1
    md = "# Report\n\n" + "Words about the year. " * 20 + "\n\n## Outlook\n\n" + "More of the same. " * 20 + "\n"
    chunks = StructuredChunker(max_tokens=120, include_headings=True).chunk_text(md)
    check_invariants(chunks, 120)
    assert [c.text.split("\n\n", 1)[0] for c in chunks] == ["# Report", "Report"]
    assert chunks[1].text.startswith("Report\n\n## Outlook\n\nMore of the same.")
    assert chunks[1].headings == ("Report", "Outlook")


def test_custom_encoding_falls_back_to_exact_recounting() -> None:
    md = "# T\n\n" + "\n\n".join("word " * 30 for _ in range(10))
    counter_calls: list[str] = []

    def length(text: str) -> int:
        counter_calls.append(text)
        return len(text.split())

    chunks = StructuredChunker(max_tokens=50, length_function=length).chunk_text(md)
    assert chunks and all(len(c.text.split()) == c.tokens <= 50 for c in chunks)
    assert counter_calls


def test_markdown_scanner_agrees_with_markdown_it_on_real_documents() -> None:
    md_it = MarkdownIt("commonmark").enable("table")
    for name in ("kicad_zh_introduction.md", "nodejs_crypto_constants.md", "statsmodels_markov_regression.md"):
        text = (FIXTURES / name).read_text(encoding="utf-8")
        ref: dict[str, set[int]] = {"heading": set(), "code": set(), "table": set()}
        for tok in md_it.parse(text):
            if tok.map is None or tok.level != 0:
                continue
            if tok.type == "heading_open":
                ref["heading"].add(tok.map[0])
            elif tok.type in ("fence", "code_block"):
                ref["code"].add(tok.map[0])
            elif tok.type == "table_open":
                ref["table"].add(tok.map[0])
        ours: dict[str, set[int]] = {"heading": set(), "code": set(), "table": set()}
        pos = 0
        for atom in StructuredChunker().atoms(text, "markdown"):
            start = text.index(atom.text, pos)
            pos = start + len(atom.text)
            kind = "heading" if atom.level else atom.kind  # a heading may carry the short block it introduces
            if kind in ours and not atom.text.startswith("<"):
                ours[kind].add(text.count("\n", 0, start))
        assert ours == ref, name


# --------------------------------------------------------------------------------------------------------------------
# HTML, LaTeX, plain, JSON


def test_html_structure() -> None:
    html = (
        "<html><head><title>x</title><script>var a=1;</script></head><body>"
        "<h1>指南</h1><p>使用 <code>pip install x</code> 安装。</p>"
        "<h2>表格</h2><table><tr><th>A</th><th>B</th></tr><tr><td rowspan='2'>1</td><td>2</td></tr>"
        "<tr><td colspan='1'>3</td></tr></table>"
        "<pre>  def f():\n      return 1</pre><ul><li>one</li><li>two <b>bold</b></li></ul>"
        "<math display='block'><semantics><mi>x</mi><annotation encoding='application/x-tex'>x^2</annotation>"
        "</semantics></math></body></html>"
    )
    chunks = StructuredChunker(max_tokens=512, min_tokens=0).chunk_text(html, "html")
    assert [c.headings for c in chunks] == [("指南",), ("指南", "表格")]
    assert chunks[0].text == "# 指南\n\n使用 pip install x 安装。"
    assert chunks[1].text == (
        "## 表格\n\n| A | B |\n| --- | --- |\n| 1 | 2 |\n| 3 |\n\n```\n  def f():\n      return 1\n```\n\n"
        "- one\n\n- two bold\n\nx^2"
    )
    assert "var a" not in chunks[1].text


def test_latex_document_parsing_output() -> None:
    rows = "".join(f"{i} & 值{i} & {i * i} \\\\\n" for i in range(50))
    tex = (
        "```latex\n\\documentclass{article}\n\\begin{document}\n\\section{Results}\n\nSome text here.\n\n"
        "\\begin{tabular}{|c|c|c|}\n\\hline\nn & name & square \\\\\n\\hline\n" + rows + "\\end{tabular}\n\n"
        "\\begin{equation}\nE = mc^2\n\\end{equation}\n\\subsection{More}\n\nEnd.\n\\end{document}\n```"
    )
    chunks = StructuredChunker(max_tokens=120).chunk_text(tex, "latex")
    check_invariants(chunks, 120)
    tables = [c for c in chunks if c.kind == "table"]
    assert len(tables) > 2
    for c in tables:
        assert c.headings == ("Results",)
        assert "\\begin{tabular}{|c|c|c|}\n\\hline\nn & name & square \\\\" in c.text
    for c in tables[:-1]:
        assert c.text.endswith("\\end{tabular}")
    assert any("\\begin{equation}\nE = mc^2\n\\end{equation}" in c.text for c in chunks)
    assert chunks[-1].headings == ("Results", "More")
    assert "```" not in "".join(c.text for c in chunks)


def test_plain_and_json() -> None:
    chunks = StructuredChunker(max_tokens=512).chunk_text('{"a": [1, 2, 3], "b": "中文"}', "json")
    assert len(chunks) == 1 and chunks[0].kind == "code"
    chunks = StructuredChunker(max_tokens=512).chunk_text("para one\n\n\npara two\n", "text")
    assert chunks[0].text == "para one\n\n\npara two"
    with pytest.raises(ValueError, match="content_type"):
        StructuredChunker().chunk_text("x", "pdf")
    with pytest.raises(ValueError):
        StructuredChunker(max_tokens=0)
    with pytest.raises(ValueError):
        StructuredChunker(max_tokens=10, overlap_tokens=10)


# --------------------------------------------------------------------------------------------------------------------
# Pages and ParseResult


def test_pages_carry_headings_and_chunks_span_pages() -> None:
    pages = [(1, "# Report\n\n## Revenue\n\nFirst page text."), (2, "Second page text.\n\n## Costs\n\nThird.")]
    chunks = StructuredChunker(max_tokens=512, min_tokens=0).chunk_pages(pages)
    assert [(c.headings, c.page_start, c.page_end) for c in chunks] == [
        (("Report", "Revenue"), 1, 2),
        (("Report", "Costs"), 2, 2),
    ]
    assert chunks[0].text == "# Report\n\n## Revenue\n\nFirst page text.\n\nSecond page text."


def _result(content: str, pages: list[Page], page_num: int, content_type: str = "markdown") -> ParseResult:
    return ParseResult(
        source="x.pdf",
        file_name="x.pdf",
        file_type="pdf",
        service="document-analyze",
        service_id="ops-document-analyze-001",
        content=content,
        content_type=content_type,
        page_num=page_num,
        pages=pages,
    )


def test_chunk_result() -> None:
    chunker = StructuredChunker(max_tokens=512)
    paged = _result("a\n\nb", [Page(1, "# A\n\na"), Page(2, "b")], 2)
    assert [(c.page_start, c.page_end) for c in chunker.chunk_result(paged)] == [(1, 2)]
    image = _result("text from an image", [], 1, "plain")
    assert [(c.page_start, c.page_end) for c in chunker.chunk_result(image)] == [(1, 1)]
    unpaged = _result("<p>x</p>", [], 3, "html")
    assert [(c.page_start, c.page_end, c.text) for c in chunker.chunk_result(unpaged)] == [(None, None, "x")]


# --------------------------------------------------------------------------------------------------------------------
# Fixtures: real parser output


def _fixture_inputs() -> list[tuple[str, str]]:
    return [
        ("annual_report.pages.json", "markdown"),  # the emulator's document-analyze markdown of notebooks/data
        ("product_faq.html", "html"),  # the emulator's document-analyze HTML of a .docx
        ("kicad_zh_introduction.html", "html"),  # Chinese HTML manual
        ("kicad_zh_introduction.md", "markdown"),  # the same through pandoc (Chinese markdown)
        ("nodejs_crypto_constants.md", "markdown"),  # markdown with raw HTML tables
        ("statsmodels_markov_regression.md", "markdown"),  # notebook markdown: $$ formulas, code, HTML tables
        ("qwen_document_parsing.tex", "latex"),  # Qwen-OCR document_parsing sample answer
    ]


def _chunks_for(name: str, content_type: str) -> list[Chunk]:
    chunker = StructuredChunker(max_tokens=256)
    raw = (FIXTURES / name).read_text(encoding="utf-8")
    if name.endswith(".pages.json"):
        data = json.loads(raw)
        return chunker.chunk_pages([(p["number"], p["content"]) for p in data["pages"]], data["content_type"])
    return chunker.chunk_text(raw, content_type)


@pytest.mark.parametrize(("name", "content_type"), _fixture_inputs())
def test_fixture(name: str, content_type: str) -> None:
    chunks = _chunks_for(name, content_type)
    check_invariants(chunks, 256)
    got = [
        {
            "tokens": c.tokens,
            "kind": c.kind,
            "headings": list(c.headings),
            "pages": [c.page_start, c.page_end],
            "first_line": c.text.split("\n", 1)[0][:80],
        }
        for c in chunks
    ]
    expected_path = FIXTURES / (name + ".expected.json")
    if os.environ.get("UPDATE_CHUNK_FIXTURES"):
        expected_path.write_text(json.dumps(got, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    expected = json.loads(expected_path.read_text(encoding="utf-8"))
    assert got == expected


def test_chinese_fixture_has_chinese_breadcrumbs_and_tables() -> None:
    chunks = _chunks_for("kicad_zh_introduction.html", "html")
    assert any(re.search(r"[\u4e00-\u9fff]", c.breadcrumb) for c in chunks)
    assert any(c.kind == "table" for c in chunks)
    md_chunks = _chunks_for("kicad_zh_introduction.md", "markdown")
    assert {c.breadcrumb for c in chunks} & {c.breadcrumb for c in md_chunks}


def test_pdf_fixture_has_pages() -> None:
    chunks = _chunks_for("annual_report.pages.json", "markdown")
    assert chunks[0].page_start == 1
    assert chunks[-1].page_end == 3
    assert all(c.headings for c in chunks)


def test_odd_separators_are_counted_exactly() -> None:
    # \x1c-\x1f are whitespace to Python but not to tiktoken's regex: such documents are re-counted.
    md = "# A\x1c\n\n" + "text\x1f more text here.\x1e\n\n" * 30
    chunks = StructuredChunker(max_tokens=20).chunk_text(md)
    check_invariants(chunks, 20)


def test_without_numpy_the_counts_are_the_same() -> None:
    # numpy only speeds counting up (one encode per document); without it every block is encoded on its own.
    fast = StructuredChunker(max_tokens=200)
    slow = StructuredChunker(max_tokens=200)
    slow._counter._lengths = False  # what TokenCounter records when numpy cannot be imported
    for name in ("nodejs_crypto_constants.md", "kicad_zh_introduction.md", "statsmodels_markov_regression.md"):
        text = (FIXTURES / name).read_text(encoding="utf-8")
        assert slow._counter._token_lengths() is None
        expected = [(c.text, c.tokens) for c in fast.chunk_text(text)]
        assert [(c.text, c.tokens) for c in slow.chunk_text(text)] == expected


# --- fences nested in containers (list items, blockquotes) that are themselves too big


def _nested_fence_docs() -> list[str]:
    prose = "This step explains the configuration in much more detail than anyone needs. " * 30
    code = [f"value_{i} = configure(option={i}, retries={i % 3})  # step {i}" for i in range(8)]

    def fence(indent: str, marker: str = "```") -> str:
        return "\n".join([f"{indent}{marker}python", *(indent + line for line in code), f"{indent}{marker}"])

    return [
        # a fence in a bullet item whose item exceeds the budget
        f"# Setup\n\n- {prose}\n\n{fence('  ')}\n\n  {prose}\n- Short item.\n",
        # nested lists: the fence belongs to the inner item
        f"# Nested\n\n1. Outer item.\n   - {prose}\n\n{fence('     ')}\n\n     {prose}\n2. Next.\n",
        # a blockquote holding prose and a fence
        "# Quote\n\n" + "\n".join("> " + line for line in f"{prose}\n\n{fence('')}\n\n{prose}".split("\n")) + "\n",
        # tildes, and a fence opened on the bullet line itself
        f"# Tildes\n\n- {prose}\n\n{fence('  ', '~~~')}\n\n  {prose}\n",
        "# Bullet line\n\n- ```python\n" + "\n".join("  " + line for line in code) + f"\n  ```\n\n  {prose}\n",
    ]


@pytest.mark.parametrize("doc", _nested_fence_docs(), ids=["bullet", "nested", "blockquote", "tildes", "opener"])
def test_a_fitting_fence_inside_an_oversized_container_stays_whole(doc: str) -> None:
    budget = 256
    chunker = StructuredChunker(max_tokens=budget)
    enc = get_encoding()
    fences = [t.content for t in MarkdownIt("commonmark").parse(doc) if t.type == "fence"]
    assert fences, "the document must hold a fence for the test to mean anything"
    chunks = chunker.chunk_text(doc, "markdown")
    assert len(chunks) >= 3  # the container really was too big and got split
    assert all(c.tokens <= budget for c in chunks)
    for content in fences:
        assert len(enc.encode(content)) < budget
        last_line = content.rstrip("\n").split("\n")[-1].strip()
        first_line = content.split("\n")[0].strip()
        holders = [c for c in chunks if first_line in c.text]
        assert len(holders) == 1, [c.text[:80] for c in chunks]
        assert last_line in holders[0].text  # first and last line of the fence in one chunk: not cut
        assert holders[0].kind == "code" or holders[0].text.count("```") + holders[0].text.count("~~~") >= 2
