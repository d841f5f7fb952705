"""A second virtualenv for Alibaba's own LlamaIndex reader, built once and reused.

``llama-index-readers-alibabacloud-aisearch`` 0.5.0 requires ``alibabacloud-searchplat20240529<2,>=1.1.0``; the
test environment pins the 2.x SDK. Both must run in CI, so the reader gets its own venv under
``<repo>/.cache/reader-venv/<key>``, where ``<key>`` hashes :data:`REQUIREMENTS` and the interpreter version: a
changed pin builds a fresh venv, an unchanged one reuses the last build (a ``.complete`` marker, written after a
successful install, tells a finished venv from an interrupted one).

Policy when the build fails (no network, no index): with ``CI`` set to a true value the test FAILS, so CI can
never silently stop exercising the reader; elsewhere it is skipped with pip's output in the reason.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import fcntl
except ImportError:  # not on Windows: builds are then not serialised between parallel runs
    fcntl = None  # type: ignore[assignment]

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("reader_driver.py")
#: Exact pins: the reader and the 1.x SDK it resolves to (its ``Requires-Dist`` is ``<2,>=1.1.0``).
REQUIREMENTS = (
    "llama-index-readers-alibabacloud-aisearch==0.5.0",
    "alibabacloud-searchplat20240529==1.4.0",
)
BUILD_TIMEOUT = 600


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def venv_dir() -> Path:
    key_source = "\n".join((*REQUIREMENTS, f"{sys.version_info.major}.{sys.version_info.minor}"))
    key = hashlib.sha256(key_source.encode()).hexdigest()[:16]
    root = Path(os.environ.get("AISEARCH_INGEST_READER_VENV_ROOT") or REPO / ".cache" / "reader-venv")
    return root / key


def _python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _build(venv: Path) -> None:
    if venv.exists():
        shutil.rmtree(venv)  # an interrupted build: start over
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, text=True)
    pip = [str(_python(venv)), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q"]
    subprocess.run([*pip, *REQUIREMENTS], check=True, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    freeze = subprocess.run(
        [str(_python(venv)), "-m", "pip", "freeze"], check=True, capture_output=True, text=True, timeout=120
    )
    (venv / ".complete").write_text(freeze.stdout)


def reader_python() -> Path:
    """The reader venv's interpreter, building the venv first if needed; fails (CI) or skips (elsewhere) when
    it cannot be built."""
    venv = venv_dir()
    if (venv / ".complete").exists():
        return _python(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time (parallel test runs share the cache)
        if not (venv / ".complete").exists():
            try:
                _build(venv)
            except (OSError, subprocess.SubprocessError) as exc:
                output = getattr(exc, "stderr", None) or getattr(exc, "stdout", None) or ""
                reason = f"could not build the reader venv at {venv}: {exc}\n{str(output)[-3000:]}"
                if in_ci():
                    pytest.fail(reason, pytrace=False)
                pytest.skip(reason)
    return _python(venv)
