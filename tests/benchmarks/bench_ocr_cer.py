"""OCR accuracy benchmark: character error rate of the emulator's Qwen-OCR backend on the bundled scan.

    python tests/benchmarks/bench_ocr_cer.py [--repeat N]

Runs ``qwen_ocr(..., task="text_recognition")`` (the backend directly, no HTTP) on
``notebooks/data/scan_page.png`` -- a 150 dpi, 0.7 degree rotated, blurred and speckled page -- and compares the
answer with ``notebooks/data/scan_page.txt``. CER = Levenshtein distance over characters / length of the
reference, both after collapsing every whitespace run to one space. Prints CER, the engine load time, the
first (cold) OCR time and the memoised repeat time. Target: CER < 10 %.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from aisearch_ingest.emulator import offline

DATA = Path(__file__).resolve().parents[2] / "notebooks" / "data"
TARGET_CER = 0.10


def normalise(text: str) -> str:
    """Collapse whitespace runs to one space and strip the ends."""
    return re.sub(r"\s+", " ", text).strip()


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of one character each), O(len(a) * len(b))."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def cer(hypothesis: str, reference: str) -> float:
    """Character error rate of ``hypothesis`` against ``reference`` after whitespace normalisation."""
    ref = normalise(reference)
    return levenshtein(normalise(hypothesis), ref) / max(len(ref), 1)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures; exit status 1 if the CER misses the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3, help="memoised repeat calls to time (default 3)")
    args = parser.parse_args(argv)

    image = (DATA / "scan_page.png").read_bytes()
    reference = (DATA / "scan_page.txt").read_text(encoding="utf-8")

    load = offline.warm_up()
    started = time.perf_counter()
    answer = offline.qwen_ocr(image, task="text_recognition", prompt=None, result_schema=None)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(args.repeat):
        offline.qwen_ocr(image, task="text_recognition", prompt=None, result_schema=None)
    warm = (time.perf_counter() - started) / max(args.repeat, 1)

    rate = cer(answer.text, reference)
    ref_len = len(normalise(reference))
    print(f"image            : scan_page.png ({len(image):,} bytes), reference {ref_len} characters")
    print(f"engine load      : {load:.2f} s")
    print(f"OCR, first call  : {cold:.2f} s")
    print(f"OCR, memoised    : {warm * 1000:.2f} ms per call (mean of {args.repeat})")
    print(f"CER              : {rate:.2%} ({levenshtein(normalise(answer.text), normalise(reference))} edits)")
    print(f"target           : < {TARGET_CER:.0%} -> {'PASS' if rate < TARGET_CER else 'FAIL'}")
    return 0 if rate < TARGET_CER else 1


if __name__ == "__main__":
    sys.exit(main())
