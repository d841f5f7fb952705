"""Settings resolution: argument wins, env var otherwise; helpful errors; no key in any repr."""

from __future__ import annotations

import logging

import pytest

from aisearch_ingest.config import SecretStr, resolve_aisearch, resolve_dashscope
from aisearch_ingest.errors import ConfigurationError

SECRET = "fake-key-for-tests-0001"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "AISEARCH_API_KEY",
        "AISEARCH_ENDPOINT",
        "AISEARCH_WORKSPACE",
        "DASHSCOPE_API_KEY",
        "DASHSCOPE_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)


def test_missing_key_and_endpoint_explains_the_fix_and_the_emulator() -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_aisearch()
    message = str(info.value)
    assert "AISEARCH_API_KEY" in message and "AISEARCH_ENDPOINT" in message
    assert "--offline" in message and "Emulator" in message


def test_env_vars_are_read_and_bare_host_means_https(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AISEARCH_API_KEY", SECRET)
    monkeypatch.setenv("AISEARCH_ENDPOINT", "xxx-hangzhou.opensearch.aliyuncs.com")
    settings = resolve_aisearch()
    assert settings.base_url == "https://xxx-hangzhou.opensearch.aliyuncs.com"
    assert settings.workspace == "default"
    assert settings.api_key.get_secret_value() == SECRET
    assert SECRET not in repr(settings) and SECRET not in str(settings.api_key)


def test_argument_wins_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AISEARCH_API_KEY", "from-env")
    monkeypatch.setenv("AISEARCH_ENDPOINT", "env.example.com")
    monkeypatch.setenv("AISEARCH_WORKSPACE", "ws-env")
    settings = resolve_aisearch("from-arg", "http://127.0.0.1:9999/", "ws-arg")
    assert settings.api_key.get_secret_value() == "from-arg"
    assert settings.base_url == "http://127.0.0.1:9999"
    assert settings.workspace == "ws-arg"


def test_plain_http_to_a_remote_host_warns_without_the_key(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="aisearch_ingest"):
        resolve_aisearch(SECRET, "http://search.example.com")
    assert any("plain http" in r.getMessage() for r in caplog.records)
    assert all(SECRET not in r.getMessage() for r in caplog.records)


def test_plain_http_to_loopback_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="aisearch_ingest"):
        resolve_aisearch("k", "http://127.0.0.1:8080")
        resolve_aisearch("k", "http://localhost:8080")
    assert not caplog.records


def test_bad_endpoint_scheme_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="scheme"):
        resolve_aisearch("k", "ftp://example.com")


def test_dashscope_regions_and_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASHSCOPE_BASE_URL", raising=False)
    assert resolve_dashscope("k").base_url == "https://dashscope-intl.aliyuncs.com"
    assert resolve_dashscope("k").region == "intl"
    assert resolve_dashscope("k", region="cn").base_url == "https://dashscope.aliyuncs.com"
    # Virginia, qwen-ocr.2026-02.en.md: "change the base_url to https://dashscope-us.aliyuncs.com/api/v1"
    us = resolve_dashscope("k", region="us")
    assert (us.base_url, us.region) == ("https://dashscope-us.aliyuncs.com", "us")
    # a base URL that is a region's host is that region; any other host is no region
    assert resolve_dashscope("k", base_url="https://dashscope-us.aliyuncs.com/api/v1").region == "us"
    assert resolve_dashscope("k", region="us", base_url="https://proxy.example").region is None
    monkeypatch.setenv("DASHSCOPE_BASE_URL", "http://127.0.0.1:1234/api/v1")
    assert resolve_dashscope("k").base_url == "http://127.0.0.1:1234"
    assert resolve_dashscope("k").region is None
    with pytest.raises(ConfigurationError, match="'us' \\(Virginia\\)"):
        resolve_dashscope("k", region="eu", base_url="")


def test_dashscope_missing_key_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="DASHSCOPE_API_KEY"):
        resolve_dashscope()


def test_secretstr_hides_itself() -> None:
    secret = SecretStr(SECRET)
    assert SECRET not in repr(secret) and SECRET not in f"{secret}"
    assert secret.get_secret_value() == SECRET
