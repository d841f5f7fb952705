"""The offline mode at the speed of its work, in bounded memory: ``aisearch-ingest ingest --offline`` (a subprocess, as
a user runs it, with its defaults) over folders of small mixed files -- one-page PDFs, markdown, HTML, text, and PNGs
from a pool of 20 (the emulator memoises OCR per content, as a cache would) -- at several batch sizes.

Prints wall time, seconds per file and the CLI's peak RSS for each size, and the ratio of the largest batch's peak
RSS to the smallest's (flat memory means a ratio near 1).

Run: ``python tests/benchmarks/bench_offline.py [--sizes 1000,10000]``
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

_MEASURE = """
import resource, subprocess, sys, json, time
started = time.monotonic()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.monotonic() - started
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
print(json.dumps({"rc": done.returncode, "wall": wall, "rss_kib": rss, "tail": done.stdout[-600:],
                  "err": done.stderr[-600:]}))
"""


def make_files(root: Path, count: int) -> None:
    from fpdf import FPDF
    from PIL import Image, ImageDraw, ImageFont

    root.mkdir(parents=True, exist_ok=True)
    font = ImageFont.load_default(size=26)
    pngs = []
    for i in range(20):
        image = Image.new("RGB", (420, 90), "white")
        ImageDraw.Draw(image).text((10, 25), f"Receipt {i:03d} total {17 * i + 3}.50", fill="black", font=font)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    for i in range(count):
        kind = i % 10
        if kind < 4:
            document = FPDF()
            document.set_font("helvetica", size=12)
            document.add_page()
            document.multi_cell(0, 8, f"Report {i}\n\nRevenue grew by {i % 17} percent in region {i % 5}.")
            (root / f"f{i:06d}.pdf").write_bytes(bytes(document.output()))
        elif kind < 7:
            text = f"# Note {i}\n\n## Summary\n\nItem {i} shipped on time.\n\n| a | b |\n|---|---|\n| {i} | {i * 2} |\n"
            (root / f"f{i:06d}.md").write_text(text)
        elif kind < 9:
            html = f"<html><body><h1>Page {i}</h1><p>Paragraph about item {i}.</p><ul><li>x</li></ul></body></html>"
            (root / f"f{i:06d}.html").write_text(html)
        else:
            (root / f"f{i:06d}.png").write_bytes(pngs[i % len(pngs)])


def run(folder: Path, out: Path, extra: tuple[str, ...] = ()) -> dict[str, object]:
    command = [sys.executable, "-m", "aisearch_ingest.cli", "ingest", str(folder), "--offline", "--out", str(out)]
    command += ["--no-progress", *extra]
    probe = subprocess.run([sys.executable, "-c", _MEASURE, *command], capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(probe.stdout)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000", help="batch sizes, comma-separated")
    parser.add_argument(
        "--peer",
        action="store_true",
        help="also run the smallest batch with the old defaults (--qps 10 --concurrency 10)",
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            folder = Path(tmp) / f"in-{size}"
            make_files(folder, size)
            r = run(folder, Path(tmp) / f"out-{size}.jsonl")
            if r["rc"] != 0:
                print(r["tail"], r["err"], file=sys.stderr)
            rows.append((str(size), r))
        if args.peer:
            folder = Path(tmp) / f"in-{sizes[0]}"
            peer = run(folder, Path(tmp) / "out-peer.jsonl", ("--qps", "10", "--concurrency", "10"))
            rows.append((f"{sizes[0]} (peer: --qps 10 --concurrency 10, the old defaults)", peer))
    shown = sys.argv[1:] if argv is None else argv
    print("command: python tests/benchmarks/bench_offline.py " + " ".join(shown))
    print()
    print("| files | exit | wall s | s/file | peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|")
    for label, r in rows:
        wall = float(r["wall"])  # type: ignore[arg-type]
        rss = float(r["rss_kib"]) / 1024  # type: ignore[arg-type]
        files = int(label.split()[0])
        print(f"| {label} | {r['rc']} | {wall:.1f} | {wall / files:.4f} | {rss:.0f} |")
    first, last = rows[0][1], rows[len(sizes) - 1][1]
    ratio = float(last["rss_kib"]) / float(first["rss_kib"])  # type: ignore[arg-type]
    print()
    print(f"peak RSS of {sizes[-1]} files / {sizes[0]} files: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
