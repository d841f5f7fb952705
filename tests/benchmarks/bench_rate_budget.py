"""The adaptive rate budget against an endpoint whose real limit is not the one the client was told.

An emulator limits the **whole endpoint** (every service, every call: creates, task-status polls, sync calls,
refused calls included) to ``--qps`` calls per second, as Alibaba's gateway counts an account. Scenarios:

1. ``aisearch-ingest ingest`` with its defaults (a subprocess, as a user runs it) over a mixed folder of PDFs and
   PNGs: two services on one endpoint, each with a 10 QPS ceiling.
2. ``ImageAnalyzer(qps=12)`` against a 10 QPS endpoint: a ceiling above the real limit.
3. The same two against a 1 QPS endpoint (the figure of the vendor's Chinese document-parsing page).

The bound is the fewest calls the work needs (one sync call per image, a create and one poll per document) divided
by the endpoint's limit. Each row prints files lost, 429s, calls and wall time against that bound. For comparison,
in the same run: the same ImageAnalyzer with a fixed (non-adaptive) 12 QPS limiter, which is what the client did
before the budget adapted.

Run: ``python tests/benchmarks/bench_rate_budget.py [--files 300] [--images 100] [--slow-files 40]
[--slow-images 30] [--skip-slow]``
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aisearch_ingest import ImageAnalyzer
from aisearch_ingest.emulator import Emulator
from aisearch_ingest.ratelimit import RateLimiter, reset_budgets

KEY = "bench-key"
DISTINCT_IMAGES = 20


def make_png(i: int) -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (420, 90), "white")
    text = f"Receipt {i:03d} total {17 * i + 3}.50"
    ImageDraw.Draw(image).text((10, 25), text, fill="black", font=ImageFont.load_default(size=26))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_pdf(i: int) -> bytes:
    from fpdf import FPDF

    document = FPDF()
    document.set_font("helvetica", size=12)
    document.add_page()
    document.multi_cell(0, 8, f"Report {i:04d}\n\nQuarterly revenue grew by {i % 17} percent in region {i % 5}.")
    return bytes(document.output())


def make_folder(root: Path, files: int, pngs: list[bytes]) -> tuple[int, int]:
    """Half PDFs (each distinct), half PNGs (from the warm pool); returns (documents, images)."""
    root.mkdir(parents=True, exist_ok=True)
    docs = files // 2
    for i in range(docs):
        (root / f"report-{i:04d}.pdf").write_bytes(make_pdf(i))
    for i in range(files - docs):
        (root / f"receipt-{i:04d}.png").write_bytes(pngs[i % len(pngs)])
    return docs, files - docs


def warm_up(pngs: list[bytes]) -> None:
    """OCR every distinct image once, outside the measured runs (the emulator memoises OCR per process)."""
    with Emulator(api_key=KEY) as emu, ImageAnalyzer(api_key=KEY, endpoint=emu.url, qps=0) as client:
        list(client.parse_many(pngs))


def run_cli(folder: Path, docs: int, images: int, qps: float) -> dict[str, Any]:
    with Emulator(api_key=KEY, qps=qps) as emu, tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "chunks.jsonl"
        env = dict(os.environ, AISEARCH_API_KEY=KEY, AISEARCH_ENDPOINT=emu.url)
        command = [
            sys.executable,
            "-m",
            "aisearch_ingest.cli",
            "ingest",
            str(folder),
            "--out",
            str(out),
            "--no-progress",
        ]
        started = time.monotonic()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        wall = time.monotonic() - started
        failures_path = out.with_name(out.stem + ".failures.jsonl")
        failures = failures_path.read_text().splitlines() if failures_path.exists() else []
        sources = (
            {json.loads(line)["metadata"]["source"] for line in out.read_text().splitlines()} if out.exists() else set()
        )
        stats = emu.stats
    if done.returncode not in (0, 1):
        print(done.stdout, done.stderr, file=sys.stderr)
    return {
        "wall": wall,
        "files": docs + images,
        "ok": len(sources),
        "lost": docs + images - len(sources),
        "lost_to_429": sum("429" in f or "RateLimit" in f or "Throttling" in f for f in failures),
        "calls": stats.total_calls,
        "throttled": stats.throttled,
        "bound": (2 * docs + images) / qps,
        "max_window": stats.max_calls_in_any_window(1.0),
    }


def run_images(pngs: list[bytes], count: int, ceiling: float, qps: float, *, adaptive: bool) -> dict[str, Any]:
    reset_budgets()
    inputs = [pngs[i % len(pngs)] for i in range(count)]
    with Emulator(api_key=KEY, qps=qps) as emu:
        budget = None if adaptive else RateLimiter(ceiling)
        with ImageAnalyzer(api_key=KEY, endpoint=emu.url, qps=ceiling, rate_limiter=budget) as client:
            started = time.monotonic()
            outcomes = list(client.parse_many(inputs))
            wall = time.monotonic() - started
        stats = emu.stats
    lost = [o for o in outcomes if not o.ok]
    return {
        "wall": wall,
        "files": count,
        "ok": count - len(lost),
        "lost": len(lost),
        "lost_to_429": sum(getattr(o.error, "status_code", None) == 429 for o in lost),
        "calls": stats.total_calls,
        "throttled": stats.throttled,
        "bound": count / qps,
        "max_window": stats.max_calls_in_any_window(1.0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=300, help="mixed files for the CLI at 10 QPS")
    parser.add_argument("--images", type=int, default=100, help="images for ImageAnalyzer(qps=12) at 10 QPS")
    parser.add_argument("--slow-files", type=int, default=40, help="mixed files for the CLI at 1 QPS")
    parser.add_argument("--slow-images", type=int, default=30, help="images for ImageAnalyzer(qps=12) at 1 QPS")
    parser.add_argument("--skip-slow", action="store_true", help="skip the 1 QPS runs")
    parser.add_argument("--skip-fixed", action="store_true", help="skip the non-adaptive comparison rows")
    args = parser.parse_args(argv)

    pngs = [make_png(i) for i in range(DISTINCT_IMAGES)]
    warm_up(pngs)
    rows: list[tuple[str, dict[str, Any]]] = []
    tiers = [("mixed", 10, args.files, args.images)]
    if not args.skip_slow:
        tiers.append(("slow", 1, args.slow_files, args.slow_images))
    with tempfile.TemporaryDirectory() as tmp:
        for name, qps, files, count in tiers:
            folder = Path(tmp) / name
            docs, images = make_folder(folder, files, pngs)
            limit = f"endpoint {qps}/s"
            rows.append((f"CLI defaults, {docs} PDFs + {images} PNGs, {limit}", run_cli(folder, docs, images, qps)))
            adaptive = run_images(pngs, count, 12, qps, adaptive=True)
            rows.append((f"ImageAnalyzer(qps=12), {count} PNGs, {limit}", adaptive))
            if not args.skip_fixed:
                fixed = run_images(pngs, count, 12, qps, adaptive=False)
                rows.append((f"  peer: fixed 12/s limiter (no adaptation), {limit}", fixed))

    shown = sys.argv[1:] if argv is None else argv
    print("command: python tests/benchmarks/bench_rate_budget.py " + " ".join(shown))
    print()
    print("| run | files | lost | lost to 429 | 429s | calls | max calls in 1 s | wall s | bound s | × bound |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        print(
            f"| {name} | {r['files']} | {r['lost']} | {r['lost_to_429']} | {r['throttled']} | {r['calls']} | "
            f"{r['max_window']} | {r['wall']:.1f} | {r['bound']:.1f} | {r['wall'] / r['bound']:.2f} |"
        )
    ours = [r for name, r in rows if not name.startswith("  peer")]
    ok = all(r["lost"] == 0 and r["wall"] <= 1.2 * r["bound"] for r in ours)
    print()
    print(f"acceptance (0 lost, wall ≤ 1.2 × bound on every run of ours): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
