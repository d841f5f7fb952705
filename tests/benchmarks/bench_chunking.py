"""Chunking benchmark: aisearch-ingest's StructuredChunker against LangChain, LlamaIndex and chonkie, at 512 tokens.

    python tests/benchmarks/build_corpus.py     # once: real documentation from Debian packages (~6 MB md, ~7 MB HTML)
    python tests/benchmarks/bench_chunking.py [--runs 5] [--peer-runs 3] [--only ours|chonkie] [--kind markdown]

Every chunker gets the same documents, one at a time, and every figure is computed by the same checker, from the
chunk texts alone (plus whether the framework attached a heading breadcrumb):

* time: median over runs of the CPU time (one thread) to chunk the whole corpus, caches cleared before each
  run; ``× floor`` is the median over runs of that time divided by the time tiktoken (``encode_ordinary``,
  cl100k_base) needs to encode the same documents, measured right before it (the machine is shared, so each run is
  paired with its own floor, and the chunkers take turns).
* over budget / under 32: chunks whose text is > 512 / < 32 cl100k tokens.
* rows split mid-row: table rows (markdown pipe rows, HTML ``<tr>``) that no chunk holds whole while their first and
  last thirds sit in different chunks.
* header repeated: chunks that continue a table (hold its rows, but the table started in an earlier chunk) and
  start again with its header row.
* code / formulas cut or lost: code blocks (fences, ``<pre>``) and display formulas (``$$``, MathML, MathJax) of at
  most 512 tokens that no chunk holds whole.
* rowspan groups separated (HTML): rows tied together by ``rowspan`` that ended up in different chunks.
* breadcrumb: share of chunks that carry heading context; ``no crumb under heading``: chunks that start after the
  document's first heading yet carry none.
* text kept: letters and digits in the chunks (our breadcrumb prefixes and repeated table headers not counted) over
  letters and digits in the source (markdown source; HTML visible text) -- markup-neutral, so every chunker is
  measured alike.

Comparison is on text equality after dropping everything but letters and digits, so formatting choices (pipes,
fences, whitespace) neither help nor hurt a chunker.

Peers: LangChain ``MarkdownHeaderTextSplitter(h1..h6, strip_headers=False)`` → ``RecursiveCharacterTextSplitter
.from_tiktoken_encoder(chunk_size=512)``; ``HTMLSemanticPreservingSplitter(h1..h6, elements_to_preserve=[table, ul,
ol, pre])`` → the same recursive splitter. LlamaIndex ``MarkdownNodeParser`` / ``HTMLNodeParser`` (default tags) →
``SentenceSplitter(chunk_size=512, chunk_overlap=0)``. chonkie ``RecursiveChunker(tokenizer=<tiktoken
cl100k_base>, chunk_size=512)`` with its default rules: its ``markdown`` recipe is downloaded from the Hugging Face
hub at run time, which this offline machine cannot do.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import logging
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aisearch_ingest.chunking import StructuredChunker, get_encoding

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
BUDGET = 512
_NON_ALNUM = re.compile(r"[\W_]+")
_TAGS = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")


def norm(text: str) -> str:
    """Letters and digits only (HTML tags dropped first, for raw HTML inside markdown)."""
    if "<" in text:
        text = _TAGS.sub(" ", text)
    return _NON_ALNUM.sub("", text)


def raw_norm(text: str) -> str:
    """Letters and digits only, tags kept (for code, where ``<`` is an operator)."""
    return _NON_ALNUM.sub("", text)


@dataclass
class Out:
    """One chunk as the checker sees it."""

    text: str
    crumb: bool
    prefix: int = 0  # characters of our breadcrumb prefix at the start of text


# --------------------------------------------------------------------------------------------------------------------
# Chunkers


def ours(content_type: str) -> Callable[[str], list[Out]]:
    chunker = StructuredChunker(max_tokens=BUDGET)

    def run(doc: str) -> list[Out]:
        return [Out(c.text, bool(c.headings)) for c in chunker.chunk_text(doc, content_type)]

    run.reset = chunker.clear_cache  # type: ignore[attr-defined]
    return run


def langchain_md() -> Callable[[str], list[Out]]:
    from langchain_text_splitters import MarkdownHeaderTextSplitter, RecursiveCharacterTextSplitter

    headers = [("#" * k, f"h{k}") for k in range(1, 7)]
    md = MarkdownHeaderTextSplitter(headers_to_split_on=headers, strip_headers=False)
    rec = RecursiveCharacterTextSplitter.from_tiktoken_encoder(
        encoding_name="cl100k_base", chunk_size=BUDGET, chunk_overlap=0
    )

    def run(doc: str) -> list[Out]:
        docs = rec.split_documents(md.split_text(doc))
        return [Out(d.page_content, any(k in d.metadata for k, _ in ((f"h{j}", 0) for j in range(1, 7)))) for d in docs]

    return run


def langchain_html() -> Callable[[str], list[Out]]:
    from langchain_text_splitters import HTMLSemanticPreservingSplitter, RecursiveCharacterTextSplitter

    headers = [(f"h{k}", f"Header {k}") for k in range(1, 7)]
    sem = HTMLSemanticPreservingSplitter(
        headers_to_split_on=headers, max_chunk_size=10**9, elements_to_preserve=["table", "ul", "ol", "pre"]
    )
    rec = RecursiveCharacterTextSplitter.from_tiktoken_encoder(
        encoding_name="cl100k_base", chunk_size=BUDGET, chunk_overlap=0
    )

    def run(doc: str) -> list[Out]:
        docs = rec.split_documents(sem.split_text(doc))
        return [Out(d.page_content, any(k.startswith("Header ") for k in d.metadata)) for d in docs]

    return run


def llama(kind: str) -> Callable[[str], list[Out]]:
    from llama_index.core import Document
    from llama_index.core.node_parser import HTMLNodeParser, MarkdownNodeParser, SentenceSplitter

    first = MarkdownNodeParser() if kind == "markdown" else HTMLNodeParser()
    splitter = SentenceSplitter(chunk_size=BUDGET, chunk_overlap=0)

    def run(doc: str) -> list[Out]:
        nodes = splitter.get_nodes_from_documents(first.get_nodes_from_documents([Document(text=doc)]))
        return [Out(n.get_content(), n.metadata.get("header_path", "/") not in ("", "/")) for n in nodes]

    return run


def chonkie_rec() -> Callable[[str], list[Out]]:
    from chonkie import RecursiveChunker

    chunker = RecursiveChunker(tokenizer=get_encoding("cl100k_base"), chunk_size=BUDGET)

    def run(doc: str) -> list[Out]:
        return [Out(c.text, False) for c in chunker.chunk(doc)]

    # chonkie memoises token counts of splits (functools.lru_cache on the class): start each run cold, like ours.
    run.reset = RecursiveChunker._estimate_token_count.cache_clear  # type: ignore[attr-defined]
    return run


# --------------------------------------------------------------------------------------------------------------------
# Source structure (reference parsers, independent of ours)


@dataclass
class Table:
    header: str  # normalized
    rows: list[str]  # normalized body rows
    spans: list[tuple[int, int]] = field(default_factory=list)  # rowspan groups (first row, last row) in body rows


@dataclass
class Structure:
    text_norm: str  # the source text, normalized
    first_heading: int  # position in text_norm of the first heading's text (-1: none)
    tables: list[Table]
    code: list[str]  # normalized code blocks that fit the budget
    formulas: list[str]  # normalized display formulas that fit the budget


def md_structure(doc: str, count: Callable[[str], int]) -> Structure:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark").enable("table")
    tokens = md.parse(doc)
    lines = doc.split("\n")
    text_norm = norm(doc)
    tables: list[Table] = []
    code: list[str] = []
    formulas: list[str] = []
    first_heading = -1
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t.type == "heading_open" and first_heading < 0 and t.map:
            first_heading = len(norm("\n".join(lines[: t.map[0]])))
        elif t.type == "table_open" and t.map:
            rows = [norm(x) for x in lines[t.map[0] : t.map[1]] if x.strip()]
            if len(rows) >= 3:
                tables.append(Table(rows[0], [r for r in rows[2:] if r]))
        elif t.type in ("fence", "code_block") and t.map:
            block = "\n".join(lines[t.map[0] : t.map[1]])
            content = raw_norm(t.content)
            if content and count(block) <= BUDGET:
                code.append(content)
        elif t.type == "html_block" and "<tr" in t.content.lower():
            for table in re.split(r"(?=<table[\s>])", t.content, flags=re.I):
                trs = re.findall(r"<tr[\s>].*?</tr>", table, re.S | re.I)
                rows = [r for r in (norm(_TAGS.sub(" ", x)) for x in trs) if r]
                if len(rows) >= 2:
                    tables.append(Table(rows[0], rows[1:]))
        elif t.type == "paragraph_open" and t.map:
            block = "\n".join(lines[t.map[0] : t.map[1]]).strip()
            is_formula = block.startswith("$$") and block.endswith("$$") and len(block) > 4
            if is_formula and count(block) <= BUDGET and raw_norm(block):
                formulas.append(raw_norm(block))
        i += 1
    return Structure(text_norm, first_heading, tables, code, formulas)


def html_structure(doc: str, count: Callable[[str], int]) -> Structure:
    import lxml.html

    root = lxml.html.document_fromstring(doc.encode("utf-8"))
    for bad in root.xpath("//script|//style|//noscript|//template|//head"):
        bad.drop_tree()
    body = root.find("body")
    top = body if body is not None else root
    first_heading = -1
    heads = root.xpath("//h1|//h2|//h3|//h4|//h5|//h6")
    if heads:
        heads[0].text = "\ue000" + (heads[0].text or "")
    visible = top.text_content()
    if heads:
        cut = visible.find("\ue000")
        first_heading = len(norm(visible[:cut]))
        visible = visible.replace("\ue000", "")
    text_norm = norm(visible)
    tables: list[Table] = []
    for tbl in root.iter("table"):
        trs = tbl.xpath("./tr|./thead/tr|./tbody/tr|./tfoot/tr")
        rows = [norm(tr.text_content()) for tr in trs]
        if len(rows) < 2:
            continue
        spans: list[tuple[int, int]] = []
        for k, tr in enumerate(trs[1:]):
            reach = 1
            for cell in tr.xpath("./td|./th"):
                try:
                    reach = max(reach, int(cell.get("rowspan", "1")))
                except ValueError:
                    pass
            if reach > 1:
                spans.append((k, min(k + reach - 1, len(trs) - 2)))
        tables.append(Table(rows[0], rows[1:], spans))
    code: list[str] = []
    for pre in root.iter("pre"):
        text = pre.text_content()
        if raw_norm(text) and count(text) <= BUDGET:
            code.append(raw_norm(text))
    formulas: list[str] = []
    for m in root.xpath("//math|//div[contains(@class,'math')]"):
        text = m.text_content()
        if raw_norm(text) and count(text) <= BUDGET:
            formulas.append(raw_norm(text))
    return Structure(text_norm, first_heading, tables, code, formulas)


# --------------------------------------------------------------------------------------------------------------------
# The checker


@dataclass
class Figures:
    chunks: int = 0
    over: int = 0
    under: int = 0
    rows: int = 0
    rows_split: int = 0
    continuations: int = 0
    header_repeated: int = 0
    code: int = 0
    code_cut: int = 0
    formulas: int = 0
    formulas_cut: int = 0
    span_groups: int = 0
    span_separated: int = 0
    crumb: int = 0
    under_heading: int = 0
    under_heading_no_crumb: int = 0
    chars_out: int = 0
    chars_in: int = 0


def check(outs: list[Out], s: Structure, count: Callable[[str], int], fig: Figures) -> None:
    texts = [o.text[o.prefix :] for o in outs]
    norms = [norm(t) for t in texts]
    joined = "\x00".join(norms)
    starts: list[int] = []
    pos = 0
    for n in norms:
        starts.append(pos)
        pos += len(n) + 1

    def chunk_of(p: int) -> int:
        return bisect.bisect_right(starts, p) - 1

    fig.chunks += len(outs)
    for t in texts:
        k = count(t)
        fig.over += k > BUDGET
        fig.under += k < 32
    repeated_chars = 0
    cursor = 0  # rows are searched in order from here, so text repeated elsewhere does not mislead
    for tbl in s.tables:
        ids: list[int] = []
        h = joined.find(tbl.header, cursor) if tbl.header else -1
        if h >= 0:
            cursor = h
        for r in tbl.rows:
            if len(r) < 8:
                ids.append(-1)
                continue
            fig.rows += 1
            p = joined.find(r, cursor)
            if p < 0:
                p = joined.find(r)
            if p >= 0:
                cursor = max(cursor, p)
                ids.append(chunk_of(p))
                continue
            ids.append(-1)
            third = len(r) // 3
            a, b = joined.find(r[:third]), joined.find(r[-third:])
            if a >= 0 and b >= 0 and chunk_of(a) != chunk_of(b):
                fig.rows_split += 1
        found = [x for x in ids if x >= 0]
        if found and len(tbl.header) >= 4:
            first = min(found)
            for c in sorted(set(found) - {first}):
                fig.continuations += 1
                if tbl.header in norms[c]:
                    fig.header_repeated += 1
                    repeated_chars += len(tbl.header)
        for lo, hi in tbl.spans:
            group = {ids[k] for k in range(lo, hi + 1) if k < len(ids) and ids[k] >= 0}
            fig.span_groups += 1
            fig.span_separated += len(group) > 1
    raw = "\x00".join(raw_norm(t) for t in texts)
    for content in s.code:
        fig.code += 1
        fig.code_cut += raw.find(content) < 0
    for content in s.formulas:
        fig.formulas += 1
        fig.formulas_cut += raw.find(content) < 0
    # Breadcrumbs: where does each chunk start in the source?
    cursor = 0
    for o, n in zip(outs, norms, strict=False):
        fig.crumb += o.crumb
        if not n:
            continue
        probe = n[:40]
        p = s.text_norm.find(probe, max(0, cursor - 2000))
        if p < 0:
            p = s.text_norm.find(probe)
        if p >= 0:
            cursor = p
        if s.first_heading >= 0 and p >= s.first_heading:
            fig.under_heading += 1
            fig.under_heading_no_crumb += not o.crumb
    fig.chars_out += sum(map(len, norms)) - repeated_chars
    fig.chars_in += len(s.text_norm)


# --------------------------------------------------------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> float:
    """CPU seconds of this process (steadier than wall time on a shared machine; everything here is one thread)."""
    gc.collect()
    t = time.process_time()
    fn()
    return time.process_time() - t


def bench(
    kind: str, docs: list[str], chunkers: dict[str, Callable[[str], list[Out]]], runs: int, peer_runs: int
) -> str:
    enc = get_encoding("cl100k_base")

    def count(text: str) -> int:
        return len(enc.encode_ordinary(text))

    build = md_structure if kind == "markdown" else html_structure
    structures = [build(d, count) for d in docs]
    # Round-robin: every run times each chunker once (fewer runs for the slow peers), each right after its own
    # tiktoken floor, so load on the shared machine falls on all chunkers alike.
    names = list(chunkers)
    times: dict[str, list[float]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    outs: dict[str, list[list[Out]]] = {}
    for rep in range(max(runs, peer_runs)):
        for name in names:
            if rep >= (runs if name.startswith("aisearch") else peer_runs):
                continue
            fn = chunkers[name]
            reset = getattr(fn, "reset", None)
            if reset is not None:
                reset()  # no cache carried over from the previous run
            floor = timed(lambda: [enc.encode_ordinary(d) for d in docs])
            result: list[list[Out]] = []
            took = timed(lambda: result.extend(fn(d) for d in docs))  # noqa: B023
            times[name].append(took)
            ratios[name].append(took / floor)
            outs[name] = result
        print(f"  run {rep + 1} done", file=sys.stderr, flush=True)
    rows = []
    for name in names:
        fig = Figures()
        for o, s in zip(outs[name], structures, strict=False):
            check(o, s, count, fig)
        rows.append((name, statistics.median(times[name]), statistics.median(ratios[name]), fig))
        print(f"  {name}: {statistics.median(times[name]):.2f} s", file=sys.stderr, flush=True)
    f0 = rows[0][3]
    size = sum(len(d.encode()) for d in docs) / 1e6
    lines = [
        f"**{kind}** — {len(docs)} documents, {size:.1f} MB; {f0.rows} table rows, {f0.code} code blocks and "
        f"{f0.formulas} formulas that fit 512 tokens"
        + (f", {f0.span_groups} rowspan groups" if kind == "html" else ""),
        "",
        "| chunker | median CPU time | × tiktoken floor | chunks | over 512 | under 32 | rows split mid-row "
        "| header repeated on continuations | fitting code cut/lost | fitting formulas cut/lost |"
        + (" rowspan groups separated |" if kind == "html" else "")
        + " with breadcrumb | no crumb under a heading | text kept |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if kind == "html" else "") + "---:|---:|---:|",
    ]
    for name, t, ratio, f in rows:
        rep = f"{f.header_repeated}/{f.continuations}" + (
            f" ({100 * f.header_repeated / f.continuations:.0f} %)" if f.continuations else ""
        )
        lines.append(
            f"| {name} | {t:.2f} s | {ratio:.2f} | {f.chunks} | {f.over} | {f.under} | {f.rows_split} | {rep} | "
            f"{f.code_cut} | {f.formulas_cut} |"
            + (f" {f.span_separated} |" if kind == "html" else "")
            + f" {100 * f.crumb / max(f.chunks, 1):.0f} % | {f.under_heading_no_crumb}/{f.under_heading} | "
            f"{f.chars_out / max(f.chars_in, 1):.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--runs", type=int, default=5, help="runs of our chunker (median)")
    parser.add_argument("--peer-runs", type=int, default=3, help="runs of each peer (median)")
    parser.add_argument(
        "--only", choices=["ours", "chonkie", "all"], default="all", help="chonkie: ours and chonkie's chunker only"
    )
    parser.add_argument("--kind", choices=["markdown", "html", "both"], default="both")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    if not (args.corpus / "manifest.json").exists():
        print(f"no corpus in {args.corpus}: run tests/benchmarks/build_corpus.py first", file=sys.stderr)
        return 2
    kinds = ["markdown", "html"] if args.kind == "both" else [args.kind]
    for kind in kinds:
        docs = [p.read_text(encoding="utf-8") for p in sorted((args.corpus / kind).iterdir()) if p.is_file()]
        chunkers: dict[str, Callable[[str], list[Out]]] = {"aisearch-ingest StructuredChunker": ours(kind)}
        if args.only == "chonkie":
            chunkers["chonkie RecursiveChunker"] = chonkie_rec()
        elif args.only == "all":
            if kind == "markdown":
                chunkers["LangChain MarkdownHeader → Recursive"] = langchain_md()
            else:
                chunkers["LangChain HTMLSemanticPreserving → Recursive"] = langchain_html()
            chunkers[
                "LlamaIndex "
                + ("MarkdownNodeParser" if kind == "markdown" else "HTMLNodeParser")
                + " → SentenceSplitter"
            ] = llama(kind)
            chunkers["chonkie RecursiveChunker"] = chonkie_rec()
        print(f"{kind}:", file=sys.stderr, flush=True)
        print(bench(kind, docs, chunkers, args.runs, args.peer_runs))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
