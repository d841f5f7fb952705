"""Settings: a constructor argument wins; an environment variable is read only when the argument is ``None``.

AI Search Open Platform: ``AISEARCH_API_KEY``, ``AISEARCH_ENDPOINT`` (a host such as
``xxx-hangzhou.opensearch.aliyuncs.com`` or a URL; a bare host means HTTPS),
``AISEARCH_WORKSPACE`` (default ``default``).

Model Studio (Qwen-OCR): ``DASHSCOPE_API_KEY``; ``region="intl"`` (Singapore, default), ``"us"`` (Virginia) or
``"cn"`` (Beijing), or ``DASHSCOPE_BASE_URL`` (scheme and host only; the API paths are appended).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from .errors import ConfigurationError

__all__ = ["AISearchSettings", "DashScopeSettings", "SecretStr", "as_secret", "resolve_aisearch", "resolve_dashscope"]

logger = logging.getLogger("aisearch_ingest")

#: Model Studio hosts per region (``qwen-ocr.2026-02.en.md`` code comments and the EN API reference's endpoint table:
#: Singapore ``dashscope-intl``, US (Virginia) ``dashscope-us``, Beijing ``dashscope``).
DASHSCOPE_REGIONS = {
    "intl": "https://dashscope-intl.aliyuncs.com",
    "us": "https://dashscope-us.aliyuncs.com",
    "cn": "https://dashscope.aliyuncs.com",
}


def _emulator_hint(url_argument: str) -> str:
    """How to try a service offline; ``url_argument`` is the argument naming its URL (``endpoint`` for AI Search,
    ``base_url`` for Qwen-OCR: the other one is a ``TypeError`` on a loader and a refused field on a reader)."""
    return (
        "To try everything offline without a key, use the bundled emulator: "
        "`aisearch-ingest ingest PATH --offline`, or in Python "
        f"`from aisearch_ingest.emulator import Emulator` and pass `{url_argument}=emu.url, api_key='test'`."
    )


class SecretStr:
    """A string that never shows itself in ``repr``/``str``/logs, and refuses to be pickled.

    Use :meth:`get_secret_value` to read it. ``pickle.dumps`` (of the secret, or of anything holding it, such as the
    settings) raises ``TypeError``: a key is never serialized; a process that needs it reads it from its own
    arguments or environment. ``copy.copy``/``copy.deepcopy`` return the same (immutable) object.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "SecretStr('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretStr) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:
        raise TypeError(
            "an API key (SecretStr) is never pickled or serialized; pass the key to the other process through its "
            "own arguments or environment (AISEARCH_API_KEY / DASHSCOPE_API_KEY) and build the client there"
        )

    def __copy__(self) -> SecretStr:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> SecretStr:
        return self


def as_secret(value: str | SecretStr | None) -> SecretStr | None:
    """``value`` wrapped in a :class:`SecretStr` (a pydantic ``SecretStr`` too); ``None`` or empty gives None.

    Constructors call it first thing on their ``api_key`` argument, so no frame of theirs holds the raw key as a
    local when an error is raised (tools that record frame locals -- Sentry, ``pytest -l``, ``traceback`` with
    ``capture_locals=True`` -- would otherwise ship it)."""
    if value is None:
        return None
    if isinstance(value, SecretStr):
        return value if value.get_secret_value() else None
    if hasattr(value, "get_secret_value"):  # pydantic.SecretStr
        raw = value.get_secret_value()
        return SecretStr(raw) if raw else None
    return SecretStr(value) if value else None


_secret = as_secret


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    host = host.strip("[]").lower()
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalize_base_url(value: str, *, what: str) -> str:
    """``host`` → ``https://host``; ``http(s)://host[:port][/path]`` kept; trailing slashes removed."""
    value = value.strip()
    if not value:
        raise ConfigurationError(f"{what} is empty.")
    if "://" not in value:
        value = "https://" + value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"{what} must be a host name or an http(s) URL, got a value with scheme {parts.scheme!r}."
        )
    return value.rstrip("/")


def warn_if_plain_http(base_url: str, *, what: str) -> None:
    parts = urlsplit(base_url)
    if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
        logger.warning(
            "%s %s uses plain http://: the API key will travel unencrypted. Use https:// "
            "(a bare host name means https).",
            what,
            f"{parts.scheme}://{parts.hostname}",
        )


