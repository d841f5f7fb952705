"""``aisearch-ingest``: ``ingest`` files into vector-ready JSON lines, ``estimate`` calls and tokens before spending,
and run the ``emulator``.

    aisearch-ingest ingest notebooks/data --offline --out chunks.jsonl
    aisearch-ingest ingest notebooks/data --out chunks.jsonl   # cached and resumable: a second run bills nothing
    aisearch-ingest ingest notebooks/data --out chunks.jsonl --no-cache   # every file sent again
    aisearch-ingest estimate notebooks/data
    aisearch-ingest emulator --port 8765
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack, aclosing
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import anyio

from ._version import __version__
from .cache import CACHE_ENV
from .errors import AISearchIngestError, ConfigurationError, InvalidInputError
from .protocol.qwen_models import REGION_NAMES, REGIONS
from .protocol.qwen_tasks import TASKS
from .results import Outcome
from .routing import route, service_for
from .sources import (
    SourceLike,
    expand_inputs,
    load_source,
    local_path,
    probe_type,
    redact_url,
    safe_name,
)

__all__ = ["main"]

logger = logging.getLogger("aisearch_ingest")

SERVICES = ("auto", "document", "image-vlm", "image-ocr", "qwen-ocr")
OCR_TASKS = tuple(TASKS)

#: ``ingest`` exit codes (also in ``--help`` and the README).
EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_ALL_FAILED = 3
EXIT_CODES_HELP = """\
exit codes:
  0    every file parsed
  1    some files failed, the others were written (the failures are in OUT.failures.jsonl)
  2    usage or configuration error: a bad option, no files found, no credentials
  3    every file failed: nothing was parsed
  130  interrupted by Ctrl-C (143: SIGTERM): the summary covers the files that finished; the same command
       resumes the files in flight (unless --no-cache)
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aisearch-ingest",
        description="Parse files with Alibaba Cloud AI Search / Qwen-OCR into vector-ready documents.",
    )
    parser.add_argument("--version", action="version", version=f"aisearch-ingest {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    ingest = sub.add_parser(
        "ingest",
        help="parse files, directories and URLs into JSON lines",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ingest.add_argument("paths", nargs="+", metavar="PATH", help="files, directories (recursive) or http(s) URLs")
    ingest.add_argument("--out", "-o", required=True, help="output .jsonl file (one document per line)")
    ingest.add_argument("--service", choices=SERVICES, default="auto", help="auto: documents → document-analyze, "
                        "images → image-analyze vlm (default: %(default)s)")  # fmt: skip
    ingest.add_argument("--ocr-task", choices=OCR_TASKS, default="text_recognition", help="Qwen-OCR task")
    ingest.add_argument("--mode", choices=("document", "page", "chunk"), default="chunk")
    ingest.add_argument("--max-tokens", type=int, default=512, help="chunk budget in tokens (mode chunk)")
    ingest.add_argument("--include-headings", action="store_true", help="prefix each chunk with its breadcrumb")
    ingest.add_argument("--keep-html", action="store_true", help="keep the HTML document-analyze returns for "
                        "DOC/DOCX/PPT/PPTX/HTML/TXT (default: turned into markdown, in every mode)")  # fmt: skip
    ingest.add_argument("--glob", default="**/*", help="files to take from directories (default: %(default)s)")
    ingest.add_argument("--offline", action="store_true", help="start the built-in emulator and use it (no key)")
    ingest.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="files in flight per service (default: as many as keep the rate budget busy, learned as files finish)",
    )
    ingest.add_argument(
        "--qps",
        type=float,
        default=None,
        help="ceiling in calls per second per service (default 10; the pace adapts to 429s; 0: no limit)",
    )
    ingest.add_argument("--timeout", type=float, default=900.0, help="deadline per file in seconds")
    ingest.add_argument("--max-pages", type=_positive_int, default=None, metavar="N", help="page budget per "
                        "file: a PDF/TIFF of more pages is refused before anything is sent (document-analyze, "
                        "Qwen-OCR; default: no budget)")  # fmt: skip
    caching = ingest.add_mutually_exclusive_group()
    caching.add_argument("--cache", metavar="PATH", default=None, help="SQLite result cache: files parsed before "
                         "with the same options cost no call; an interrupted run's tasks are resumed (default: "
                         f"${CACHE_ENV}, else results.sqlite in the user's cache directory)")  # fmt: skip
    caching.add_argument("--no-cache", action="store_true", help="no result cache: every file is sent (and "
                         "billed) again")  # fmt: skip
    ingest.add_argument("--no-progress", action="store_true", help="no progress bar")
    ingest.add_argument("-v", "--verbose", action="store_true", help="log retries and polls")

    estimate = sub.add_parser(
        "estimate", help="files, pages, calls, Qwen-OCR image tokens and cost, and limit warnings, without sending"
    )
    estimate.add_argument("paths", nargs="+", metavar="PATH")
    estimate.add_argument("--glob", default="**/*")
    estimate.add_argument("--dpi", type=float, default=150.0, help="PDF rendering resolution for Qwen-OCR")
    estimate.add_argument("--model", default="qwen-vl-ocr", help="Qwen-OCR model: token pixels (32x32 or 28x28) "
                          "and pixel defaults (default: %(default)s)")  # fmt: skip
    estimate.add_argument("--min-pixels", type=int, default=None, help="default: the model's")
    estimate.add_argument("--max-pixels", type=int, default=None, help="default: the model's")
    estimate.add_argument("--region", choices=REGIONS, default="intl", help="Model Studio region whose Qwen-OCR "
                          "price applies (intl Singapore, us Virginia, cn Beijing; default: %(default)s)")  # fmt: skip
    estimate.add_argument("--prices", metavar="FILE.json", default=None, help="prices to use instead of the "
                          "vendor table's: {model: {region: {input, output, currency}}}, per 1M tokens")  # fmt: skip
    estimate.add_argument("--output-tokens-per-page", type=int, default=0, metavar="N", help="output tokens to "
                          "price per Qwen-OCR call (default 0: image tokens only)")  # fmt: skip
    estimate.add_argument("--max-pages", type=_positive_int, default=None, metavar="N",
                          help="warn about files over this page budget (what ingest --max-pages refuses)")  # fmt: skip

    emulator = sub.add_parser("emulator", help="run the local emulator of all three services", add_help=False)
    emulator.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# -- ingest ----------------------------------------------------------------------------------------------------------


