"""The offline tokenizer: get_encoding works with an empty tiktoken cache and no network."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import requests
import tiktoken
import tiktoken.load
import tiktoken.registry

from aisearch_ingest.chunking import StructuredChunker, get_encoding
from aisearch_ingest.chunking.tokens import tiktoken_cache_dir

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"


class NetworkUsed(AssertionError):
    pass


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fresh, empty TIKTOKEN_CACHE_DIR; tiktoken's download paths raise; no encoding cached in memory."""

    def no_network(*args: object, **kwargs: object) -> object:
        raise NetworkUsed(f"network access attempted: {args!r}")

    cache = tmp_path / "tiktoken-cache"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    monkeypatch.setattr(requests, "get", no_network)
    monkeypatch.setattr(
        tiktoken.load, "read_file", lambda path: no_network(path) if "://" in path else Path(path).read_bytes()
    )
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    get_encoding.cache_clear()
    yield cache
    get_encoding.cache_clear()


def test_the_fixture_really_blocks_the_network(offline: Path) -> None:
    # Without our seeding, tiktoken itself would try to download and fail: the fixture can catch network use.
    with pytest.raises(NetworkUsed):
        tiktoken.get_encoding("cl100k_base")


def test_get_encoding_seeds_an_empty_cache_and_returns_the_genuine_encoding(offline: Path) -> None:
    assert tiktoken_cache_dir() == str(offline)
    enc = get_encoding("cl100k_base")
    assert enc.name == "cl100k_base"
    assert enc.encode_ordinary("hello world") == [15339, 1917]
    cached = offline / hashlib.sha1(CL100K_URL.encode()).hexdigest()
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == CL100K_SHA256
    assert not list(offline.glob("*.tmp"))
    # Other libraries asking tiktoken directly now work offline too.
    assert tiktoken.get_encoding("cl100k_base") is enc
    assert get_encoding() is enc  # cached


def test_a_corrupt_cached_file_is_replaced(offline: Path) -> None:
    offline.mkdir(parents=True)
    cached = offline / hashlib.sha1(CL100K_URL.encode()).hexdigest()
    cached.write_bytes(b"garbage")
    enc = get_encoding("cl100k_base")
    assert enc.encode_ordinary("hello world") == [15339, 1917]
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == CL100K_SHA256


def test_chunker_works_offline(offline: Path) -> None:
    chunks = StructuredChunker(max_tokens=32).chunk_text("# 标题\n\n这是第一句。这是第二句。\n")
    assert chunks and chunks[0].headings == ("标题",)


def test_unbundled_encoding_gives_a_clear_error(offline: Path) -> None:
    with pytest.raises(ValueError, match="TIKTOKEN_CACHE_DIR"):
        get_encoding("o200k_base")


def test_custom_length_function_needs_no_encoding() -> None:
    chunks = StructuredChunker(max_tokens=10, length_function=len).chunk_text("abcdef ghijkl mnopqr stuvwx")
    assert all(len(c.text) == c.tokens <= 10 for c in chunks)
    assert [c.text for c in chunks] == ["abcdef", "ghijkl", "mnopqr", "stuvwx"]
