"""A content-addressed SQLite cache of parse results and of asynchronous tasks in flight.

Parsing costs money: the same bytes sent twice with the same options are billed twice. A :class:`ResultCache` keeps

* **finished results**: the whole :class:`~aisearch_ingest.results.ParseResult` (as JSON, losslessly), keyed by
  what makes the answer what it is -- a second parse of the same bytes with the same options is answered from the
  file with no HTTP call;
* **tasks in flight**: the task id of every document-analyze (or async image-analyze) task, recorded as soon as the
  create call answers and removed when the task ends -- a run stopped by a crash or Ctrl-C is resumed by polling
  the same task instead of creating (and paying for) a new one.

The key (:func:`cache_key`) is the sha256 of a canonical JSON of: the service, the service id or model, the
endpoint's host name and the workspace, every request option that changes the result (sorted), the file type sent,
and the source's content sha256 (or its full URL for a URL source: only the hash is kept, and the stored result
carries the URL without its query, see :func:`~aisearch_ingest.sources.redact_url`). The API key is never part of
it, and nothing derived from a key is stored. The port and scheme of the endpoint are left out: they do not change
what the service answers, and a local emulator restarted on another port keeps its cache.

The store is one SQLite file in WAL mode: several threads (one connection per :class:`ResultCache`, guarded by a
lock) and several processes (SQLite's own locking, with a busy timeout) may share it; every write is one short
transaction. Delete the file to clear the cache.

``cache=True`` (on a client, a LangChain loader or parser, a LlamaIndex reader) opens the default file,
:func:`default_cache_path`: ``$AISEARCH_INGEST_CACHE`` when set, else ``results.sqlite`` in the user's cache directory
(``~/.cache/aisearch-ingest`` on Linux, ``~/Library/Caches/aisearch-ingest`` on macOS,
``%LOCALAPPDATA%\\aisearch-ingest\\Cache`` on Windows). The command line caches there unless told ``--no-cache``.

Example:
    >>> from aisearch_ingest import DocumentAnalyzer
    >>> from aisearch_ingest.emulator import Emulator
    >>> with Emulator() as emu, DocumentAnalyzer(endpoint=emu.url, api_key="test",
    ...                                          cache="parse-cache.sqlite") as analyzer:  # doctest: +SKIP
    ...     first = analyzer.parse("report.pdf")   # create + polls, stored
    ...     again = analyzer.parse("report.pdf")   # from the file: again.cached, again.calls == 0
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigurationError
from .results import ParseResult
from .sources import Source

__all__ = [
    "CACHE_ENV",
    "CACHE_FILE_NAME",
    "CACHE_KEY_VERSION",
    "CacheLike",
    "CacheStats",
    "InFlightTask",
    "ResultCache",
    "cache_key",
    "default_cache_path",
    "endpoint_host",
    "open_cache",
]

logger = logging.getLogger("aisearch_ingest.cache")

#: Part of every key: bump it when the key's contents change meaning, so old entries are never misread.
CACHE_KEY_VERSION = 1

#: The environment variable naming the default cache file (or a directory to keep ``results.sqlite`` in).
CACHE_ENV = "AISEARCH_INGEST_CACHE"
#: The default cache file's name in the user's cache directory.
CACHE_FILE_NAME = "results.sqlite"

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    created_at REAL NOT NULL,
    result TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    key TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


def default_cache_path() -> Path:
    """The cache file ``cache=True`` and the command line use.

    ``$AISEARCH_INGEST_CACHE`` when set (``~`` expanded; an existing directory means ``results.sqlite`` in it), else
    ``results.sqlite`` in the user's cache directory (``platformdirs.user_cache_path("aisearch-ingest")``). Nothing
    is created here: the file and its directory are made when the cache is opened.

    Example:
        >>> import os
        >>> os.environ["AISEARCH_INGEST_CACHE"] = "/tmp/project-cache.sqlite"
        >>> str(default_cache_path())
        '/tmp/project-cache.sqlite'
        >>> del os.environ["AISEARCH_INGEST_CACHE"]
        >>> default_cache_path().name
        'results.sqlite'
    """
    configured = os.environ.get(CACHE_ENV, "").strip()
    if configured:
        path = Path(configured).expanduser()
        return path / CACHE_FILE_NAME if path.is_dir() else path
    import platformdirs  # only when the default is asked for: `import aisearch_ingest` stays light

    return platformdirs.user_cache_path("aisearch-ingest", appauthor=False) / CACHE_FILE_NAME


def endpoint_host(url: str) -> str:
    """The lowercase host name of an endpoint or base URL, without scheme, port or path.

    Example:
        >>> endpoint_host("https://Example.opensearch.aliyuncs.com:443/")
        'example.opensearch.aliyuncs.com'
        >>> endpoint_host("http://127.0.0.1:8765")
        '127.0.0.1'
    """
    parts = urlsplit(url if "://" in url else f"//{url}")
    return (parts.hostname or url).lower()


def cache_key(identity: Mapping[str, Any], source: Source) -> str:
    """The cache key of one source under one client configuration.

    Args:
        identity: what the client contributes: ``service``, ``service_id`` (or ``model``), ``endpoint`` (a host
            name), ``workspace`` and ``options`` (the request options that change the result; ``None`` values mean
            "not sent" and are dropped). Never an API key.
        source: the prepared input: its file type and its bytes' sha256, or its URL.

    Returns:
        64 hex digits: the sha256 of the canonical JSON (sorted keys, no spaces) of all of the above.

    Raises:
        TypeError: an option is not JSON-serialisable.

    Example:
        >>> from aisearch_ingest.sources import load_source
        >>> ident = {"service": "document-analyze", "service_id": "ops-document-analyze-001",
        ...          "endpoint": "host", "workspace": "default", "options": {"enable_semantic": None}}
        >>> a = cache_key(ident, load_source(b"# A", file_name="a.md"))
        >>> a == cache_key(ident, load_source(b"# A", file_name="renamed.md"))  # same bytes and type
        True
        >>> a == cache_key({**ident, "options": {"enable_semantic": True}}, load_source(b"# A", file_name="a.md"))
        False
    """
    payload: dict[str, Any] = {k: v for k, v in identity.items() if k != "options"}
    options = identity.get("options") or {}
    payload["options"] = {str(k): _plain(v) for k, v in sorted(options.items()) if v is not None}
    payload["key_version"] = CACHE_KEY_VERSION
    payload["file_type"] = source.file_type
    if source.url is not None:
        payload["source_url"] = source.url
    else:
        payload["source_sha256"] = source.sha256
    if source.page is not None:
        payload["page"] = source.page
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class InFlightTask:
    """An asynchronous task recorded while it runs.

    Attributes:
        task_id: the service's task id.
        created_at: when it was recorded (``time.time()``).
    """

    task_id: str
    created_at: float


@dataclass(frozen=True)
class CacheStats:
    """What a cache file holds.

    Attributes:
        results: finished results stored.
        tasks: tasks recorded as in flight.
    """

    results: int
    tasks: int


class ResultCache:
    """A content-addressed SQLite store of finished parse results and of asynchronous tasks in flight.

    Pass it (or just a path) to a client as ``cache=``; see the module docstring for what the key covers. One
    instance may be shared by several clients and threads; several processes may open the same file.

    Args:
        path: the SQLite file; created with its missing parent directories.
        timeout: seconds to wait for another process's write lock before an operation fails.

    Raises:
        ConfigurationError: the file cannot be opened or created, or is not a cache (a directory, another kind of
            file...).

    Example:
        >>> import tempfile, os
        >>> from aisearch_ingest.results import ParseResult
        >>> with tempfile.TemporaryDirectory() as tmp, ResultCache(os.path.join(tmp, "c.sqlite")) as cache:
        ...     r = ParseResult(source="a.md", file_name="a.md", file_type="md", service="document-analyze",
        ...                     service_id="ops-document-analyze-001", content="<p>x</p>", content_type="html")
        ...     cache.put("k" * 64, r)
        ...     cache.get("k" * 64) == r, cache.stats()
        (True, CacheStats(results=1, tasks=0))
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 10.0) -> None:
        self.path = Path(os.fspath(path)).expanduser()
        self.timeout = timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        try:
            if self.path.parent and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock:
                self._connection()
        except (sqlite3.Error, OSError) as exc:
            raise ConfigurationError(
                f"cannot open the result cache {str(self.path)!r}: {exc} "
                "(give the path of an SQLite file that this program may create or write)"
            ) from exc

    def __repr__(self) -> str:
        return f"ResultCache({str(self.path)!r})"

    # -- connection ------------------------------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """The open connection (caller holds ``_lock``); opened again after :meth:`close` or in a forked child."""
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        # A connection inherited through fork() must not be used (or closed) in the child: drop it.
        self._conn, self._pid = None, os.getpid()
        conn = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False, cached_statements=64
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            self._retry_locked(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
            conn.execute("PRAGMA synchronous = NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"the cache was written by a newer version of aisearch-ingest (schema {version})"
                )
            self._retry_locked(lambda: conn.executescript(_SCHEMA))
            if version < _SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _retry_locked(self, operation: Any) -> Any:
        """Run ``operation``; retry briefly while another connection holds the lock SQLite would need.

        Switching to WAL and creating tables can answer "database is locked" at once instead of waiting on the busy
        handler when several processes open a new file together.
        """
        deadline = time.monotonic() + self.timeout
        delay = 0.01
        while True:
            try:
                return operation()
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    def close(self) -> None:
        """Close the connection. The cache opens it again if it is used afterwards."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                conn.close()

    def __enter__(self) -> ResultCache:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- finished results ------------------------------------------------------------------------------------------

    def get(self, key: str) -> ParseResult | None:
        """The stored result for ``key``, or None.

        An entry that cannot be read back (written by another schema version, damaged) counts as a miss; the next
        :meth:`put` replaces it.

        Raises:
            sqlite3.Error: the file cannot be read.
        """
        with self._lock:
            row = self._connection().execute("SELECT result FROM results WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            return ParseResult.from_dict(json.loads(row[0]))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            logger.warning("ignoring an unreadable cache entry %s… in %s: %s", key[:12], self.path, exc)
            return None

    def put(self, key: str, result: ParseResult) -> None:
        """Store ``result`` under ``key`` (replacing any entry) and forget any task recorded for ``key``, in one
        transaction. The stored copy has ``cached=False``.

        Raises:
            TypeError, ValueError: ``result.extra`` (or a page's) holds something JSON cannot represent.
            sqlite3.Error: the file cannot be written.
        """
        data = result.to_dict()
        data["cached"] = False
        text = json.dumps(data, ensure_ascii=False, allow_nan=True)
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT OR REPLACE INTO results (key, service, created_at, result) VALUES (?, ?, ?, ?)",
                    (key, result.service, time.time(), text),
                )
                conn.execute("DELETE FROM tasks WHERE key = ?", (key,))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def delete(self, key: str) -> None:
        """Forget the result and any task recorded for ``key``."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM results WHERE key = ?", (key,))
                conn.execute("DELETE FROM tasks WHERE key = ?", (key,))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # -- tasks in flight -------------------------------------------------------------------------------------------

    def get_task(self, key: str) -> InFlightTask | None:
        """The task recorded as in flight for ``key``, or None."""
        with self._lock:
            row = self._connection().execute("SELECT task_id, created_at FROM tasks WHERE key = ?", (key,)).fetchone()
        return None if row is None else InFlightTask(str(row[0]), float(row[1]))

    def in_flight(self) -> dict[str, InFlightTask]:
        """Every task recorded as in flight, by key (what an interrupted run left to resume)."""
        with self._lock:
            rows = (
                self._connection().execute("SELECT key, task_id, created_at FROM tasks ORDER BY created_at").fetchall()
            )
        return {str(key): InFlightTask(str(task_id), float(created)) for key, task_id, created in rows}

    def put_task(self, key: str, task_id: str) -> None:
        """Record ``task_id`` as in flight for ``key`` (replacing any earlier one)."""
        with self._lock:
            self._connection().execute(
                "INSERT OR REPLACE INTO tasks (key, task_id, created_at) VALUES (?, ?, ?)", (key, task_id, time.time())
            )

    def forget_task(self, key: str, task_id: str | None = None) -> None:
        """Remove the in-flight record of ``key`` (only if it is ``task_id``, when given)."""
        with self._lock:
            conn = self._connection()
            if task_id is None:
                conn.execute("DELETE FROM tasks WHERE key = ?", (key,))
            else:
                conn.execute("DELETE FROM tasks WHERE key = ? AND task_id = ?", (key, task_id))

    # -- housekeeping ----------------------------------------------------------------------------------------------

    def stats(self) -> CacheStats:
        """How many results and in-flight tasks the file holds."""
        with self._lock:
            conn = self._connection()
            results = conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
            tasks = conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]
        return CacheStats(results=int(results), tasks=int(tasks))

    def clear(self) -> None:
        """Forget every result and every in-flight task (deleting the file does the same)."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM results")
                conn.execute("DELETE FROM tasks")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")


#: What ``cache=`` takes: a :class:`ResultCache`, a path, True (the :func:`default_cache_path`), or None/False (off).
CacheLike = ResultCache | str | os.PathLike[str] | bool | None


def open_cache(cache: CacheLike) -> tuple[ResultCache | None, bool]:
    """``cache=`` as the clients take it: ``(the cache, whether the caller owns it and must close it)``.

    ``True`` opens :func:`default_cache_path`; ``None`` and ``False`` mean no cache.

    Raises:
        ConfigurationError: a path that cannot be opened as a cache.
        TypeError: anything else than a :class:`ResultCache`, a path, a bool or None.

    Example:
        >>> import os, tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     os.environ["AISEARCH_INGEST_CACHE"] = tmp
        ...     cache, owned = open_cache(True)
        ...     cache.path.name, owned, open_cache(False)
        ...     cache.close(); del os.environ["AISEARCH_INGEST_CACHE"]
        ('results.sqlite', True, (None, False))
    """
    if cache is None or cache is False:
        return None, False
    if cache is True:
        return ResultCache(default_cache_path()), True
    if isinstance(cache, ResultCache):
        return cache, False
    if isinstance(cache, (str, os.PathLike)):
        return ResultCache(cache), True
    raise TypeError(f"cache must be a ResultCache, a path, True (the default file) or None, not {type(cache).__name__}")
