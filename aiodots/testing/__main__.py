"""`python -m aiodots.testing`: run the emulator standalone until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from .emulator import DEFAULT_API_KEY, DEFAULT_CLIENT_ID, DotsEmulator
from .faults import FaultPlan, ServerRateLimit


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m aiodots.testing", description="Run the Dots API emulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument(
        "--rate-limit", type=float, help="server limit, requests/s (none when not given)"
    )
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument(
        "--retry-after", choices=["seconds", "http-date", "none"], default="seconds",
        help="the form of Retry-After on 429",
    )
    parser.add_argument(
        "--quota", type=int,
        help="with --rate-limit: at most this many requests per --quota-window as well",
    )
    parser.add_argument(
        "--quota-window", type=float, default=86400.0, help="seconds (a day by default)"
    )
    parser.add_argument(
        "--limit-headers", choices=["none", "x-ratelimit", "ietf"], default="none",
        help="announce the rate limit in response headers, and in which form",
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    parser.add_argument("--latency-jitter", type=float, default=0.0)
    parser.add_argument(
        "--error-rate", type=float, default=0.0, help="share answered --error-status"
    )
    parser.add_argument("--error-status", type=int, default=503)
    parser.add_argument("--reset-rate", type=float, default=0.0, help="share reset")
    parser.add_argument(
        "--reset-after-rate", type=float, default=0.0,
        help="share of creates processed, then reset before the answer",
    )
    parser.add_argument(
        "--fail-after-rate", type=float, default=0.0,
        help="share of creates processed, then answered --fail-after-status",
    )
    parser.add_argument("--fail-after-status", type=int, default=502)
    # Dots' documents disagree on a reused key; a suite run against this server must be
    # able to meet either reading, as one using DotsEmulator(idempotency=...) can.
    parser.add_argument(
        "--idempotency", choices=["replay", "reject"], default="replay",
        help="a repeated idempotency_key gets the first answer again, or a 409",
    )
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--no-record", action="store_true", help="do not keep the last request bodies"
    )
    args = parser.parse_args(argv)
    if args.quota is not None and args.rate_limit is None:
        parser.error("--quota is a part of the server's limit: give --rate-limit as well")
    try:
        plan_from(args)  # a share above 1, a negative latency: said here, as usage
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    return args


def plan_from(args: argparse.Namespace) -> FaultPlan:
    limit = None
    if args.rate_limit is not None:  # 0 is refused as a rate, not taken for "no limit"
        limit = ServerRateLimit(
            rate=args.rate_limit, burst=args.burst, retry_after=args.retry_after,
            headers=args.limit_headers, quota=args.quota, quota_window=args.quota_window,
        )
    return FaultPlan(
        rate_limit=limit,
        latency=args.latency,
        latency_jitter=args.latency_jitter,
        error_rate=args.error_rate,
        error_status=args.error_status,
        reset_rate=args.reset_rate,
        reset_after_rate=args.reset_after_rate,
        fail_after_rate=args.fail_after_rate,
        fail_after_status=args.fail_after_status,
        seed=args.seed,
    )


def emulator_from(args: argparse.Namespace) -> DotsEmulator:
    return DotsEmulator(
        host=args.host, port=args.port, faults=plan_from(args),
        client_id=args.client_id, api_key=args.api_key, record_bodies=not args.no_record,
        idempotency=args.idempotency,
    )


async def serve(args: argparse.Namespace) -> None:
    emulator = emulator_from(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with emulator:
        # The first line is machine-readable: scripts start this with --port 0 and read it.
        print(f"DOTS_BASE_URL={emulator.base_url}", flush=True)
        print(
            f"credentials: DOTS_CLIENT_ID={emulator.client_id} DOTS_API_KEY=<as given>",
            file=sys.stderr, flush=True,
        )
        await stop.wait()
        stats = emulator.stats
        print(
            f"served {stats.requests} requests, created {stats.created} flows, "
            f"statuses {dict(stats.by_status)}",
            file=sys.stderr, flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        asyncio.run(serve(args))
    except OSError as exc:  # the port is taken, the host is not this machine's
        sys.exit(
            f"python -m aiodots.testing: cannot listen on {args.host}:{args.port}: "
            f"{exc.strerror or exc}"
        )


if __name__ == "__main__":
    main()
