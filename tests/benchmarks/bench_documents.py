"""Document batches at the rate bound without tuning: 50 PDFs (434 pages) against an emulator that takes
``1 s + 0.5 s per page`` per task and allows 10 calls per second for the whole endpoint (creates and polls alike).

The bound: every document needs at least a create and one poll (100 calls at 10/s = 10 s), and nothing ends before
its own task (the longest takes ``1 + 0.5 · pages`` s after its create). Rows, in the same run: the client's defaults
(in flight and polling learned), and fixed ``max_concurrency`` of 10 (the old default) and 50.

Run: ``python tests/benchmarks/bench_documents.py [--docs 50] [--pages 434] [--qps 10]``
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from typing import Any

from aisearch_ingest import DocumentAnalyzer
from aisearch_ingest.emulator import Emulator, Latency
from aisearch_ingest.ratelimit import reset_budgets

KEY = "bench-key"


def page_counts(docs: int, pages: int, seed: int = 5) -> list[int]:
    """``docs`` page counts between 1 and 20 that add up to ``pages``."""
    rng = random.Random(seed)
    counts = [1] * docs
    for _ in range(pages - docs):
        while True:
            i = rng.randrange(docs)
            if counts[i] < 20:
                counts[i] += 1
                break
    return counts


def make_pdf(i: int, pages: int) -> bytes:
    from fpdf import FPDF

    document = FPDF()
    document.set_font("helvetica", size=12)
    for k in range(pages):
        document.add_page()
        document.multi_cell(0, 8, f"Document {i} page {k + 1}. Revenue grew by {(i * 7 + k) % 13} percent.")
    return bytes(document.output())


def run(pdfs: list[bytes], qps: float, latency: Latency, concurrency: int | None) -> dict[str, Any]:
    reset_budgets()
    with Emulator(api_key=KEY, qps=qps, latency=latency) as emu:
        with DocumentAnalyzer(api_key=KEY, endpoint=emu.url, max_concurrency=concurrency) as client:
            started = time.monotonic()
            outcomes = list(client.parse_many(pdfs))
            wall = time.monotonic() - started
        stats = emu.stats
    return {
        "wall": wall,
        "ok": sum(o.ok for o in outcomes),
        "throttled": stats.throttled,
        "calls": stats.total_calls,
        "calls_per_doc": stats.total_calls / len(pdfs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=50)
    parser.add_argument("--pages", type=int, default=434)
    parser.add_argument("--qps", type=float, default=10.0)
    parser.add_argument("--skip-peers", action="store_true", help="only the default settings")
    args = parser.parse_args(argv)

    counts = page_counts(args.docs, args.pages)
    pdfs = [make_pdf(i, n) for i, n in enumerate(counts)]
    latency = Latency(fixed=1.0, per_page=0.5)
    bound = max(2 * args.docs / args.qps, max(latency.total(pages=n) for n in counts))
    rows = [("defaults (learned)", run(pdfs, args.qps, latency, None))]
    if not args.skip_peers:
        rows.append(("max_concurrency=10 (old default)", run(pdfs, args.qps, latency, 10)))
        rows.append(("max_concurrency=50 (hand-tuned)", run(pdfs, args.qps, latency, 50)))

    shown = sys.argv[1:] if argv is None else argv
    print("command: python tests/benchmarks/bench_documents.py " + " ".join(shown))
    print(f"{args.docs} PDFs, {sum(counts)} pages (1-20 each), latency 1 s + 0.5 s/page, endpoint {args.qps:g} calls/s")
    print(f"bound ≈ {bound:.1f} s (max of 2 calls/doc at the limit and the longest task)")
    print()
    print("| settings | wall s | × bound | ok | 429s | calls | calls/doc |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        print(
            f"| {name} | {r['wall']:.1f} | {r['wall'] / bound:.2f} | {r['ok']} | {r['throttled']} | {r['calls']} | "
            f"{r['calls_per_doc']:.2f} |"
        )
    ours = rows[0][1]
    ok = ours["wall"] <= 17.0 and ours["throttled"] == 0 and ours["calls_per_doc"] <= 2.6 and ours["ok"] == args.docs
    print()
    print(f"acceptance (defaults: ≤ 17 s, 0 × 429, ≤ 2.6 calls/doc, all parsed): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
