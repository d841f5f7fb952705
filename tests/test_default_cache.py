"""The default result cache: ``cache=True`` on clients, loaders and readers, and the command line caching unless told
``--no-cache``. Calls are counted by the emulator; the default file lives where ``AISEARCH_INGEST_CACHE`` says
(``conftest.py`` points it at a temporary file of each test's own: never the user's cache).
"""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path

import platformdirs
import pytest

from aisearch_ingest import DocumentAnalyzer, QwenOCR, ResultCache
from aisearch_ingest.cache import CACHE_ENV, CACHE_FILE_NAME, default_cache_path, open_cache
from aisearch_ingest.cli import main
from aisearch_ingest.emulator import Emulator
from aisearch_ingest.langchain import DocumentAnalyzeLoader, ImageAnalyzeParser
from aisearch_ingest.llama_index import DocumentAnalyzeReader, QwenOCRReader
from aisearch_ingest.testing import EMULATOR_API_KEY, use_emulator_env

DATA = Path(__file__).resolve().parents[1] / "notebooks" / "data"
KEY = EMULATOR_API_KEY


def _calls(emu: Emulator) -> int:
    return int(emu.stats.total_calls)


# --- where the default file is ---------------------------------------------------------------------------------------


def test_the_default_location_is_the_env_var_else_the_user_cache_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine.sqlite"))
    assert default_cache_path() == tmp_path / "mine.sqlite"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))  # an existing directory: results.sqlite in it
    assert default_cache_path() == tmp_path / CACHE_FILE_NAME
    monkeypatch.setenv(CACHE_ENV, "~/somewhere.sqlite")
    assert default_cache_path() == Path.home() / "somewhere.sqlite"
    monkeypatch.delenv(CACHE_ENV)
    assert default_cache_path() == platformdirs.user_cache_path("aisearch-ingest", appauthor=False) / "results.sqlite"
    monkeypatch.setenv(CACHE_ENV, "  ")  # blank counts as unset
    assert default_cache_path().parent == platformdirs.user_cache_path("aisearch-ingest", appauthor=False)


def test_open_cache_takes_true_false_a_path_or_a_cache(_private_default_cache: Path, tmp_path: Path) -> None:
    cache, owned = open_cache(True)
    assert cache is not None and owned and cache.path == _private_default_cache and _private_default_cache.exists()
    cache.close()
    assert open_cache(False) == (None, False) and open_cache(None) == (None, False)
    shared = ResultCache(tmp_path / "shared.sqlite")
    assert open_cache(shared) == (shared, False)
    shared.close()
    with pytest.raises(TypeError, match="True"):
        open_cache(1)  # type: ignore[arg-type]


# --- the library: cache=True --------------------------------------------------------------------------------------


def test_cache_true_on_a_client_reuses_entries_across_instances(emu: Emulator, _private_default_cache: Path) -> None:
    with DocumentAnalyzer(endpoint=emu.url, api_key=KEY, qps=0, cache=True) as first:
        assert first.cache is not None and first.cache.path == _private_default_cache
        parsed = first.parse(DATA / "meeting_notes.md")
    before = _calls(emu)
    with DocumentAnalyzer(endpoint=emu.url, api_key=KEY, qps=0, cache=True) as second:
        again = second.parse(DATA / "meeting_notes.md")
    assert _calls(emu) == before and again.cached and again.calls == 0 and again.content == parsed.content
    with DocumentAnalyzer(endpoint=emu.url, api_key=KEY, qps=0) as uncached:  # the library's default stays off
        assert uncached.cache is None
        assert not uncached.parse(DATA / "meeting_notes.md").cached
    assert _calls(emu) > before


def test_cache_true_on_a_qwen_client(emu: Emulator) -> None:
    with QwenOCR(base_url=emu.url, api_key=KEY, qps=0, cache=True) as ocr:
        ocr.parse(DATA / "invoice.png")
    before = _calls(emu)
    with QwenOCR(base_url=emu.url, api_key=KEY, qps=0, cache=True) as ocr:
        assert ocr.parse(DATA / "invoice.png").cached
    assert _calls(emu) == before


def test_cache_true_on_langchain_loaders_and_parsers_reuses_entries(emu: Emulator) -> None:
    files = [DATA / "meeting_notes.md", DATA / "overview.html"]
    with DocumentAnalyzeLoader(files, endpoint=emu.url, api_key=KEY, qps=0, cache=True) as loader:
        first = loader.load()
    before = _calls(emu)
    with DocumentAnalyzeLoader(files, endpoint=emu.url, api_key=KEY, qps=0, cache=True, mode="chunk") as loader:
        chunks = loader.load()  # another mode, same service options: the same cached results
    assert _calls(emu) == before
    assert {d.metadata["source"] for d in chunks} == {d.metadata["source"] for d in first}
    from langchain_core.documents.base import Blob

    blob = Blob.from_path(DATA / "invoice.png")
    with ImageAnalyzeParser(endpoint=emu.url, api_key=KEY, qps=0, cache=True) as parser:
        list(parser.lazy_parse(blob))
    before = _calls(emu)
    with ImageAnalyzeParser(endpoint=emu.url, api_key=KEY, qps=0, cache=True) as parser:
        (doc,) = parser.lazy_parse(blob)
    assert _calls(emu) == before and doc.metadata["service"] == "image-analyze"


