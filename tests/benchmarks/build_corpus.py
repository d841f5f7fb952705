"""Build the chunking benchmark corpus from documentation shipped in Debian packages (nobody here wrote it).

    python tests/benchmarks/build_corpus.py            # -> tests/benchmarks/corpus/{markdown,html}/..., manifest.json

Sources (Debian bookworm, fetched with ``apt-get download``, unpacked with ``dpkg-deb -x``; nothing is installed):

* ``nodejs-doc``: the Node.js API reference, written in markdown (code fences, pipe tables, deep headings).
* ``debian-reference-zh-cn``: the Debian Reference in Simplified Chinese (DocBook HTML; large tables, ``<pre>``).
* ``kicad-doc-zh``: the KiCad manuals in Chinese (Asciidoctor HTML; tables with rowspan/colspan).
* ``python3.11-doc``: six pages of the Python reference with its largest tables (the C API type-slot tables use
  rowspan and colspan).
* ``python-statsmodels-doc``: Sphinx HTML of the statsmodels example notebooks (MathJax formulas, DataFrame
  tables, code) and the notebooks themselves, converted to markdown the way ``nbconvert --to markdown`` does
  (markdown cells verbatim with their ``$$`` formulas, code cells fenced, outputs fenced or raw HTML tables).
* ``pandoc`` (+ ``pandoc-data``, ``liblua5.3-0``): converts the two Chinese HTML manuals to GitHub markdown, as a
  document converter would -- the Chinese part of the markdown corpus.

The HTML corpus is the HTML files as shipped. Everything is sorted, so the corpus is the same on every machine with
the same package versions (``manifest.json`` records each file's size and sha256). Needs ``apt-get`` (runs
``apt-get update`` once if a download fails) and about 120 MB of disk; takes well under three minutes.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
PACKAGES = [
    "nodejs-doc",
    "debian-reference-zh-cn",
    "kicad-doc-zh",
    "python-statsmodels-doc",
    "python3.11-doc",
    "pandoc",
    "pandoc-data",
    "liblua5.3-0",
]
STATSMODELS = "usr/share/doc/python-statsmodels-doc/html/examples/notebooks/generated"
PYDOC = "usr/share/doc/python3.11/html"
# Python reference pages with the largest tables, including the rowspan/colspan tables of the C API slot reference.
PYDOC_PAGES = [
    "c-api/typeobj.html",
    "c-api/apiabiversion.html",
    "library/venv.html",
    "library/stdtypes.html",
    "library/datetime.html",
    "library/codecs.html",
]


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cmd, check=True, capture_output=True, **kw)  # type: ignore[call-overload,no-any-return]


def fetch_debs(work: Path) -> dict[str, Path]:
    """Download and unpack the packages; return package name -> unpacked root."""
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in PACKAGES if not list(debs.glob(f"{p}_*.deb"))]
    if missing:
        try:
            _run(["apt-get", "download", *missing], cwd=debs)
        except subprocess.CalledProcessError:
            _run(["apt-get", "update", "-qq"])
            _run(["apt-get", "download", *missing], cwd=debs)
    roots: dict[str, Path] = {}
    for p in PACKAGES:
        deb = sorted(debs.glob(f"{p}_*.deb"))[-1]
        root = work / "x" / p
        if not root.exists():
            tmp = root.with_suffix(".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            _run(["dpkg-deb", "-x", str(deb), str(tmp)])
            tmp.rename(root)
        roots[p] = root
    return roots


def _read_maybe_gz(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def notebook_to_markdown(nb: dict[str, object]) -> str:
    """nbconvert-style markdown: markdown cells verbatim, code fenced, outputs fenced (HTML outputs kept raw)."""
    parts: list[str] = []
    for cell in nb.get("cells", []):  # type: ignore[attr-defined]
        source = "".join(cell.get("source", []))
        if not source.strip():
            continue
        if cell.get("cell_type") == "markdown":
            parts.append(source.strip("\n"))
        elif cell.get("cell_type") == "code":
            parts.append("```python\n" + source.strip("\n") + "\n```")
            for out in cell.get("outputs", []):
                if out.get("output_type") == "stream":
                    text = "".join(out.get("text", []))
                    if text.strip():
                        parts.append("```\n" + text.strip("\n") + "\n```")
                elif out.get("output_type") in ("execute_result", "display_data"):
                    data = out.get("data", {})
                    if "text/html" in data:
                        parts.append("".join(data["text/html"]).strip())
                    elif "text/plain" in data:
                        parts.append("```\n" + "".join(data["text/plain"]).strip("\n") + "\n```")
    return "\n\n".join(parts) + "\n"


def _pandoc(pandoc_root: Path, src: Path, dst: Path) -> None:
    env = dict(os.environ, LD_LIBRARY_PATH=str(pandoc_root / "usr/lib/x86_64-linux-gnu"))
    _run(
        [
            str(pandoc_root / "usr/bin/pandoc"),
            f"--data-dir={pandoc_root / 'usr/share/pandoc/data'}",
            "-f",
            "html-native_divs-native_spans",
            "-t",
            "gfm-raw_html",
            "--wrap=none",
            str(src),
            "-o",
            str(dst),
        ],
        env=env,
    )


def build(out: Path, work: Path) -> dict[str, object]:
    """Build the corpus under ``out``; return the manifest."""
    roots = fetch_debs(work)
    pandoc_root = work / "pandoc"
    if not pandoc_root.exists():
        tmp = work / "pandoc.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for p in ("pandoc", "pandoc-data", "liblua5.3-0"):
            shutil.copytree(roots[p], tmp, dirs_exist_ok=True)
        tmp.rename(pandoc_root)
    for sub in ("markdown", "html"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir(parents=True)

    zh_ref = sorted((roots["debian-reference-zh-cn"] / "usr/share/debian-reference").glob("*.zh-cn.html"))
    zh_kicad = sorted((roots["kicad-doc-zh"] / "usr/share/doc/kicad/help/zh").glob("*.html"))
    sm_dir = roots["python-statsmodels-doc"] / STATSMODELS

    # HTML: as shipped.
    for src in zh_ref:
        shutil.copy(src, out / "html" / f"debian-reference-{src.name}")
    for src in zh_kicad:
        shutil.copy(src, out / "html" / f"kicad-zh-{src.name}")
    for src in sorted(sm_dir.glob("*.html")):
        shutil.copy(src, out / "html" / f"statsmodels-{src.name}")
    for page in PYDOC_PAGES:
        src = roots["python3.11-doc"] / PYDOC / page
        shutil.copy(src, out / "html" / f"python-{page.replace('/', '-')}")

    # Markdown: Node.js API docs as written; Chinese manuals through pandoc; statsmodels notebooks as nbconvert would.
    for src in sorted((roots["nodejs-doc"] / "usr/share/doc/nodejs/api").glob("*.md*")):
        name = src.name.removesuffix(".gz")
        (out / "markdown" / f"nodejs-{name}").write_bytes(_read_maybe_gz(src))
    jobs = [(src, out / "markdown" / f"debian-reference-{src.stem}.md") for src in zh_ref]
    jobs += [(src, out / "markdown" / f"kicad-zh-{src.stem}.md") for src in zh_kicad]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda job: _pandoc(pandoc_root, *job), jobs))
    for src in sorted(sm_dir.glob("*.ipynb*")):
        nb = json.loads(_read_maybe_gz(src))
        name = src.name.removesuffix(".gz").removesuffix(".ipynb")
        (out / "markdown" / f"statsmodels-{name}.md").write_text(notebook_to_markdown(nb), encoding="utf-8")

    manifest: dict[str, object] = {"packages": {}, "files": {}}
    for deb in sorted((work / "debs").glob("*.deb")):
        manifest["packages"][deb.name.split("_")[0]] = deb.name  # type: ignore[index]
    totals: dict[str, int] = {}
    for path in sorted([*(out / "markdown").iterdir(), *(out / "html").iterdir()]):
        if path.is_file():
            data = path.read_bytes()
            rel = str(path.relative_to(out))
            manifest["files"][rel] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}  # type: ignore[index]
            totals[path.parent.name] = totals.get(path.parent.name, 0) + len(data)
    manifest["totals"] = totals
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=CORPUS)
    parser.add_argument("--work", type=Path, default=CORPUS / ".work", help="download/unpack cache")
    args = parser.parse_args(argv)
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        print("build_corpus needs apt-get and dpkg-deb (Debian/Ubuntu)", file=sys.stderr)
        return 2
    manifest = build(args.out, args.work)
    for kind, size in sorted(manifest["totals"].items()):  # type: ignore[attr-defined]
        files = sum(1 for k in manifest["files"] if k.startswith(kind + "/"))  # type: ignore[attr-defined]
        print(f"{kind}: {files} files, {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