@dataclass
class _Summary:
    parsed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (the input as given, the error's message)
    errors: list[AISearchIngestError | None] = field(default_factory=list)  # the error of each entry of failed
    documents: int = 0
    pages: int = 0
    usage: dict[str, Counter[str]] = field(default_factory=dict)  # per service: its own usage fields
    calls: int = 0
    cached: int = 0  # files whose result came from the cache (no call)
    reported: int = 0  # files reported so far (ok or failed): the [n] of each line
    unfinished: int = 0  # files neither parsed nor failed when the run was interrupted
    possibly_billed_twice: dict[str, int] = field(default_factory=dict)  # source -> billed calls re-sent blind
    cache: str | None = None  # the result cache file used, None with --no-cache

    def fail(self, name: str, error: AISearchIngestError | None) -> None:
        self.failed.append((name, str(error)))
        self.errors.append(error)


#: The CLI's service groups for the services of :mod:`aisearch_ingest.routing` (``--service auto``).
_AUTO_GROUPS = {"document-analyze": "document", "image-analyze": "image-vlm", "qwen-ocr": "qwen-ocr"}


def _service_for(origin: str, file_type: str, choice: str) -> str:
    if choice != "auto":
        return choice
    return _AUTO_GROUPS[service_for(origin, file_type)]


def _route(item: SourceLike, choice: str) -> tuple[str, SourceLike]:
    """The service group for one input (:func:`aisearch_ingest.routing.route`: local files are typed from their
    first bytes and stay on disk until their turn comes, so a large batch is never held in memory)."""
    if choice == "auto":
        service, routed = route(item)
        return _AUTO_GROUPS[service], routed
    text = local_path(item)
    if text is not None:
        probe_type(text)  # an unreadable or untyped file fails here, as with auto
        return choice, item
    return choice, load_source(item)


def _missing_keys_message(services: set[str]) -> str | None:
    missing = []
    if services & {"document", "image-vlm", "image-ocr"} and not (
        os.environ.get("AISEARCH_API_KEY") and os.environ.get("AISEARCH_ENDPOINT")
    ):
        missing.append("AISEARCH_API_KEY and AISEARCH_ENDPOINT (AI Search Open Platform: API key and host)")
    if "qwen-ocr" in services and not os.environ.get("DASHSCOPE_API_KEY"):
        missing.append("DASHSCOPE_API_KEY (Model Studio; DASHSCOPE_BASE_URL for a non-default region)")
    if not missing:
        return None
    return (
        "aisearch-ingest: no credentials. Set " + " and ".join(missing) + ", or run offline on the built-in "
        "emulator (no key, no network) by adding --offline."
    )


def _make_client(
    service: str, args: argparse.Namespace, endpoint: str | None, key: str | None, cache: Any = None
) -> Any:
    qps = args.qps
    if qps is None and args.offline:
        qps = 0  # the in-process emulator has no quota to protect: run at the speed of the work
    common: dict[str, Any] = {"api_key": key, "max_concurrency": args.concurrency, "qps": qps, "cache": cache}
    if service == "qwen-ocr":
        from .qwen import QwenOCR

        return QwenOCR(base_url=endpoint, task=args.ocr_task, max_pages=args.max_pages, **common)
    from .aisearch import DocumentAnalyzer, ImageAnalyzer

    common.update(endpoint=endpoint, timeout=args.timeout)
    if service == "document":
        return DocumentAnalyzer(max_pages=args.max_pages, **common)
    service_id = "ops-image-analyze-ocr-001" if service == "image-ocr" else "ops-image-analyze-vlm-001"
    return ImageAnalyzer(service_id=service_id, **common)


def _progress(total: int, quiet: bool) -> Any:
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="file", file=sys.stderr)