@dataclass(frozen=True)
class AISearchSettings:
    """Resolved settings for AI Search Open Platform."""

    api_key: SecretStr
    base_url: str
    workspace: str

    def __repr__(self) -> str:
        return f"AISearchSettings(base_url={self.base_url!r}, workspace={self.workspace!r}, api_key=**********)"


@dataclass(frozen=True)
class DashScopeSettings:
    """Resolved settings for Model Studio (DashScope)."""

    api_key: SecretStr
    base_url: str
    workspace: str | None = None
    #: the region whose host ``base_url`` is (chosen by ``region=``, or a base URL equal to a region's host); None
    #: for any other host (the emulator, a proxy, a workspace domain).
    region: str | None = None

    def __repr__(self) -> str:
        return f"DashScopeSettings(base_url={self.base_url!r}, region={self.region!r}, api_key=**********)"


def resolve_aisearch(
    api_key: str | SecretStr | None = None,
    endpoint: str | None = None,
    workspace: str | None = None,
) -> AISearchSettings:
    """Resolve AI Search settings from arguments, then ``AISEARCH_*`` environment variables.

    Raises:
        ConfigurationError: the key or the endpoint is missing, or the endpoint is malformed.
    """
    key = _secret(api_key) or _secret(os.environ.get("AISEARCH_API_KEY"))
    ep = endpoint if endpoint is not None else os.environ.get("AISEARCH_ENDPOINT")
    missing = []
    if key is None:
        missing.append("the API key (argument `api_key=` or environment variable AISEARCH_API_KEY)")
    if not ep:
        missing.append(
            "the endpoint (argument `endpoint=` or environment variable AISEARCH_ENDPOINT, e.g. "
            "'xxx-hangzhou.opensearch.aliyuncs.com' from the AI Search console's API-KEY page)"
        )
    if missing:
        raise ConfigurationError(
            "AI Search Open Platform is not configured: missing "
            + " and ".join(missing)
            + ". "
            + _emulator_hint("endpoint")
        )
    assert key is not None and ep
    base = normalize_base_url(ep, what="AISEARCH_ENDPOINT")
    warn_if_plain_http(base, what="AI Search endpoint")
    ws = workspace if workspace is not None else os.environ.get("AISEARCH_WORKSPACE") or "default"
    if not ws or "/" in ws:
        raise ConfigurationError(f"workspace {ws!r} is not a valid workspace name (e.g. 'default').")
    return AISearchSettings(api_key=key, base_url=base, workspace=ws)


def resolve_dashscope(
    api_key: str | SecretStr | None = None,
    *,
    region: Literal["intl", "us", "cn"] | str | None = None,
    base_url: str | None = None,
    workspace: str | None = None,
) -> DashScopeSettings:
    """Resolve DashScope settings: ``api_key`` else ``DASHSCOPE_API_KEY``; ``base_url`` else ``DASHSCOPE_BASE_URL``
    else the ``region`` host (``intl`` = Singapore, the default; ``us`` = Virginia; ``cn`` = Beijing).

    Raises:
        ConfigurationError: no key, an unknown region, or a malformed base URL.
    """
    key = _secret(api_key) or _secret(os.environ.get("DASHSCOPE_API_KEY"))
    if key is None:
        raise ConfigurationError(
            "Model Studio (Qwen-OCR) is not configured: missing the API key (argument `api_key=` or environment "
            "variable DASHSCOPE_API_KEY; keys of the Singapore region go with region='intl', Virginia keys with "
            "region='us', Beijing keys with region='cn'). " + _emulator_hint("base_url")
        )
    url = base_url if base_url is not None else os.environ.get("DASHSCOPE_BASE_URL")
    if url:
        base = normalize_base_url(url, what="DASHSCOPE_BASE_URL")
        path = urlsplit(base).path
        if path.endswith(("/api/v1", "/compatible-mode/v1")):
            base = base[: -len("/api/v1")] if path.endswith("/api/v1") else base[: -len("/compatible-mode/v1")]
        reg: str | None = next((code for code, host in DASHSCOPE_REGIONS.items() if host == base.lower()), None)
    else:
        reg = region or "intl"
        if reg not in DASHSCOPE_REGIONS:
            raise ConfigurationError(
                f"region must be 'intl' (Singapore), 'us' (Virginia) or 'cn' (Beijing), got {reg!r}."
            )
        base = DASHSCOPE_REGIONS[reg]
    warn_if_plain_http(base, what="DashScope base URL")
    return DashScopeSettings(api_key=key, base_url=base, workspace=workspace, region=reg)
