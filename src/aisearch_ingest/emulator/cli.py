"""The emulator's command line: ``aisearch-ingest emulator [options]`` or ``python -m aisearch_ingest.emulator
[options]`` serves on 127.0.0.1 until Ctrl-C, printing the URL and the environment lines that point clients at it
(never the key)."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Sequence

from ._control import Faults, Latency
from .server import Emulator

__all__ = ["add_arguments", "main", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``emulator`` options to ``parser`` (for wiring into a larger CLI)."""
    parser.add_argument(
        "--host",
        default=None,
        help="address to bind (default 127.0.0.1; anything else is public and needs --api-key or the env keys)",
    )
    parser.add_argument("--port", type=int, default=8765, help="port to bind (default 8765; 0 picks a free port)")
    parser.add_argument(
        "--api-key",
        default=None,
        help="the key every route accepts (default: AISEARCH_API_KEY / DASHSCOPE_API_KEY if set, else any key)",
    )
    parser.add_argument("--qps", type=float, default=None, help="calls allowed in any 1-second window")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds of processing per task or call")
    parser.add_argument("--latency-per-page", type=float, default=0.0, help="extra seconds per page")
    parser.add_argument("--latency-per-token", type=float, default=0.0, help="extra seconds per token")
    for name in ("429", "5xx", "drop", "task-fail", "task-hang", "stream-cut"):
        parser.add_argument(
            f"--fault-rate-{name}", type=float, default=0.0, metavar="R", help=f"probability of a {name} fault"
        )
    parser.add_argument("--fail-name", action="append", default=[], help="tasks whose file name contains this fail")
    parser.add_argument("--hang-name", action="append", default=[], help="tasks whose file name contains this hang")
    parser.add_argument("--seed", type=int, default=None, help="seed of the fault RNG")
    parser.add_argument("--task-status-on-fail", default="FAIL", help="status of a failed task (FAIL or FAILED)")
    parser.add_argument(
        "--allow-url",
        action="append",
        default=[],
        metavar="PREFIX",
        help="also download document/image URLs under this loopback prefix, e.g. http://127.0.0.1:9000/ "
        "(repeatable; by default only the emulator's own files; redirects are never followed)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the emulator from parsed :func:`add_arguments` options until Ctrl-C. Returns the exit code."""
    host = args.host if args.host is not None else "127.0.0.1"
    try:
        emulator = Emulator(
            args.api_key,
            host=host,
            port=args.port,
            qps=args.qps,
            latency=Latency(args.latency, args.latency_per_page, args.latency_per_token),
            faults=Faults(
                rate_429=args.fault_rate_429,
                rate_5xx=args.fault_rate_5xx,
                rate_drop=args.fault_rate_drop,
                rate_task_fail=args.fault_rate_task_fail,
                rate_task_hang=args.fault_rate_task_hang,
                rate_stream_cut=args.fault_rate_stream_cut,
                fail_names=args.fail_name,
                hang_names=args.hang_name,
            ),
            seed=args.seed,
            task_status_on_fail=args.task_status_on_fail,
            allow_non_loopback=args.host is not None,
            allow_urls=args.allow_url,
        )
        emulator.start()
    except (ValueError, OSError) as exc:
        print(f"aisearch-ingest emulator: {exc}", flush=True)
        return 2
    if emulator.expected_key("aisearch") is None and emulator.expected_key("dashscope") is None:
        keys = "any API key is accepted"
    elif args.api_key is not None:
        keys = "API key: the one given with --api-key"
    else:
        keys = "API keys: AISEARCH_API_KEY / DASHSCOPE_API_KEY from this environment (unset ones accept any key)"
    print(
        f"aisearch-ingest emulator listening on {emulator.url} ({keys}; Ctrl-C to stop). Point clients at it:\n"
        f"  export AISEARCH_ENDPOINT={emulator.aisearch_endpoint}\n"
        f"  export DASHSCOPE_BASE_URL={emulator.dashscope_base_url}",
        flush=True,
    )
    try:
        # Timed waits, not one endless wait: Python runs its signal handlers between waits, so a Ctrl-C is acted on
        # within half a second whenever it lands.
        idle = threading.Event()
        while not idle.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``aisearch-ingest emulator [--host H] [--port N] [--api-key K] [--qps Q] [--latency S] [--fault-rate-429 R]
    ...``: serve until Ctrl-C.

    Args:
        argv: the arguments after ``emulator`` (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 after Ctrl-C, 2 when the emulator cannot start.
    """
    parser = argparse.ArgumentParser(
        prog="aisearch-ingest emulator",
        description="Local emulator of AI Search document-analyze/image-analyze and DashScope Qwen-OCR.",
    )
    add_arguments(parser)
    return run(parser.parse_args(list(argv) if argv is not None else None))
