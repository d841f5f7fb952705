"""Property tests of StructuredChunker over generated markdown and HTML (hypothesis).

For every generated document and budget:
* no chunk is over budget and every ``tokens`` is the exact tiktoken count of ``text``;
* the chunks, minus the table headers / fence openers repeated on continuation chunks and the fences closed at a
  chunk end, give back the source text in order (markdown: every non-whitespace character; HTML: every letter and
  digit of the visible text);
* a table row, code fence or ``$$`` formula that fits the budget is never cut; rows tied by ``rowspan`` stay together.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aisearch_ingest.chunking import StructuredChunker, get_encoding
from aisearch_ingest.chunking.tokens import TokenCounter

ENC = get_encoding()
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

LATIN = ["alpha", "beta", "gamma", "delta", "sensor", "water", "pump", "value", "x1", "42", "3.14", "API", "`code`"]
CJK = ["水质", "传感器", "测量", "数据", "系统", "配置", "文件", "用户", "温度", "压力"]


def count(text: str) -> int:
    return len(ENC.encode_ordinary(text))


@st.composite
def sentence(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        words = draw(st.lists(st.sampled_from(CJK), min_size=1, max_size=12))
        return "".join(words) + draw(st.sampled_from(["。", "！", "？", "；"]))
    words = draw(st.lists(st.sampled_from(LATIN), min_size=1, max_size=14))
    return " ".join(words).capitalize() + draw(st.sampled_from([".", "!", "?", ","]))


@st.composite
def paragraph(draw: st.DrawFn) -> str:
    lines = []
    for _ in range(draw(st.integers(1, 3))):
        sents = draw(st.lists(sentence(), min_size=1, max_size=draw(st.sampled_from([3, 8, 40]))))
        lines.append(" ".join(sents))
    return "\n".join(lines)


@st.composite
def cell(draw: st.DrawFn) -> str:
    return " ".join(draw(st.lists(st.sampled_from(LATIN + CJK), min_size=1, max_size=4)))


@st.composite
def md_table(draw: st.DrawFn) -> str:
    cols = draw(st.integers(1, 4))
    header = "| " + " | ".join(draw(cell()) for _ in range(cols)) + " |"
    delim = "|" + "---|" * cols
    rows = [
        "| " + " | ".join(draw(cell()) for _ in range(cols)) + " |"
        for _ in range(draw(st.sampled_from([1, 3, 12, 50])))
    ]
    return "\n".join([header, delim, *rows])


@st.composite
def md_fence(draw: st.DrawFn) -> str:
    lang = draw(st.sampled_from(["", "python", "js"]))
    lines = []
    for i in range(draw(st.sampled_from([1, 4, 20, 70]))):
        indent = " " * draw(st.sampled_from([0, 2, 4, 8]))
        lines.append(f"{indent}x{i} = compute({i}, '{draw(st.sampled_from(CJK))}')  # {draw(st.sampled_from(LATIN))}")
        if draw(st.integers(0, 9)) == 0:
            lines.append("")
    return f"```{lang}\n" + "\n".join(lines) + "\n```"


@st.composite
def md_formula(draw: st.DrawFn) -> str:
    terms = draw(st.lists(st.sampled_from(["x_i^2", "\\alpha", "\\sum_{k=1}^{n} k", "\\frac{a}{b}"]), min_size=1))
    if draw(st.booleans()):
        return "$$ " + " + ".join(terms) + " $$"
    return "$$\n" + " + \\\\\n".join(terms) + "\n$$"


@st.composite
def md_list(draw: st.DrawFn) -> str:
    items = []
    for _ in range(draw(st.integers(1, 6))):
        item = "- " + draw(sentence())
        if draw(st.booleans()):
            item += "\n  " + draw(sentence())
        items.append(item)
    return "\n".join(items)


@st.composite
def markdown_doc(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]]]:
    blocks: list[tuple[str, str]] = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["heading", "para", "para", "table", "fence", "formula", "list"]))
        if kind == "heading":
            blocks.append((kind, "#" * draw(st.integers(1, 4)) + " " + draw(cell())))
        elif kind == "para":
            blocks.append((kind, draw(paragraph())))
        elif kind == "table":
            blocks.append((kind, draw(md_table())))
        elif kind == "fence":
            blocks.append((kind, draw(md_fence())))
        elif kind == "formula":
            blocks.append((kind, draw(md_formula())))
        else:
            blocks.append((kind, draw(md_list())))
    return "\n\n".join(b for _, b in blocks) + "\n", blocks


def strip_crumb(text: str, headings: tuple[str, ...]) -> str:
    """The chunk text without its breadcrumb prefix: the full path, or -- when the text opens with a heading line --
    only the ancestors of that heading (possibly none)."""
    if not headings:
        return text
    full = " > ".join(headings) + "\n\n"
    if text.startswith(full):
        return text[len(full) :]
    for k in range(len(headings) - 1, -1, -1):
        prefix = " > ".join(headings[:k]) + "\n\n" if k else ""
        if text.startswith(prefix) and text[len(prefix) :].startswith("#"):
            return text[len(prefix) :]
    raise AssertionError(f"no breadcrumb prefix for {headings}: {text[:120]!r}")


def _strip_ws(text: str) -> str:
    return re.sub(r"\s+", "", text)


def assert_reconstructs(chunks: list[str], source: str, norm: callable = _strip_ws) -> None:  # type: ignore[valid-type]
    """Chunks in order cover the source; a chunk may start with up to 2 repeated lines and end with a fence closer."""
    src = norm(source)
    cursor = 0
    for text in chunks:
        lines = text.split("\n")
        matched = False
        for skip in range(0, min(3, len(lines))):
            body_lines = lines[skip:]
            for drop_tail in (0, 1):
                if drop_tail and (len(body_lines) < 2 or not re.fullmatch(r"\s*(`{3,}|~{3,}|\$\$)\s*", body_lines[-1])):
                    continue
                body = norm("\n".join(body_lines[: len(body_lines) - drop_tail]))
                head = norm("\n".join(lines[:skip]))
                if skip and src.find(head) < 0:
                    continue  # what is skipped must be repeated source text
                if src.startswith(body, cursor):
                    cursor += len(body)
                    matched = True
                    break
            if matched:
                break
        assert matched, (
            f"chunk does not continue the source at {cursor}: {text[:200]!r} vs {src[cursor : cursor + 80]!r}"
        )
    assert cursor == len(src), f"source not fully covered: {cursor} of {len(src)}"


@pytest.mark.parametrize("include_headings", [False, True])
@SETTINGS
@given(data=markdown_doc(), max_tokens=st.sampled_from([40, 64, 128, 512]))
def test_markdown_properties(data: tuple[str, list[tuple[str, str]]], max_tokens: int, include_headings: bool) -> None:
    doc, blocks = data
    chunker = StructuredChunker(max_tokens, include_headings=include_headings)
    chunks = chunker.chunk_text(doc, "markdown")
    for c in chunks:
        assert c.tokens == count(c.text), c.text
        assert c.tokens <= max_tokens
        assert c.count == len(chunks)
    if include_headings:
        assert_reconstructs([strip_crumb(c.text, c.headings) for c in chunks], doc)
        return
    assert_reconstructs([c.text for c in chunks], doc)
    texts = [c.text for c in chunks]
    # Fitting blocks are never cut: table rows, fences, formulas.
    for kind, block in blocks:
        if kind == "table":
            header_cost = count("\n".join(block.split("\n")[:2]) + "\n")
            for row in block.split("\n")[2:]:
                if count(row) + header_cost + 3 <= max_tokens // 2:
                    assert any(row in t.split("\n") for t in texts), row
        elif kind in ("fence", "formula") and count(block) <= max_tokens:
            assert any(block in t for t in texts), block[:80]


@st.composite
def html_doc(draw: st.DrawFn) -> tuple[str, list[list[str]]]:
    parts = ["<html><head><title>ignored</title><style>p{}</style></head><body>"]
    bound: list[list[str]] = []  # rows that rowspan ties together
    for _ in range(draw(st.integers(1, 10))):
        kind = draw(st.sampled_from(["h", "p", "p", "table", "pre", "ul", "span"]))
        if kind == "h":
            level = draw(st.integers(1, 4))
            parts.append(f"<h{level}>{draw(cell())}</h{level}>")
        elif kind == "p":
            parts.append(
                "<p>"
                + " ".join(draw(st.lists(sentence(), min_size=1, max_size=30)))
                + " <code>inline()</code> end.</p>"
            )
        elif kind == "table":
            cols = draw(st.integers(2, 4))
            rows = ["<tr>" + "".join(f"<th>{draw(cell())}</th>" for _ in range(cols)) + "</tr>"]
            n = draw(st.sampled_from([2, 6, 40]))
            k = 0
            while k < n:
                if draw(st.integers(0, 4)) == 0 and k + 1 < n:
                    a, b = f"rs{len(bound)}a {draw(cell())}", f"rs{len(bound)}b {draw(cell())}"
                    first = (
                        f'<tr><td rowspan="2">{a}</td>'
                        + "".join(f"<td>{draw(cell())}</td>" for _ in range(cols - 1))
                        + "</tr>"
                    )
                    second = "<tr>" + "".join(f'<td colspan="1">{b}</td>' for _ in range(cols - 1)) + "</tr>"
                    rows += [first, second]
                    bound.append([a, b])
                    k += 2
                else:
                    rows.append("<tr>" + "".join(f"<td>{draw(cell())}</td>" for _ in range(cols)) + "</tr>")
                    k += 1
            parts.append("<table><thead>" + rows[0] + "</thead><tbody>" + "".join(rows[1:]) + "</tbody></table>")
        elif kind == "pre":
            lines = [
                f"{' ' * draw(st.sampled_from([0, 4]))}line_{i} = {draw(st.sampled_from(LATIN))}"
                for i in range(draw(st.sampled_from([2, 30])))
            ]
            parts.append("<pre>" + "\n".join(lines) + "</pre>")
        elif kind == "ul":
            parts.append(
                "<ul>" + "".join(f"<li>{draw(sentence())}</li>" for _ in range(draw(st.integers(1, 5)))) + "</ul>"
            )
        else:
            parts.append("<div>" + draw(sentence()) + "<span> " + draw(sentence()) + "</span></div>")
    parts.append("</body></html>")
    return "".join(parts), bound


def _alnum(text: str) -> str:
    return re.sub(r"[\W_]+", "", text)


@SETTINGS
@given(data=html_doc(), max_tokens=st.sampled_from([48, 96, 512]))
def test_html_properties(data: tuple[str, list[list[str]]], max_tokens: int) -> None:
    from selectolax.lexbor import LexborHTMLParser

    doc, bound = data
    chunks = StructuredChunker(max_tokens).chunk_text(doc, "html")
    for c in chunks:
        assert c.tokens == count(c.text)
        assert c.tokens <= max_tokens
    tree = LexborHTMLParser(doc)
    assert tree.body is not None
    visible = tree.body.text(deep=True)
    assert_reconstructs([c.text for c in chunks], visible, _alnum)
    tables = [x for x in StructuredChunker(max_tokens).atoms(doc, "html") if x.parts]
    for a, b in bound:
        # The two rows tied by rowspan form one part; with the header they fit unless the cut was unavoidable.
        table = next(t for t in tables if t.parts and any(f"| {a} " in p for p in t.parts))
        assert table.parts is not None
        part = next(p for p in table.parts if f"| {a} " in p)
        assert f"| {b} |" in part
        if count("\n".join([*table.parts[: table.head_parts], part])) <= max_tokens:
            assert any(part in c.text for c in chunks), part


# ------------------------------------------------------------------------------------------------------------------
# The additivity the fast path relies on.

TEXT_ALPHABET = st.sampled_from(
    [*list("ab Z9.,;:!?-|`#$()[]{}<>'\"\t\n \n\n"), "  ", "\u3000", "\xa0", "。", "，", "中", "文", "é", "\r\n"]
)


@settings(max_examples=400, deadline=None)
@given(a=st.lists(TEXT_ALPHABET, max_size=30).map("".join), b=st.lists(TEXT_ALPHABET, max_size=30).map("".join))
def test_line_join_additivity(a: str, b: str) -> None:
    """count(A + B) == count(A) + count(B) when A ends with a newline and B's first line has a non-space."""
    a = a + "\n"
    first_line = b.split("\n", 1)[0].replace("\r", "")
    if not first_line.strip() or b[:1] in "\r\n":
        return
    assert count(a + b) == count(a) + count(b)


@settings(max_examples=400, deadline=None)
@given(
    text=st.lists(TEXT_ALPHABET, min_size=1, max_size=30).map("".join),
    sep=st.sampled_from(["\n", "\n\n", "  \n", "\n  \n", "\r\n", "\t\n\n", "\u3000\n", "\n\n\n"]),
)
def test_final_tokens_matches_reencoding(text: str, sep: str) -> None:
    """The shortcut that derives count(text) from count(text + sep) agrees with re-encoding."""
    from aisearch_ingest.chunking.count import count_atoms, final_tokens
    from aisearch_ingest.chunking.model import Atom

    text = text.rstrip()
    if not text or not text.split("\n", 1)[0].strip():
        return
    atom = Atom(text, sep, "text", ())
    count_atoms([atom], TokenCounter())
    assert atom.n == count(text + sep)
    assert final_tokens(atom, TokenCounter()) == count(text)
