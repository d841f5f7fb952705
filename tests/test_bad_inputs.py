"""The acceptance battery of issue 14 ("Hardening"): one batch of good files and every kind of bad input, through the
CLI (a subprocess, on the battery's emulator) and through a loader (``DocumentAnalyzeLoader`` on an emulator, over
sockets).

Every bad input is reported with its name as given and, where the client refuses it, the limit it broke; every good
file is parsed; nothing hangs; nothing is dropped. Then the CLI's own hardening: exit codes, numbering, a stale
failures file, Ctrl-C.
"""

from __future__ import annotations

import inspect
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from aisearch_ingest import DocumentAnalyzer
from aisearch_ingest.cache import CACHE_ENV
from aisearch_ingest.emulator import Emulator, Faults
from aisearch_ingest.errors import AISearchIngestError, InvalidInputError, TaskFailedError
from aisearch_ingest.sources import load_source, safe_name
from samples import pdf, png

pytest.importorskip("rapidocr", reason="offline parsing needs the `local` extra")
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="FIFOs, symlinks and byte file names are POSIX")

CAFE = os.fsdecode(b"caf\xe9.pdf")  # a Latin-1 name from an old share: not UTF-8


def _cli() -> list[str]:
    return [sys.executable, "-m", "aisearch_ingest.cli"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AISEARCH_", "DASHSCOPE_")) or k == CACHE_ENV}
    env["PYTHONIOENCODING"] = "utf-8"  # strict on purpose: an unescaped name would crash the run
    env.update(extra)
    return env


def _encrypted_pdf() -> bytes:
    from fpdf import FPDF

    document = FPDF()
    document.set_encryption(owner_password="owner", user_password="secret")
    document.add_page()
    document.set_font("helvetica", size=12)
    document.cell(0, 10, "locked")
    return bytes(document.output())


def _pdfium_pdf(pages: int) -> bytes:
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument.new()
    for _ in range(pages):
        document.new_page(72, 72)
    buffer = io.BytesIO()
    document.save(buffer)
    document.close()
    return buffer.getvalue()


def _png(size: tuple[int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, "white").save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Battery:
    folder: Path
    fifo_arg: str  # a FIFO outside the folder, named on the command line
    good_url: str
    missing_url: str
    data_uri: str
    emu: Emulator
    given: dict[str, str] = field(default_factory=dict)  # case id -> the input as given (a path, a URL...)

    def inputs(self) -> list[str]:
        return [str(self.folder), self.fifo_arg, self.good_url, self.missing_url, self.data_uri]


@pytest.fixture(scope="module")
def battery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Battery]:
    root = tmp_path_factory.mktemp("battery")
    folder = root / "batch"
    folder.mkdir()
    files = {
        "good.pdf": pdf(["Alpha: the first good page.", "Beta: the second good page."]),
        "good.png": png("Good image 2026"),
        "notes.md": b"# Notes\n\nA good markdown file.\n",
        "fake.pdf": png("Really a PNG"),  # typed from its bytes: parsed as the PNG it is
        "empty.txt": b"",
        "empty.png": b"",
        "truncated.pdf": pdf(["This PDF is cut in half."])[:300],
        "encrypted.pdf": _encrypted_pdf(),
        "zero_pages.pdf": _pdfium_pdf(0),
        "many_pages.pdf": _pdfium_pdf(10_000),
        "tiny.png": _png((5, 5)),
        "line.png": _png((1, 3000)),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.pdf"), "wb") as handle:
        handle.write(pdf(["Un fichier au nom Latin-1."]))
    with (folder / "huge.pdf").open("wb") as handle:  # 3 GB on paper, nothing on disk
        handle.truncate(3 * 1024**3)
    (folder / "loop.pdf").symlink_to("loop.pdf")
    (folder / "dangling.pdf").symlink_to("nowhere.pdf")
    (folder / "sub").mkdir()
    (folder / "sub" / "up").symlink_to("..")  # a directory loop
    os.mkfifo(folder / "pipe.pdf")
    os.mkfifo(root / "named.pdf")
    with Emulator(api_key="test") as emu:
        good_url = emu.serve_file(pdf(["Fetched from a URL."]), "remote.pdf", "application/pdf")
        battery = Battery(
            folder=folder,
            fifo_arg=str(root / "named.pdf"),
            good_url=good_url,
            missing_url=f"{emu.url}/_emulator/files/missing.pdf",
            data_uri="data:image/png;base64,@@@",
            emu=emu,
        )
        entries = [*files, "huge.pdf", "loop.pdf", "dangling.pdf", "pipe.pdf"]
        battery.given = {name: str(folder / name) for name in entries}
        battery.given.update(
            {
                CAFE: str(folder / CAFE),
                "sub/up": str(folder / "sub" / "up"),
                "named fifo": battery.fifo_arg,
                "url": good_url,
                "missing url": battery.missing_url,
                "data uri": battery.data_uri,
            }
        )
        yield battery


@dataclass(frozen=True)
class Expect:
    limit: str | None = None  # the InvalidInputError.limit of a refusal before sending
    types: tuple[type[AISearchIngestError], ...] = ()  # else: the failure's type (a service-side failure)


SERVICE_FAILED = Expect(types=(TaskFailedError,))
GOOD = ("good.pdf", "good.png", "notes.md", "fake.pdf", CAFE, "url", "tiny.png")
BAD = [
    pytest.param("empty.txt", Expect("empty"), id="empty-file"),
    pytest.param("empty.png", Expect("empty"), id="empty-png"),
    pytest.param("truncated.pdf", SERVICE_FAILED, id="truncated-pdf"),
    pytest.param("encrypted.pdf", SERVICE_FAILED, id="encrypted-pdf"),
    pytest.param("huge.pdf", Expect("max_body_bytes"), id="3gb-sparse-pdf"),
    pytest.param("loop.pdf", Expect("symlink_loop"), id="symlink-loop"),
    pytest.param("sub/up", Expect("symlink_loop"), id="directory-loop"),
    pytest.param("dangling.pdf", Expect("dangling_symlink"), id="dangling-symlink"),
    pytest.param("pipe.pdf", Expect("not_a_file"), id="fifo-in-folder"),
    pytest.param("named fifo", Expect("not_a_file"), id="fifo-named"),
    pytest.param("missing url", SERVICE_FAILED, id="url-404"),
    pytest.param("data uri", Expect("data_uri"), id="garbage-data-uri"),
    pytest.param("zero_pages.pdf", Expect("pages"), id="zero-page-pdf"),
    # a failed task (or a refusal), not a bare 500 retried six times
    pytest.param("line.png", Expect(types=(InvalidInputError, TaskFailedError)), id="1x3000-png"),
    pytest.param("many_pages.pdf", Expect("max_pages"), id="10000-page-pdf"),
]


def _supports_max_pages() -> bool:
    """Whether ``max_pages=`` exists yet (wt-h14d): the battery passes it when it does."""
    return "max_pages" in inspect.signature(DocumentAnalyzer.__init__).parameters


@dataclass
class CliRun:
    proc: subprocess.CompletedProcess[str]
    written: list[dict[str, Any]]
    failures: dict[str, dict[str, Any]]  # by "source"
    wall: float


@pytest.fixture(scope="module")
def cli_run(battery: Battery, tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    out = tmp_path_factory.mktemp("cli") / "chunks.jsonl"
    started = time.monotonic()
    # Against the battery's emulator (not --offline): its URL inputs are that emulator's own files, and an emulator
    # fetches no URL of another local service.
    proc = subprocess.run(
        [*_cli(), "ingest", *battery.inputs(), "--out", str(out), "--mode", "document", "--max-pages", "2000"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=_env(AISEARCH_API_KEY="test", AISEARCH_ENDPOINT=battery.emu.url),
        timeout=200,
    )
    wall = time.monotonic() - started
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    failures_path = out.with_name("chunks.failures.jsonl")
    records = [json.loads(line) for line in failures_path.read_text(encoding="utf-8").splitlines()]
    return CliRun(proc, written, {r["source"]: r for r in records}, wall)


def test_cli_runs_the_whole_battery_without_a_crash(cli_run: CliRun, battery: Battery) -> None:
    proc = cli_run.proc
    assert proc.returncode == 1, proc.stdout + proc.stderr  # some failed, some parsed
    # No crash of ours (the emulator may log the traceback of a file it cannot parse).
    assert "cli.py" not in proc.stderr and "UnicodeEncodeError" not in proc.stderr, proc.stderr
    assert "files parsed:" in proc.stdout and "failures (" in proc.stdout
    # Nothing dropped: every input is either written or a failure, and nothing else is.
    sources = {r["metadata"]["source"] for r in cli_run.written} | set(cli_run.failures)
    assert sources == {safe_name(g) for g in battery.given.values()}
    assert len(cli_run.failures) + len({r["metadata"]["source"] for r in cli_run.written}) == len(battery.given)
    # Lines numbered one by one, routing failures included.
    numbers = [int(line[1 : line.index("]")]) for line in proc.stderr.splitlines() if line.startswith("[")]
    assert numbers == list(range(1, len(battery.given) + 1))


@pytest.mark.parametrize("case", GOOD)
def test_cli_parses_every_good_file(cli_run: CliRun, battery: Battery, case: str) -> None:
    given = safe_name(battery.given[case])
    assert given not in cli_run.failures, cli_run.failures.get(given)
    docs = [r for r in cli_run.written if r["metadata"]["source"] == given]
    assert len(docs) == 1 and (docs[0]["text"].strip() or case == "tiny.png")  # 25 white pixels: no text


def test_cli_writes_and_shows_a_non_utf8_name_escaped(cli_run: CliRun, battery: Battery) -> None:
    shown = str(battery.folder / "caf\\xe9.pdf")
    (doc,) = [r for r in cli_run.written if r["metadata"]["source"] == shown]
    assert doc["metadata"]["file_name"] == "caf\\xe9.pdf" and doc["metadata"]["file_type"] == "pdf"
    assert f"ok     {shown}:" in cli_run.proc.stderr


@pytest.mark.parametrize(("case", "expect"), BAD)
def test_cli_reports_every_bad_input(cli_run: CliRun, battery: Battery, case: str, expect: Expect) -> None:
    given = safe_name(battery.given[case])
    record = cli_run.failures.get(given)
    assert record is not None, f"{case} not reported as a failure"
    assert given in record["error"]  # the message names the input too
    if expect.limit is not None:
        assert record["type"] == "InvalidInputError" and record.get("limit") == expect.limit, record
    else:
        assert record["type"] in {t.__name__ for t in expect.types}, record
    assert given in cli_run.proc.stdout  # in the summary


@dataclass
class LoaderRun:
    docs: list[Any]
    failures: dict[str, AISearchIngestError]
    wall: float


@pytest.fixture(scope="module")
def loader_run(battery: Battery) -> LoaderRun:
    from aisearch_ingest.langchain import DocumentAnalyzeLoader

    limits = {"max_pages": 2000} if _supports_max_pages() else {}
    loader = DocumentAnalyzeLoader(
        battery.inputs(),
        endpoint=battery.emu.url,
        api_key="test",
        service_id="ops-document-analyze-002",  # PDFs and images
        on_error="skip",
        **limits,
    )
    started = time.monotonic()
    try:
        docs = loader.load()
    finally:
        loader.close()
    return LoaderRun(docs, dict(loader.failures), time.monotonic() - started)


def test_loader_accounts_for_every_input(loader_run: LoaderRun, battery: Battery) -> None:
    sources = {d.metadata["source"] for d in loader_run.docs} | {safe_name(s) for s in loader_run.failures}
    assert sources == {safe_name(g) for g in battery.given.values()}


@pytest.mark.parametrize("case", GOOD)
def test_loader_parses_every_good_file(loader_run: LoaderRun, battery: Battery, case: str) -> None:
    given = battery.given[case]
    assert given not in loader_run.failures, loader_run.failures.get(given)
    docs = [d for d in loader_run.docs if d.metadata["source"] == safe_name(given)]
    assert len(docs) == 1 and (docs[0].page_content.strip() or case == "tiny.png")  # 25 white pixels: no text
    json.dumps(docs[0].metadata, ensure_ascii=False).encode("utf-8")  # JSON- and UTF-8-safe, whatever the name


@pytest.mark.parametrize(("case", "expect"), BAD)
def test_loader_reports_every_bad_input(loader_run: LoaderRun, battery: Battery, case: str, expect: Expect) -> None:
    given = battery.given[case]
    error = loader_run.failures.get(given)  # keyed by the input exactly as given
    assert error is not None, f"{case} not in failures"
    assert given in str(error)
    if expect.limit is not None:
        assert isinstance(error, InvalidInputError) and error.limit == expect.limit, repr(error)
    else:
        assert isinstance(error, expect.types), repr(error)


# -- one input at a time ---------------------------------------------------------------------------------------------


def test_a_fifo_is_refused_without_opening_it(tmp_path: Path) -> None:
    fifo = tmp_path / "stream.pdf"
    os.mkfifo(fifo)
    with pytest.raises(InvalidInputError) as info:
        load_source(str(fifo))  # would block for ever in open()
    assert info.value.limit == "not_a_file" and info.value.value == "fifo" and str(fifo) in str(info.value)


def test_a_socket_in_a_folder_is_reported(tmp_path: Path) -> None:
    from aisearch_ingest.sources import expand_inputs

    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        (item,) = list(expand_inputs(str(tmp_path)))
        with pytest.raises(InvalidInputError) as info:
            load_source(item)
    assert info.value.limit == "not_a_file" and info.value.value == "socket"


def test_a_llama_index_reader_on_the_local_filesystem_reports_a_fifo(tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    from aisearch_ingest.llama_index import DocumentAnalyzeReader

    fifo = tmp_path / "feed.pdf"
    os.mkfifo(fifo)
    (tmp_path / "ok.md").write_text("# Fine\n\nReadable.\n")
    with Emulator(api_key="test") as emu:
        reader = DocumentAnalyzeReader(endpoint=emu.url, api_key="test", on_error="skip")
        try:  # the fs SimpleDirectoryReader passes by default
            docs = reader.load_data([fifo, tmp_path / "ok.md"], fs=fsspec.filesystem("file"))
        finally:
            reader.close()
    assert [d.metadata["file_name"] for d in docs] == ["ok.md"]
    ((source, error),) = reader.failures
    assert source == str(fifo) and isinstance(error, InvalidInputError) and error.limit == "not_a_file"


def test_a_non_utf8_name_is_sent_with_a_utf8_name_keeping_its_suffix(tmp_path: Path) -> None:
    with open(os.path.join(os.fsencode(tmp_path), b"r\xe9sum\xe9.md"), "wb") as handle:
        handle.write(b"# R\n\ntext\n")
    (item,) = [str(p) for p in tmp_path.iterdir()]
    source = load_source(item)
    assert source.origin == item and source.file_name == "r\\xe9sum\\xe9.md" and source.file_type == "md"
    source.file_name.encode("utf-8")
    with Emulator(api_key="test") as emu, DocumentAnalyzer(endpoint=emu.url, api_key="test") as analyzer:
        result = analyzer.parse(item)
    assert result.source == item and "text" in result.content
    assert json.loads(json.dumps(result.to_dict(), ensure_ascii=False))["source"] == safe_name(item)


# -- the CLI's exit codes, numbering, failures file and Ctrl-C -------------------------------------------------------


def _ingest(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_cli(), "ingest", *args, "--no-progress"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env or _env(),
        timeout=120,
    )


def test_exit_codes_all_failed_3_usage_2_and_in_help(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"")
    (tmp_path / "b.png").write_bytes(b"")
    (tmp_path / "c.md").write_bytes(b"")
    out = tmp_path / "out.jsonl"
    proc = _ingest(str(tmp_path / "a.txt"), str(tmp_path / "b.png"), str(tmp_path / "c.md"), "--offline", "--out",
                   str(out))  # fmt: skip
    assert proc.returncode == 3, proc.stdout + proc.stderr
    # Three routing failures, numbered [1] [2] [3] (not [3] [3] [3]).
    assert [line.split()[0] for line in proc.stderr.splitlines() if line.startswith("[")] == ["[1]", "[2]", "[3]"]
    (tmp_path / "empty-folder").mkdir()
    assert _ingest(str(tmp_path / "empty-folder"), "--offline", "--out", str(out)).returncode == 2  # no files
    assert _ingest(str(tmp_path / "a.txt"), "--out", str(out), "--mode", "nonsense").returncode == 2  # usage
    help_text = subprocess.run([*_cli(), "ingest", "--help"], capture_output=True, text=True, env=_env()).stdout
    assert "exit codes:" in help_text and "130" in help_text and "every file failed" in help_text


def test_a_stale_failures_file_never_outlives_its_run(tmp_path: Path) -> None:
    (tmp_path / "ok.md").write_text("# Fine\n\nAll good.\n")
    out = tmp_path / "out.jsonl"
    stale = tmp_path / "out.failures.jsonl"
    stale.write_text('{"source": "old.pdf", "error": "from a run that was killed"}\n')
    proc = _ingest(str(tmp_path / "ok.md"), "--offline", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not stale.exists()
    stale.write_text('{"source": "old.pdf", "error": "from a run that was killed"}\n')
    (tmp_path / "bad.md").write_bytes(b"")
    proc = _ingest(str(tmp_path / "ok.md"), str(tmp_path / "bad.md"), "--offline", "--out", str(out))
    assert proc.returncode == 1
    (record,) = [json.loads(line) for line in stale.read_text().splitlines()]
    assert record["source"] == str(tmp_path / "bad.md") and record["limit"] == "empty"
    assert not list(tmp_path.glob("*.partial"))


def test_ctrl_c_prints_the_summary_exits_130_and_leaves_a_resumable_cache(tmp_path: Path) -> None:
    from aisearch_ingest.cache import ResultCache

    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        (data / f"ok{i}.md").write_text(f"# Doc {i}\n\nText number {i}.\n")
    (data / "stuck.md").write_text("# Stuck\n\nThis task never ends.\n")
    out, cache = tmp_path / "out.jsonl", tmp_path / "cache.sqlite"
    with Emulator(api_key="test", faults=Faults(hang_names=("stuck",))) as emu:
        env = _env(AISEARCH_API_KEY="test", AISEARCH_ENDPOINT=emu.url)
        proc = subprocess.Popen(
            [*_cli(), "ingest", str(data), "--out", str(out), "--cache", str(cache), "--no-progress", "--qps", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=env,
        )
        try:
            assert proc.stderr is not None
            seen = []
            while len([line for line in seen if "] ok" in line]) < 3:
                line = proc.stderr.readline()
                assert line, "".join(seen)
                seen.append(line)
            time.sleep(0.3)  # the stuck task is being polled
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr, stderr
    assert "files parsed:      3" in stdout and "files not finished: 1" in stdout
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and all(json.loads(line)["text"] for line in lines)  # whole lines only
    assert not (tmp_path / "out.failures.jsonl").exists()
    with ResultCache(cache) as stored:
        stats = stored.stats()
    assert stats.results == 3 and stats.tasks == 1  # the stuck file's task: the next run polls it again