#: C0 and C1 control characters, escaped in what the terminal shows (a file name can hold any of them).
_CONTROLS = {i: f"\\x{i:02x}" for i in [*range(0x20), *range(0x7F, 0xA0)]}
_CONTROLS.update({ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"})


def _shown(text: str) -> str:
    """``text`` for the terminal: bytes of a name that are not UTF-8 as ``\\xNN`` (as in the JSON files), control
    characters escaped."""
    return safe_name(text).translate(_CONTROLS)


class _Stop:
    """SIGINT (Ctrl-C) and SIGTERM during ``ingest``: the first one stops the run where it stands -- no new file is
    started, the files in flight are abandoned (unless ``--no-cache``, their tasks are recorded, so the next run resumes
    them), the failures file and the summary are written -- and the command exits with 128 + the signal number
    (130 for Ctrl-C). A second one quits at once.

    The handler only sets a flag and asks the event loop to cancel: nothing is cut in the middle of a write.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scope: anyio.CancelScope | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt  # the second one: quit now
        self.signum = signum
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._cancel)
            except RuntimeError:  # the loop closed meanwhile: the flag is enough
                pass

    def _cancel(self) -> None:
        _notice(self.signum)
        if self._scope is not None:
            self._scope.cancel()

    def unbind(self) -> None:
        self._loop = self._scope = None

    def bind(self, scope: anyio.CancelScope) -> None:
        """Cancel ``scope`` (on the running loop) when the signal comes; at once if it came already."""
        self._loop, self._scope = asyncio.get_running_loop(), scope
        if self.signum is not None:
            self._cancel()

    @property
    def code(self) -> int:
        assert self.signum is not None
        return 128 + int(self.signum)


def _notice(signum: int | None) -> None:
    name = signal.Signals(signum).name if signum is not None else "signal"
    print(
        f"\n{name}: stopping; the files in flight are abandoned (unless --no-cache, their tasks are resumed by "
        "the next run); press Ctrl-C again to quit at once",
        file=sys.stderr,
        flush=True,
    )


def _ingest(args: argparse.Namespace) -> int:
    with _Stop() as stop:
        try:
            return _ingest_run(args, stop)
        except KeyboardInterrupt:  # a second Ctrl-C, or one before the handler was in place
            print("\naborted", file=sys.stderr, flush=True)
            return 130


def _ingest_run(args: argparse.Namespace, stop: _Stop) -> int:
    from ._adapters import Shaper

    started = time.monotonic()
    out_path = Path(args.out)
    failures_path = out_path.with_name(out_path.stem + ".failures.jsonl")
    # The failures file belongs to this run: a stale one (from a run that was killed) never survives it.
    failures_path.unlink(missing_ok=True)
    summary = _Summary()

    # Route every input first: bad inputs are reported, never dropped.
    groups: dict[str, list[SourceLike]] = {}
    for item in expand_inputs(args.paths, glob=args.glob):
        if stop.signum is not None:
            break
        name = redact_url(os.fspath(item)) if isinstance(item, (str, os.PathLike)) else repr(item)  # no URL query
        try:
            service, routed = _route(item, args.service)
            groups.setdefault(service, []).append(routed)
        except AISearchIngestError as exc:
            summary.fail(str(name), exc)
    if stop.signum is not None:
        _notice(stop.signum)
        summary.unfinished = sum(len(v) for v in groups.values())
        _write_failures(summary, failures_path)
        _print_summary(summary, out_path, failures_path, time.monotonic() - started)
        return stop.code
    total = sum(len(v) for v in groups.values()) + len(summary.failed)
    if total == 0:
        print(f"aisearch-ingest: no files found in {_shown(' '.join(args.paths))}", file=sys.stderr)
        return EXIT_USAGE

    with ExitStack() as stack:
        endpoint: str | None = None
        key: str | None = None
        if args.offline:
            from .emulator import Emulator

            emu = stack.enter_context(Emulator(api_key="offline"))
            endpoint, key = emu.url, "offline"
            print(f"offline: using the built-in emulator at {emu.url} (no key, no network)", flush=True)
        else:
            message = _missing_keys_message(set(groups))
            if message:
                print(message, file=sys.stderr)
                return EXIT_USAGE
        try:
            cache = _open_cache(args, stack)
            summary.cache = None if cache is None else str(cache.path)
            clients = {service: _make_client(service, args, endpoint, key, cache) for service in groups}
        except ConfigurationError as exc:
            print(f"aisearch-ingest: {exc}", file=sys.stderr)
            return EXIT_USAGE
        for client in clients.values():
            stack.callback(client.close)
        shapers = {
            s: Shaper(
                c,
                mode=args.mode,
                max_tokens=args.max_tokens,
                include_headings=args.include_headings,
                html_to_markdown=not args.keep_html,
            )
            for s, c in clients.items()
        }
        bar = _progress(total, args.no_progress)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with out_path.open("w", encoding="utf-8") as out:
            for name, reason in summary.failed:
                _report(bar, summary, name, ok=False, detail=reason)

            async def pump(service: str, items: list[SourceLike], send: Any) -> None:
                async with send, aclosing(clients[service].aparse_many(items)) as outcomes:
                    async for outcome in outcomes:
                        await send.send((service, outcome))

            async def run() -> None:
                send, receive = anyio.create_memory_object_stream[tuple[str, Outcome]](max_buffer_size=total)
                async with anyio.create_task_group() as tg:
                    stop.bind(tg.cancel_scope)
                    for service, items in groups.items():
                        tg.start_soon(pump, service, items, send.clone())
                    send.close()
                    async with receive:
                        async for service, outcome in receive:
                            _handle(outcome, shapers[service], out, summary, bar)
                for client in clients.values():
                    await client.aclose()

            try:
                anyio.run(run)
            finally:
                stop.unbind()
        if bar is not None:
            bar.close()

    summary.unfinished = total - summary.reported
    _write_failures(summary, failures_path)
    _print_summary(summary, out_path, failures_path, time.monotonic() - started)
    if stop.signum is not None and summary.unfinished:
        return stop.code
    if not summary.failed:
        return EXIT_OK
    return EXIT_SOME_FAILED if summary.parsed else EXIT_ALL_FAILED


def _open_cache(args: argparse.Namespace, stack: ExitStack) -> Any:
    """The run's result cache, shared by its clients and closed last: ``--cache PATH``, else the default file, or
    None with ``--no-cache``. A ``--cache`` path that cannot be opened is a usage error (``ConfigurationError``); a
    default location that cannot (a read-only home) is a warning, and the run goes on uncached."""
    if args.no_cache:
        return None
    from .cache import ResultCache, default_cache_path

    if args.cache:
        return stack.enter_context(ResultCache(args.cache))
    try:
        return stack.enter_context(ResultCache(default_cache_path()))
    except ConfigurationError as exc:
        print(
            f"aisearch-ingest: warning: {exc}; going on without a cache (set {CACHE_ENV} or pass --cache PATH)",
            file=sys.stderr,
            flush=True,
        )
        return None


def _write_failures(summary: _Summary, failures_path: Path) -> None:
    """This run's failures, one JSON object a line, written to a temporary file then renamed over the old one (a
    reader never sees half a file); no file when nothing failed. Names are :func:`safe_name`'d (valid UTF-8)."""
    if not summary.failed:
        failures_path.unlink(missing_ok=True)
        return
    failures_path.parent.mkdir(parents=True, exist_ok=True)
    partial = failures_path.with_name(failures_path.name + f".{os.getpid()}.partial")
    try:
        with partial.open("w", encoding="utf-8") as fail_out:
            for (name, reason), error in zip(summary.failed, summary.errors, strict=True):
                record: dict[str, Any] = {"source": safe_name(name), "error": safe_name(reason)}
                if error is not None:
                    record["type"] = type(error).__name__
                    if isinstance(error, InvalidInputError) and error.limit:
                        record["limit"] = error.limit
                fail_out.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(partial, failures_path)
    finally:
        partial.unlink(missing_ok=True)


def _report(bar: Any, summary: _Summary, name: str, *, ok: bool, detail: str) -> None:
    summary.reported += 1
    detail = _shown(detail.removeprefix(f"{name}: "))
    shown = _shown(name)
    if bar is not None:
        bar.update(1)
        if not ok:
            bar.write(f"failed {shown}: {detail}", file=sys.stderr)
        return
    print(f"[{summary.reported}] {'ok    ' if ok else 'FAILED'} {shown}: {detail}", file=sys.stderr, flush=True)


def _handle(outcome: Outcome, shaper: Any, out: IO[str], summary: _Summary, bar: Any) -> None:
    if outcome.possibly_billed_twice:
        summary.possibly_billed_twice[outcome.source] = outcome.possibly_billed_twice
    if outcome.error is not None or outcome.result is None:
        summary.fail(outcome.source, outcome.error)
        _report(bar, summary, outcome.source, ok=False, detail=str(outcome.error))
        return
    result = outcome.result
    records = shaper.records(outcome)
    # One write and one flush per file: what is on disk is always whole lines, whole files.
    out.write(
        "".join(
            json.dumps({"id": r.id, "text": r.text, "metadata": r.metadata}, ensure_ascii=False) + "\n" for r in records
        )
    )
    out.flush()
    summary.parsed += 1
    summary.documents += len(records)
    summary.pages += result.page_num
    summary.calls += result.calls
    if result.cached:
        summary.cached += 1
    else:  # a cached result's usage was billed by the run that stored it
        summary.usage.setdefault(result.service, Counter()).update(result.usage)
    timing = "from the cache" if result.cached else f"{result.latency:.1f}s"
    _report(
        bar,
        summary,
        outcome.source,
        ok=True,
        detail=f"{result.service}, {result.page_num} page(s), {len(records)} document(s), {timing}",
    )


def _print_summary(summary: _Summary, out_path: Path, failures_path: Path, wall: float) -> None:
    lines = [
        "",
        f"files parsed:      {summary.parsed}",
        f"files failed:      {len(summary.failed)}",
    ]
    if summary.unfinished:
        lines.append(f"files not finished: {summary.unfinished} (interrupted; run the same command to do them)")
    lines += [
        f"documents written: {summary.documents} → {_shown(str(out_path))}",
        f"pages:             {summary.pages}",
        f"service calls:     {summary.calls}"
        + (f" ({summary.cached} file(s) answered from the cache)" if summary.cached else ""),
        f"cache:             {_shown(summary.cache) if summary.cache else 'off'}",
    ]
    for service, usage in sorted(summary.usage.items()):
        fields = ", ".join(f"{k}={v:g}" for k, v in sorted(usage.items()))
        lines.append(f"usage {service + ':':<18}{fields}")
    lines.append(f"wall time:         {wall:.1f}s")
    if summary.possibly_billed_twice:
        twice = summary.possibly_billed_twice
        lines.append(
            f"possibly billed twice: {sum(twice.values())} call(s) of {len(twice)} file(s): the request reached the "
            "service, its answer was lost, and it was sent again (the usage above counts only the answers received)"
        )
        lines.extend(f"  {_shown(name)}: {count}" for name, count in sorted(twice.items()))
    if summary.failed:
        lines.append(f"failures ({len(summary.failed)}, also in {_shown(str(failures_path))}):")
        lines.extend(f"  {_shown(name)}: {_shown(reason.removeprefix(name + ': '))}" for name, reason in summary.failed)
    print("\n".join(lines), flush=True)


# -- estimate --------------------------------------------------------------------------------------------------------


def _estimate(args: argparse.Namespace) -> int:
    from .estimate import estimate_file, limit_warnings
    from .prices import format_money, load_prices, price_for

    try:
        table = load_prices(args.prices) if args.prices else None
    except (OSError, ValueError) as exc:
        print(f"aisearch-ingest: --prices {args.prices}: {exc}", file=sys.stderr)
        return 2
    price = price_for(args.model, args.region, table)
    per_call_out = max(0, args.output_tokens_per_page)
    rows: list[tuple[tuple[str, ...], list[str]]] = []
    totals: Counter[str] = Counter()
    total_cost = Decimal(0)
    errors = warned = 0
    for item in expand_inputs(args.paths, glob=args.glob):
        name = redact_url(os.fspath(item)) if isinstance(item, (str, os.PathLike)) else repr(item)  # no URL query
        try:
            source = load_source(item)
            service = _service_for(source.origin, source.file_type, "auto")
        except AISearchIngestError as exc:
            errors += 1
            rows.append(((str(name), "error", "", "", "", "", ""), [f"error: {exc}"]))
            continue
        # AI Search: one /sync call per image; create + at least one task-status poll per document.
        aisearch_calls = 1 if service.startswith("image") else 2
        svc = "document-analyze" if service == "document" else "image-analyze"
        pages, qwen_calls, tokens, cost = "?", "-", "-", "-"
        notes: list[str] = []
        est = None
        if service.startswith("image") or source.file_type in ("pdf", "tiff"):
            try:
                est = estimate_file(
                    source, dpi=args.dpi, model=args.model, min_pixels=args.min_pixels, max_pixels=args.max_pixels
                )
            except AISearchIngestError as exc:
                qwen_calls, tokens = "error", "error"
                notes.append(f"warning: Qwen-OCR estimate failed: {exc}")
            else:
                pages, qwen_calls, tokens = str(est.pages), str(est.calls), str(est.image_tokens)
                totals.update(pages=est.pages, qwen_calls=est.calls, image_tokens=est.image_tokens)
                if price is None:
                    cost = "no price"
                else:
                    amount = price.cost(est.image_tokens, per_call_out * est.calls)
                    total_cost += amount
                    cost = format_money(amount, price.currency)
        found = limit_warnings(
            source,
            est,
            aisearch_service=svc,
            model=args.model,
            max_pixels=args.max_pixels,
            max_pages=args.max_pages,
            qwen=not notes,
        )
        warned += bool(found or notes)
        notes.extend(f"warning: {text}" for text in found)
        rows.append(((str(name), svc, pages, str(aisearch_calls), qwen_calls, tokens, cost), notes))
        totals.update(files=1, aisearch_calls=aisearch_calls)
    header = (
        "file",
        "auto service",
        "pages",
        "AI Search calls (min)",
        "Qwen-OCR calls",
        "Qwen-OCR image tokens",
        f"Qwen-OCR cost ({args.region})",
    )
    widths = [max(len(cells[i]) for cells in [header, *(r for r, _ in rows)]) for i in range(len(header))]
    for cells, notes in [(header, []), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
        for note in notes:
            print(f"    {note}")
    print(
        f"\ntotal: {totals['files']} files, {totals['pages']} counted pages, >= {totals['aisearch_calls']} AI Search "
        f"calls, {totals['qwen_calls']} Qwen-OCR calls, {totals['image_tokens']} Qwen-OCR image tokens "
        "(documented formula; nothing was sent)"
    )
    region = f"{args.region} ({REGION_NAMES[args.region]})"
    if price is None:
        print(
            f"Qwen-OCR cost: no price for {args.model} in {region} on the vendor pages; give one with --prices "
            "FILE.json"
        )
    else:
        output = (
            f" + {per_call_out * totals['qwen_calls']} output tokens ({per_call_out} per call)"
            if per_call_out
            else " (image tokens only: the text prompt and the output tokens come on top)"
        )
        print(
            f"Qwen-OCR cost: {format_money(total_cost, price.currency)} for {totals['image_tokens']} image tokens"
            f"{output}, at {price.describe()} [{price.source}]"
        )
    print(
        "AI Search cost: not included (the vendor pages give no price for document-analyze, and image-analyze's "
        "has no currency)"
    )
    if warned:
        print(f"warnings: {warned} file(s) over a limit or with many pages (listed above)")
    return 1 if errors else 0


# -- entry point -----------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (:data:`EXIT_CODES_HELP`: 0 ok, 1 some files failed, 2 usage
    or configuration error, 3 every file failed, 130 interrupted)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["emulator"]:
        from . import emulator

        return int(emulator.main(args_list[1:]))
    for stream in (sys.stdout, sys.stderr):
        # Whatever reaches the terminal is escaped already; this only keeps an odd console encoding from crashing
        # the run halfway through its report.
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and getattr(stream, "errors", "strict") == "strict":
            reconfigure(errors="backslashreplace")
    args = _parser().parse_args(args_list)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command == "ingest":
        return _ingest(args)
    if args.command == "estimate":
        return _estimate(args)
    raise AssertionError(args.command)  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
