"""Fail if a pip ``--report`` (of a ``--dry-run`` install) would install PyTorch, CUDA or Triton, or a local file.

    python .ci/check_resolution.py REPORT.json

The report comes from ``.ci/run``'s resolver dry run of ``.[test]`` against the public index alone (no pip config
file, no ``PIP_*`` variable, nothing installed counted). Prints the package count; exits 1 naming every offender.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

#: Distributions that mean a GPU stack: torch and its CUDA wheels (nvidia-*, cuda-*), triton.
FORBIDDEN = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*)$")


def main(report_path: str) -> int:
    report = json.loads(Path(report_path).read_text())
    installs = report["install"]
    names = sorted(item["metadata"]["name"].lower().replace("_", "-") for item in installs)
    forbidden = [name for name in names if FORBIDDEN.match(name)]
    # The project itself is the one local path; any other file: URL would be a wheel from this machine's disk.
    local = [
        item["metadata"]["name"]
        for item in installs
        if item["download_info"]["url"].startswith("file:") and not item.get("requested")
    ]
    print(f"resolution of .[test] against the public index: {len(names)} packages")
    if forbidden:
        print(f"FAIL: the resolution pulls {', '.join(forbidden)}", file=sys.stderr)
    if local:
        print(f"FAIL: resolved from local files: {', '.join(local)}", file=sys.stderr)
    return 1 if forbidden or local else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
