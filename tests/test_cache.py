"""The result cache and resumable runs, against the emulator over real sockets.

Nothing of ours is patched: interruptions are real (a short poll deadline, a cancelled task), vanished tasks come from
a fresh emulator, failures from the emulator's fault knobs, and calls are counted by the emulator.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from aisearch_ingest import (
    ConfigurationError,
    DocumentAnalyzer,
    ImageAnalyzer,
    Page,
    ParseResult,
    PollPolicy,
    QwenOCR,
    ResultCache,
    TaskFailedError,
    TaskTimeoutError,
    load_source,
)
from aisearch_ingest.cache import cache_key, endpoint_host
from aisearch_ingest.cli import main
from aisearch_ingest.documents import result_metadata
from aisearch_ingest.emulator import Emulator, Faults, Latency
from aisearch_ingest.testing import EMULATOR_API_KEY, use_emulator_env
from samples import pdf as _pdf
from samples import png as _png

KEY = EMULATOR_API_KEY
FAST = PollPolicy(min_interval=0.05, max_interval=0.1, timeout=30)
MD = b"# Quarterly notes\n\nRevenue grew.\n\n## Costs\n\n| item | eur |\n|---|---|\n| rent | 10 |\n"


def _doc(emu: Emulator, cache: Any, **kwargs: Any) -> DocumentAnalyzer:
    kwargs.setdefault("poll", FAST)
    kwargs.setdefault("api_key", KEY)
    kwargs.setdefault("qps", 0)  # no client-side spacing: the timings below are the emulator's
    return DocumentAnalyzer(endpoint=emu.url, cache=cache, **kwargs)


def _creates(emu: Emulator) -> int:
    return int(emu.stats.calls_by_route.get("document-analyze/async", 0))


def _polls(emu: Emulator) -> int:
    return int(emu.stats.calls_by_route.get("document-analyze/task-status", 0))


@pytest.fixture
def emu(aisearch_emulator: Emulator) -> Emulator:
    """The session emulator, reset around the test (fresh stats, default knobs)."""
    return aisearch_emulator


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "results.sqlite"  # the missing parent is created


# --- serialisation and keys (no HTTP) -----------------------------------------------------------------------------


def test_parse_result_round_trips_through_json() -> None:
    result = ParseResult(
        source="dir/a.pdf",
        file_name="a.pdf",
        file_type="pdf",
        service="qwen-ocr",
        service_id="qwen-vl-ocr-latest",
        content="one\n\ntwo",
        content_type="plain",
        page_num=2,
        pages=[Page(1, "one", {"words_info": [{"text": "one", "location": [1, 2, 3, 4]}]}), Page(2, "two")],
        usage={"input_tokens": 12, "image_tokens": 7, "seconds": 0.25},
        request_id="r-1",
        task_id=None,
        latency=1.5,
        calls=2,
        source_sha256="ab" * 32,
        ocr_task="advanced_recognition",
        extra={"words_info": [{"text": "one", "page": 1}], "api": "native", "kv": {"nested": [1, 2.5, None]}},
    )
    back = ParseResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back == result
    assert type(back.usage["seconds"]) is float and type(back.usage["input_tokens"]) is int
    with pytest.raises(ValueError, match="schema"):
        ParseResult.from_dict({**result.to_dict(), "schema": 999})
    with pytest.raises(ValueError):
        ParseResult.from_dict({"schema": 1, "source": "x"})


def test_key_covers_bytes_type_options_and_service_but_not_the_name() -> None:
    ident = {
        "service": "document-analyze",
        "service_id": "ops-document-analyze-001",
        "endpoint": endpoint_host("https://h.example.com"),
        "workspace": "default",
        "options": {"image_storage": None, "enable_semantic": None},
    }
    base = cache_key(ident, load_source(MD, file_name="a.md"))
    assert base == cache_key(ident, load_source(MD, file_name="other-name.md"))
    assert base == cache_key(
        {**ident, "endpoint": endpoint_host("http://H.example.com:8080/")}, load_source(MD, file_name="a.md")
    )
    different = [
        cache_key(ident, load_source(MD + b" ", file_name="a.md")),
        cache_key(ident, load_source(MD, file_name="a.txt")),  # same bytes sent as another type
        cache_key({**ident, "options": {"enable_semantic": True}}, load_source(MD, file_name="a.md")),
        cache_key({**ident, "service_id": "ops-document-analyze-002"}, load_source(MD, file_name="a.md")),
        cache_key({**ident, "workspace": "other"}, load_source(MD, file_name="a.md")),
        cache_key({**ident, "endpoint": "h2.example.com"}, load_source(MD, file_name="a.md")),
        cache_key(ident, load_source("https://example.com/a.md")),
    ]
    assert base not in different and len(set(different)) == len(different)


def test_a_bad_path_is_a_clear_error_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot open the result cache"):
        ResultCache(tmp_path)  # a directory
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all " * 100)
    with pytest.raises(ConfigurationError, match=r"junk\.sqlite"):
        DocumentAnalyzer(endpoint="http://127.0.0.1:9", api_key=KEY, cache=junk)
    with pytest.raises(TypeError):
        DocumentAnalyzer(endpoint="http://127.0.0.1:9", api_key=KEY, cache=42)  # type: ignore[arg-type]


# --- (a) a second parse costs nothing -----------------------------------------------------------------------------


def test_second_parse_of_the_same_bytes_makes_no_call(emu: Emulator, db: Path) -> None:
    pdf = _pdf(["First page about revenue.", "Second page about costs."])
    with _doc(emu, db) as analyzer:
        first = analyzer.parse(pdf, file_name="report.pdf")
        calls = emu.stats.total_calls
        assert first.calls == calls >= 2 and not first.cached
        again = analyzer.parse(pdf, file_name="copy-of-report.pdf")
        assert emu.stats.total_calls == calls  # nothing sent
    assert again.cached and again.calls == 0
    assert again.content == first.content and again.pages == first.pages and again.page_num == 2
    assert again.usage == first.usage and again.request_id == first.request_id and again.task_id == first.task_id
    assert again.source == "copy-of-report.pdf" and again.file_name == "copy-of-report.pdf"  # this call's input
    meta_first, meta_again = result_metadata(first), result_metadata(again)
    assert {**meta_again, "source": "", "file_name": ""} == {**meta_first, "source": "", "file_name": ""}
    with ResultCache(db) as cache:
        assert cache.stats().results == 1 and cache.stats().tasks == 0


def test_other_options_or_other_bytes_miss(emu: Emulator, db: Path) -> None:
    with _doc(emu, db) as analyzer:
        analyzer.parse(MD, file_name="a.md")
    with _doc(emu, db, enable_semantic=True) as other_options:
        miss = other_options.parse(MD, file_name="a.md")
    with _doc(emu, db) as analyzer:
        other_bytes = analyzer.parse(MD + b"\nMore.\n", file_name="a.md")
        hit = analyzer.parse(MD, file_name="a.md")
    assert not miss.cached and miss.calls >= 2 and not other_bytes.cached and other_bytes.calls >= 2
    assert hit.cached and hit.calls == 0
    assert _creates(emu) == 3


def test_image_analyze_sync_results_are_cached(emu: Emulator, db: Path) -> None:
    pytest.importorskip("rapidocr", reason="the emulator's image OCR needs the `local` extra")
    png = _png("Cache me 42")
    with ImageAnalyzer(endpoint=emu.url, api_key=KEY, service_id="ops-image-analyze-ocr-001", cache=db) as analyzer:
        first = analyzer.parse(png, file_name="a.png")
        again = analyzer.parse(png, file_name="a.png")
    assert emu.stats.calls_by_route == {"image-analyze/sync": 1}
    assert again.cached and again.content == first.content and "Cache" in again.content


# --- (b) a task in flight is resumed, not created again -----------------------------------------------------------


def test_a_timed_out_task_is_resumed_by_the_next_client(emu: Emulator, db: Path) -> None:
    emu.set_latency(Latency(fixed=1.0))
    short = PollPolicy(min_interval=0.05, max_interval=0.05, timeout=0.2)
    with _doc(emu, db, poll=short) as analyzer, pytest.raises(TaskTimeoutError) as info:
        analyzer.parse(MD, file_name="slow.md")
    stale = info.value.task_id
    assert stale and _creates(emu) == 1
    with ResultCache(db) as cache:
        assert cache.stats().tasks == 1
    emu.reset_stats()
    with _doc(emu, db) as resumed:  # a new client, as a new run would build
        result = resumed.parse(MD, file_name="slow.md")
    assert _creates(emu) == 0 and _polls(emu) >= 1
    assert result.task_id == stale and "Quarterly notes" in result.content and not result.cached
    assert result.calls == _polls(emu)
    with ResultCache(db) as cache:
        assert cache.stats().tasks == 0 and cache.stats().results == 1


async def test_a_cancelled_run_leaves_its_task_to_resume(emu: Emulator, db: Path) -> None:
    emu.set_latency(Latency(fixed=1.0))
    analyzer = _doc(emu, db)
    watcher = ResultCache(db)
    try:
        run = asyncio.ensure_future(analyzer.aparse(MD, file_name="cancelled.md"))
        for _ in range(500):  # until the create call has answered and its task is recorded
            if watcher.stats().tasks:
                break
            await asyncio.sleep(0.01)
        run.cancel()  # like Ctrl-C while polling
        with pytest.raises(asyncio.CancelledError):
            await run
    finally:
        await analyzer.aclose()
    assert _creates(emu) == 1
    (recorded,) = watcher.in_flight().values()
    async with _doc(emu, db) as again:
        result = await again.aparse(MD, file_name="cancelled.md")
        assert _creates(emu) == 1  # still the one task
        assert (await again.aparse(MD, file_name="cancelled.md")).cached
    assert result.task_id == recorded.task_id and not result.cached
    assert watcher.in_flight() == {}
    watcher.close()


def test_the_cli_resumes_the_tasks_of_an_interrupted_run(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_emulator_env(monkeypatch, emu)
    src = tmp_path / "docs"
    src.mkdir()
    (src / "a.md").write_bytes(MD)
    (src / "b.md").write_bytes(MD + b"\nB.\n")
    cache, out = tmp_path / "c.sqlite", tmp_path / "out.jsonl"
    emu.set_latency(Latency(fixed=1.0))
    args = ["ingest", str(src), "--out", str(out), "--cache", str(cache), "--no-progress"]
    assert main([*args, "--timeout", "0.2"]) == 3  # both time out (every file failed): the "crash"
    assert _creates(emu) == 2
    emu.reset_stats()
    assert main(args) == 0
    assert _creates(emu) == 0 and _polls(emu) >= 2
    assert len(out.read_text(encoding="utf-8").splitlines()) >= 2
    capsys.readouterr()


# --- (c) a task the service forgot is submitted afresh ------------------------------------------------------------


def test_a_vanished_task_is_submitted_afresh(db: Path) -> None:
    short = PollPolicy(min_interval=0.05, max_interval=0.05, timeout=0.15)
    with (
        Emulator(api_key=KEY, latency=Latency(fixed=5.0)) as first,
        _doc(first, db, poll=short) as analyzer,
        pytest.raises(TaskTimeoutError) as info,
    ):
        analyzer.parse(MD, file_name="gone.md")
    stale = info.value.task_id
    with ResultCache(db) as cache:
        assert cache.stats().tasks == 1
    with Emulator(api_key=KEY) as fresh:  # same host, no memory of the task (as after it expired)
        with _doc(fresh, db) as analyzer:
            result = analyzer.parse(MD, file_name="gone.md")
        stats = fresh.stats
    assert stats.calls_by_route.get("document-analyze/async") == 1
    assert stats.responses_by_status.get(404) == 1  # the one poll of the stale task
    assert result.task_id and result.task_id != stale and "Quarterly notes" in result.content
    with ResultCache(db) as cache:
        assert cache.stats().tasks == 0 and cache.stats().results == 1


# --- (d) failures are not cached ----------------------------------------------------------------------------------


def test_a_failed_task_is_not_cached_and_is_retried(db: Path) -> None:
    with Emulator(api_key=KEY, faults=Faults(fail_names=["-fail"])) as emu:
        with _doc(emu, db) as analyzer:
            for _ in range(2):
                with pytest.raises(TaskFailedError):
                    analyzer.parse(MD, file_name="x-fail.md")
        assert _creates(emu) == 2  # the second run tried again
    with ResultCache(db) as cache:
        assert cache.stats().results == 0 and cache.stats().tasks == 0


def test_a_recorded_task_that_failed_meanwhile_is_submitted_afresh(emu: Emulator, db: Path) -> None:
    emu.set_latency(Latency(fixed=1.0))
    emu.inject("task_fail")  # the first task created ends in FAIL
    short = PollPolicy(min_interval=0.05, max_interval=0.05, timeout=0.1)
    with _doc(emu, db, poll=short) as analyzer, pytest.raises(TaskTimeoutError):
        analyzer.parse(MD, file_name="flaky.md")
    emu.set_latency(None)
    emu.reset_stats()
    with _doc(emu, db) as analyzer:
        result = analyzer.parse(MD, file_name="flaky.md")
    assert _creates(emu) == 1 and "Quarterly notes" in result.content
    with ResultCache(db) as cache:
        assert cache.stats() == cache.stats().__class__(results=1, tasks=0)


# --- (e) Qwen-OCR -------------------------------------------------------------------------------------------------


def test_qwen_ocr_results_are_cached(emu: Emulator, db: Path) -> None:
    pytest.importorskip("rapidocr", reason="the emulator's OCR needs the `local` extra")
    png = _png("Cache me 42")
    with QwenOCR(base_url=emu.url, api_key=KEY, task="advanced_recognition", cache=db, qps=0) as ocr:
        first = ocr.parse(png, file_name="a.png")
        again = ocr.parse(png, file_name="b.png")
    with QwenOCR(base_url=emu.url, api_key=KEY, task="text_recognition", cache=db, qps=0) as other_task:
        miss = other_task.parse(png, file_name="a.png")
    assert emu.stats.calls_by_route == {"dashscope/generation": 2}
    assert first.calls == 1 and again.cached and again.calls == 0 and not miss.cached
    assert again.content == first.content and again.pages == first.pages and again.extra == first.extra
    assert again.extra["words_info"] and again.usage == first.usage and again.ocr_task == "advanced_recognition"


# --- (f) the CLI ----------------------------------------------------------------------------------------------------


def test_cli_second_run_makes_no_call_and_writes_the_same_ids(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_emulator_env(monkeypatch, emu)
    src = tmp_path / "docs"
    src.mkdir()
    (src / "notes.md").write_bytes(MD)
    (src / "report.pdf").write_bytes(_pdf(["Alpha page.", "Beta page."]))
    cache = tmp_path / "c.sqlite"

    def run(out: Path) -> tuple[list[str], str]:
        assert main(["ingest", str(src), "--out", str(out), "--cache", str(cache), "--no-progress"]) == 0
        ids = [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()]
        return sorted(ids), capsys.readouterr().out

    ids1, text1 = run(tmp_path / "one.jsonl")
    assert emu.stats.total_calls >= 4 and "from the cache" not in text1
    emu.reset_stats()
    ids2, text2 = run(tmp_path / "two.jsonl")
    assert emu.stats.total_calls == 0
    assert ids1 == ids2 and ids1
    assert "service calls:     0 (2 file(s) answered from the cache)" in text2


def test_cli_offline_runs_share_the_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Each --offline run starts its own emulator on another port: the key leaves the port out, so the second hits.
    src = tmp_path / "docs"
    src.mkdir()
    (src / "notes.md").write_bytes(MD)
    args = ["ingest", str(src), "--offline", "--cache", str(tmp_path / "c.sqlite"), "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "1.jsonl")]) == 0
    assert "answered from the cache" not in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "2.jsonl")]) == 0
    assert "service calls:     0 (1 file(s) answered from the cache)" in capsys.readouterr().out


def test_cli_reports_a_bad_cache_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.md").write_bytes(MD)
    code = main(["ingest", str(tmp_path / "notes.md"), "--offline", "--cache", str(tmp_path), "--out", "x.jsonl"])
    assert code == 2 and "cannot open the result cache" in capsys.readouterr().err


# --- adapters -------------------------------------------------------------------------------------------------------


def test_langchain_loader_passes_the_cache_to_its_client(emu: Emulator, db: Path) -> None:
    from aisearch_ingest.langchain import DocumentAnalyzeLoader

    loader = DocumentAnalyzeLoader(MD, endpoint=emu.url, api_key=KEY, cache=db, poll=FAST)
    try:
        first = loader.load()
        calls = emu.stats.total_calls
        again = loader.load()
        assert isinstance(loader.client.cache, ResultCache) and loader.client.cache.path == db
    finally:
        loader.close()
    assert calls >= 2 and emu.stats.total_calls == calls
    assert [d.id for d in again] == [d.id for d in first] and again[0].page_content == first[0].page_content


def test_llama_index_reader_takes_a_cache_path(emu: Emulator, db: Path) -> None:
    from aisearch_ingest.llama_index import DocumentAnalyzeReader

    reader = DocumentAnalyzeReader(endpoint=emu.url, api_key=KEY, cache=db)
    try:
        first = reader.load_data(MD)
        calls = emu.stats.total_calls
        again = reader.load_data(MD)
    finally:
        reader.close()
    assert calls >= 2 and emu.stats.total_calls == calls and again[0].id_ == first[0].id_


# --- (g) no key in the file; failures of the cache never lose a parse ----------------------------------------------


def test_the_api_key_is_nowhere_in_the_cache_files(tmp_path: Path) -> None:
    secret = "sk-cache-canary-5f3e9a1c77"
    db = tmp_path / "c.sqlite"
    short = PollPolicy(min_interval=0.05, max_interval=0.05, timeout=0.1)
    with Emulator(api_key=secret, faults=Faults(hang_names=["pending"])) as emu:
        cache = ResultCache(db)
        with _doc(emu, cache, api_key=secret, poll=short) as analyzer, pytest.raises(TaskTimeoutError):
            analyzer.parse(MD, file_name="pending.md")  # an in-flight row
        with _doc(emu, cache, api_key=secret) as analyzer:
            analyzer.parse(MD + b"x", file_name="done.md")  # a finished row
        assert cache.stats() == cache.stats().__class__(results=1, tasks=1)
        files = sorted(tmp_path.glob("c.sqlite*"))  # the WAL holds the writes while the cache is open
        blobs = [f.read_bytes() for f in files]
        cache.close()
        blobs.append(db.read_bytes())
    assert any(len(b) for b in blobs)
    for needle in (secret.encode(), base64.b64encode(secret.encode()), secret[::-1].encode()):
        assert not any(needle in blob for blob in blobs)
    assert secret not in repr(cache)


def test_a_cache_that_breaks_later_does_not_lose_the_parse(
    emu: Emulator, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ResultCache(db)
    with _doc(emu, cache) as analyzer:
        cache.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        db.write_bytes(b"garbage, not SQLite " * 200)  # it is opened again on next use, and fails
        with caplog.at_level(logging.WARNING, logger="aisearch_ingest"):
            result = analyzer.parse(MD, file_name="a.md")
            again = analyzer.parse(MD, file_name="a.md")
    assert "Quarterly notes" in result.content and not result.cached and not again.cached
    warnings = [r for r in caplog.records if "result cache" in r.getMessage()]
    assert len(warnings) == 1  # once per client, then DEBUG


def test_an_unreadable_entry_is_a_miss_and_is_replaced(emu: Emulator, db: Path) -> None:
    with _doc(emu, db) as analyzer:
        analyzer.parse(MD, file_name="a.md")
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE results SET result = '{\"schema\": 999}'")
    raw.close()
    with _doc(emu, db) as analyzer:
        miss = analyzer.parse(MD, file_name="a.md")
        hit = analyzer.parse(MD, file_name="a.md")
    assert not miss.cached and hit.cached and _creates(emu) == 2


# --- (h) threads and processes sharing one file ---------------------------------------------------------------------


def test_two_clients_in_two_threads_share_one_file(emu: Emulator, db: Path) -> None:
    docs = [f"# Doc {i}\n\nBody {i}.\n".encode() for i in range(12)]
    errors: list[BaseException] = []

    def work(order: list[bytes]) -> None:
        try:
            with _doc(emu, db, max_concurrency=6, qps=0) as analyzer:  # its own connection to the file
                for outcome in analyzer.parse_many(order):
                    assert outcome.ok, outcome.error
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(docs,)), threading.Thread(target=work, args=(docs[::-1],))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    with ResultCache(db) as cache:
        assert cache.stats().results == 12 and cache.stats().tasks == 0
        raw = sqlite3.connect(db)
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        raw.close()
    emu.reset_stats()
    with _doc(emu, db) as analyzer:
        assert all(o.result is not None and o.result.cached for o in analyzer.parse_many(docs))
    assert emu.stats.total_calls == 0


_WRITER = """
import sys
from aisearch_ingest import ParseResult, ResultCache
path, tag = sys.argv[1], sys.argv[2]
with ResultCache(path) as cache:
    for i in range(150):
        r = ParseResult(source=f"{tag}{i}", file_name="f", file_type="md", service="document-analyze",
                        service_id="s", content="x" * 2000, content_type="html")
        cache.put(f"{tag}-{i}", r)
        cache.put_task(f"t-{tag}-{i}", "task")
        assert cache.get(f"{tag}-{i}") == r
        cache.forget_task(f"t-{tag}-{i}")
"""


def test_processes_and_threads_write_one_file_together(db: Path) -> None:
    ResultCache(db).close()  # created first, as a CLI run would
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(db), tag]) for tag in ("p", "q")]
    shared = ResultCache(db)
    failures: list[BaseException] = []

    def hammer(tag: str) -> None:
        try:
            for i in range(150):
                r = ParseResult(source=tag, file_name="f", file_type="md", service="s", service_id="s", content=tag,
                                content_type="html")  # fmt: skip
                shared.put(f"{tag}-{i}", r)
                assert shared.get(f"{tag}-{i}") == r
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=hammer, args=(tag,)) for tag in ("t1", "t2", "t3")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    codes = [proc.wait(60) for proc in procs]
    assert codes == [0, 0] and not failures, failures
    assert shared.stats().results == 5 * 150 and shared.stats().tasks == 0
    shared.close()


def test_the_docstring_examples_run() -> None:
    import doctest

    from aisearch_ingest import cache as cache_module
    from aisearch_ingest import results as results_module

    for module in (cache_module, results_module):
        outcome = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert outcome.failed == 0 and outcome.attempted > 0, module.__name__