def test_cache_true_on_llama_index_readers_reuses_entries(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch, _private_default_cache: Path
) -> None:
    monkeypatch.setenv("AISEARCH_API_KEY", KEY)  # an unpickled reader takes its key from the environment
    reader = DocumentAnalyzeReader(endpoint=emu.url, api_key=KEY, qps=0, cache=True)
    with reader:
        first = reader.load_data(DATA / "annual_report.pdf")
    assert reader.to_dict()["cache"] is True and "api_key" not in reader.to_dict()
    copy = pickle.loads(pickle.dumps(reader))  # a SimpleDirectoryReader worker: the same default file
    before = _calls(emu)
    with copy:
        again = copy.load_data(DATA / "annual_report.pdf", extra_info=None)
    assert _calls(emu) == before and [d.text for d in again] == [d.text for d in first]
    assert copy.client.cache is not None and copy.client.cache.path == _private_default_cache
    with QwenOCRReader(base_url=emu.url, api_key=KEY, qps=0, cache=True) as qwen:
        qwen.load_data(DATA / "scan_page.png")
    before = _calls(emu)
    with QwenOCRReader(base_url=emu.url, api_key=KEY, qps=0, cache=True) as qwen:
        qwen.load_data(DATA / "scan_page.png")
    assert _calls(emu) == before
    assert QwenOCRReader(cache="x.sqlite").cache == "x.sqlite" and QwenOCRReader().cache is None


def test_threads_of_several_clients_share_the_default_file(emu: Emulator) -> None:
    files = sorted(p for p in DATA.iterdir() if p.suffix in (".md", ".html", ".docx", ".pdf"))
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with DocumentAnalyzer(endpoint=emu.url, api_key=KEY, qps=0, cache=True) as client:
                for outcome in client.parse_many(files):
                    assert outcome.ok, outcome.error
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    with ResultCache(default_cache_path()) as cache:
        assert cache.stats().results == len(files) and cache.stats().tasks == 0


def test_the_default_file_never_holds_the_key(emu: Emulator, _private_default_cache: Path) -> None:
    secret = "sk-default-cache-" + "q" * 24
    with Emulator(api_key=secret) as private:
        with DocumentAnalyzer(endpoint=private.url, api_key=secret, qps=0, cache=True) as client:
            client.parse(DATA / "meeting_notes.md")
        with QwenOCR(base_url=private.url, api_key=secret, qps=0, cache=True) as ocr:
            ocr.parse(DATA / "invoice.png")
    blobs = b"".join(p.read_bytes() for p in _private_default_cache.parent.iterdir())
    assert blobs and secret.encode() not in blobs and b"default-cache-" not in blobs


# --- the command line caches by default ------------------------------------------------------------------------


@pytest.fixture
def small_data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    for name in ("meeting_notes.md", "invoice.png", "annual_report.pdf"):
        (data / name).write_bytes((DATA / name).read_bytes())
    return data


def test_the_cli_second_run_makes_no_call_by_default(
    emu: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    small_data: Path,
    tmp_path: Path,
    _private_default_cache: Path,
) -> None:
    use_emulator_env(monkeypatch, emu)
    out = tmp_path / "chunks.jsonl"
    command = ["ingest", str(small_data), "--out", str(out), "--no-progress", "--qps", "0"]

    before = _calls(emu)
    assert main(command) == 0
    first_calls = _calls(emu) - before
    first = capsys.readouterr().out
    assert first_calls > 0 and f"cache:             {_private_default_cache}" in first
    written = out.read_text(encoding="utf-8")

    before = _calls(emu)
    assert main(command) == 0
    again = capsys.readouterr().out
    assert _calls(emu) == before  # nothing billed twice
    assert "service calls:     0 (3 file(s) answered from the cache)" in again
    assert sorted(out.read_text(encoding="utf-8").splitlines()) == sorted(written.splitlines())  # as they finish

    before = _calls(emu)
    assert main([*command, "--no-cache"]) == 0
    assert _calls(emu) - before == first_calls
    assert "cache:             off" in capsys.readouterr().out

    elsewhere = tmp_path / "elsewhere" / "c.sqlite"
    before = _calls(emu)
    assert main([*command, "--cache", str(elsewhere)]) == 0
    assert _calls(emu) - before == first_calls and elsewhere.exists()
    assert f"cache:             {elsewhere}" in capsys.readouterr().out

    with pytest.raises(SystemExit):  # one or the other
        main([*command, "--cache", str(elsewhere), "--no-cache"])


def test_an_unusable_default_location_warns_and_the_run_goes_on(
    emu: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    small_data: Path,
    tmp_path: Path,
) -> None:
    use_emulator_env(monkeypatch, emu)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "results.sqlite"))
    out = tmp_path / "chunks.jsonl"
    assert main(["ingest", str(small_data / "meeting_notes.md"), "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "going on without a cache" in captured.err and CACHE_ENV in captured.err
    assert "cache:             off" in captured.out
    # An explicit --cache that cannot be opened stays a usage error.
    code = main(["ingest", str(small_data), "--out", str(out), "--cache", str(blocker / "c.sqlite"), "--no-progress"])
    assert code == 2 and "cannot open the result cache" in capsys.readouterr().err
    assert not os.path.exists(blocker / "c.sqlite")


def test_the_emulator_hint_names_each_service_s_url_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    from aisearch_ingest import ConfigurationError

    for name in ("AISEARCH_API_KEY", "AISEARCH_ENDPOINT", "DASHSCOPE_API_KEY", "DASHSCOPE_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match=r"pass `endpoint=emu\.url, api_key='test'`"):
        DocumentAnalyzer()
    with pytest.raises(ConfigurationError, match=r"pass `base_url=emu\.url, api_key='test'`") as info:
        QwenOCR()
    assert "endpoint=" not in str(info.value)
