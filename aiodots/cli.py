"""The command line: `aiodots flows create|get|bulk`, `aiodots users create|get|list`,
`aiodots payouts bulk` and `aiodots demo`.

Needs the `cli` extra (click, rich). Credentials come from DOTS_CLIENT_ID and
DOTS_API_KEY only: a flag would leave the key in shell history.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import math
import signal
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

try:
    import click
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise SystemExit(
        f"the aiodots command line needs its extra: pip install 'aiodots[cli]' ({exc})"
    ) from exc

from .client import Client
from .converter import converter
from .errors import DotsError, ValidationError
from .jobs import (
    JobProgress,
    check_same_input,
    count_rows,
    parse_metadata,
    read_rows,
    recorded_ok,
    run_job,
    split_names,
)
from .models.flows import to_step
from .payout_jobs import batch_identity, check_same_batch, read_payout_rows, run_payout_job
from .ratelimit import RateLimit
from .testing import DotsEmulator, FaultPlan, ServerRateLimit
from .testing.workers import WorkerPlan, run_workers, summary

if TYPE_CHECKING:
    from .contrib.redis import RedisRateLimiter

DEMO_PASSES = 5  # resets may strike a resumed pass too
#: Reading an input can fail with these besides OSError (counting its rows reads it all
#: before anything is sent): bytes that are not UTF-8, a cell past the csv module's limit.
UNREADABLE = (UnicodeDecodeError, csv.Error)
PLAIN_PROGRESS_EVERY = 2.0  # seconds between progress lines when not on a terminal


def _client(ctx: click.Context, **kwargs: Any) -> Client:
    try:
        return Client(
            base_url=ctx.obj["base_url"], environment=ctx.obj["environment"],
            proxy=ctx.obj["proxy"], **kwargs,
        )
    except DotsError as exc:
        raise click.UsageError(str(exc)) from exc


F = TypeVar("F", bound=Callable[..., Any])


def redis_option(
    help_text: str = "Share one rate limit with every process using this Redis and API key "
    "(redis://host:port/db); --rate is then their combined rate. Needs the redis extra.",
) -> Callable[[F], F]:
    """`--redis URL` (or DOTS_REDIS_URL) on a command that sends: pass `redis_url` on to
    `shared_limiter`. The help says what it does on that command (`demo` has no --rate)."""
    option: Callable[[F], F] = click.option(
        "--redis", "redis_url", metavar="URL", envvar="DOTS_REDIS_URL", help=help_text
    )
    return option


def shared_limiter(redis_url: str | None, rate: float | None) -> RedisRateLimiter | None:
    """The limiter `--redis` asks for (None without it); close it with `closing_limiter`."""
    if not redis_url:
        return None
    try:
        from .contrib.redis import RedisRateLimiter
    except ImportError as exc:
        raise click.UsageError(f"--redis: {exc}") from exc
    try:
        return RedisRateLimiter(redis_url, ceiling=rate)
    except ValueError as exc:  # a URL redis-py cannot read
        raise click.UsageError(f"--redis: {exc}") from exc


@contextlib.asynccontextmanager
async def closing_limiter(limiter: RedisRateLimiter | None) -> AsyncIterator[None]:
    try:
        yield
    finally:
        if limiter is not None:
            await limiter.aclose()


class _Finite(click.FloatRange):
    """click's FloatRange, refusing NaN and infinity too (NaN passes any range check)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


#: Requests per second, and a share of requests (0 to 1).
PER_SECOND = _Finite(min=0, min_open=True)
SHARE = _Finite(min=0, max=1)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def run(prog_name: str = "aiodots") -> None:
    """The `aiodots` command: `main` on uvloop's event loop where uvloop is installed (the
    `cli` extra brings it where it has wheels), else on asyncio's. An application's
    choice, made here at the entry point: the library itself never installs a loop policy.
    """
    try:
        import uvloop
    except ImportError:
        pass
    else:
        with warnings.catch_warnings():  # loop policies are deprecated from Python 3.14
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    main(prog_name=prog_name)


def _fail(exc: DotsError) -> NoReturn:
    """Exit 1 for a call that failed; input the client refused before sending anything
    is a mistake on the command line like any other: a usage error, exit 2."""
    if isinstance(exc, ValidationError):
        raise click.UsageError(str(exc)) from exc
    click.echo(f"error: {exc}", err=True)
    # What reconciliation knows of a failed create is in its notes: that it may have
    # taken effect, or that it was sent more than once and none did.
    for note in getattr(exc, "__notes__", ()):
        click.echo(f"note: {note}", err=True)
    sys.exit(1)


@click.group()
@click.option("--base-url", envvar="DOTS_BASE_URL", help="API base URL (wins over --environment).")
@click.option(
    "--environment",
    type=click.Choice(["production", "sandbox"]),
    default="production",
    show_default=True,
)
@click.option(
    "--proxy", envvar="DOTS_PROXY", metavar="URL",
    help="Send every request through this HTTP proxy (http://user:password@host:port). "
    "HTTPS_PROXY is not read: pass --proxy \"$HTTPS_PROXY\".",
)
@click.version_option(package_name="aiodots")
@click.pass_context
def main(ctx: click.Context, base_url: str | None, environment: str, proxy: str | None) -> None:
    """aiodots: the Dots API from the command line.

    Credentials are read from DOTS_CLIENT_ID and DOTS_API_KEY. The API's certificate is
    checked against the system's CAs (SSL_CERT_FILE names another bundle).
    """
    ctx.obj = {"base_url": base_url, "environment": environment, "proxy": proxy}


@main.group()
def flows() -> None:
    """Onboarding flows."""


def _steps(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return split_names(value, ",")


@flows.command("create")
@click.option("--steps", required=True, help="Comma-separated step names.")
@click.option("--user-id")
@click.option("--metadata", help="A JSON object, or plain text sent as a string.")
@click.option("--require-auth", is_flag=True, default=None)
@click.option("--hide-go-to-dashboard", is_flag=True, default=None)
@click.pass_context
def flows_create(
    ctx: click.Context, steps: str, user_id: str | None, metadata: str | None,
    require_auth: bool | None, hide_go_to_dashboard: bool | None,
) -> None:
    """Create one flow and print it as JSON."""
    meta = None if metadata is None else parse_metadata(metadata)

    async def create() -> Any:
        async with _client(ctx) as dots:
            return await dots.flows.create(
                steps=_steps(steps) or [], user_id=user_id, metadata=meta,
                require_auth=require_auth, hide_go_to_dashboard_on_complete=hide_go_to_dashboard,
            )

    try:
        _print_json(converter.unstructure(asyncio.run(create())))
    except DotsError as exc:
        _fail(exc)


@flows.command("get")
@click.argument("flow_id")
@click.pass_context
def flows_get(ctx: click.Context, flow_id: str) -> None:
    """Print one flow as JSON."""

    async def get() -> Any:
        async with _client(ctx) as dots:
            return await dots.flows.retrieve(flow_id)

    try:
        _print_json(converter.unstructure(asyncio.run(get())))
    except DotsError as exc:
        _fail(exc)


class Reporter:
    """A live bar on a terminal; a line every few seconds otherwise."""

    def __init__(self, console: Console, total: int | None) -> None:
        self._last_line = 0.0
        self._progress: Progress | None = None
        self._task: Any = None
        if console.is_terminal:
            self._progress = Progress(
                TextColumn("[bold]flows"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[detail]}"),
                TimeRemainingColumn(),
                console=console,
            )
            self._task = self._progress.add_task("bulk", total=total, detail="")

    def __enter__(self) -> Reporter:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, p: JobProgress) -> None:
        detail = f"{p.rate:.0f}/s ok {p.ok} failed {p.failed} 429s {p.rate_limited}"
        if self._progress is not None:
            self._progress.update(self._task, completed=p.done + p.skipped, detail=detail)
            return
        now = time.monotonic()
        if now - self._last_line >= PLAIN_PROGRESS_EVERY:
            self._last_line = now
            total = f"/{p.total}" if p.total is not None else ""
            click.echo(f"progress: {p.done + p.skipped}{total} {detail}", err=True)


def _summary_lines(p: JobProgress, output: Path) -> list[str]:
    state = "interrupted" if p.interrupted else "done"
    lines = [
        f"{state}: {p.ok} ok, {p.failed} failed, {p.skipped} already ok from an earlier run",
        f"  {p.done} rows in {p.elapsed:.1f}s ({p.rate:.0f}/s), {p.rate_limited} answered 429, "
        f"{p.retries} retries",
    ]
    if p.reconciled or p.found_on_resume or p.lookup_requests:
        lines.append(f"  {_reconciled_text(p)}")
    lines.append(f"  results: {output}")
    return lines


def _reconciled_text(p: JobProgress) -> str:
    text = (
        f"{p.reconciled} rows reconciled ({p.reconciled_found} found created after a lost"
        f" answer, {p.reconciled_resent} provably not created and sent again)"
    )
    if p.found_on_resume:
        text += f", {p.found_on_resume} found created by an earlier run"
    return text + f"; {p.lookup_requests} list requests"


@contextlib.contextmanager
def _graceful_stop(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> Iterator[None]:
    """First Ctrl+C (or SIGTERM): send no new row, let those in flight finish and be
    recorded. A second one stops at once."""
    def handler() -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


#: A bulk job, given the client, the progress callback and the graceful-stop event.
BulkJob = Callable[[Client, Callable[[JobProgress], None], asyncio.Event], Awaitable[JobProgress]]


def _run_bulk(
    ctx: click.Context,
    output: Path,
    rate: float | None,
    redis_url: str | None,
    total: int | None,
    job: BulkJob,
) -> NoReturn:
    """What every bulk command does around its job: one client (on the shared limit with
    `--redis`), graceful Ctrl+C, a progress bar or lines, the summary, the exit status
    (0 when every row is ok, 1 otherwise)."""
    if not output.parent.is_dir():
        raise click.UsageError(f"--output: no such directory: {str(output.parent)!r}")
    console = Console(stderr=True)
    limiter = shared_limiter(redis_url, rate)  # with --redis, --rate is its ceiling
    own_rate = RateLimit(rate) if rate and limiter is None else None
    dots = _client(ctx, rate_limit=own_rate, rate_limiter=limiter)

    async def run_job_to_end() -> JobProgress:
        stop = asyncio.Event()
        with _graceful_stop(asyncio.get_running_loop(), stop), Reporter(console, total) as bar:
            async with dots, closing_limiter(limiter):
                progress: JobProgress = await job(dots, bar, stop)
                return progress

    try:
        progress = asyncio.run(run_job_to_end())
    except DotsError as exc:  # a resume look-up failed: sending blindly could duplicate
        _fail(exc)
    for line in _summary_lines(progress, output):
        click.echo(line, err=True)
    sys.exit(0 if progress.failed == 0 and not progress.interrupted else 1)


@flows.command("bulk")
@click.argument("input_path", metavar="INPUT")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSON Lines results; re-running with it resumes.")
@click.option("--steps", help="Steps for rows that have none (comma-separated).")
@click.option("--concurrency", default=32, show_default=True, type=click.IntRange(1, 1000))
@click.option("--rate", type=PER_SECOND,
              help="Never exceed this many requests per second.")
@click.option("--reconcile/--no-reconcile", default=True, show_default=True,
              help="Look up a create whose answer was lost instead of failing the row, and"
                   " on resume find rows a killed run created.")
@redis_option()
@click.pass_context
def flows_bulk(
    ctx: click.Context, input_path: str, output: Path, steps: str | None, concurrency: int,
    rate: float | None, reconcile: bool, redis_url: str | None,
) -> None:
    """Create a flow per row of INPUT (.csv, .jsonl, or - for JSON Lines on stdin).

    Exit status 0 when every row is ok, 1 otherwise.
    """
    default_steps = _steps(steps)
    try:
        # A mistyped --steps would fail every row that has none: said once, here.
        for name in default_steps or ():
            to_step(name)
    except ValidationError as exc:
        raise click.UsageError(f"--steps: {exc}") from exc
    try:
        total = count_rows(input_path)
        rows = read_rows(input_path)
        if input_path != "-":
            check_same_input(output, read_rows(input_path))
    except (DotsError, OSError) as exc:
        raise click.UsageError(str(exc)) from exc
    except UNREADABLE as exc:
        raise click.UsageError(f"cannot read {input_path!r}: {exc}") from exc

    async def job(
        dots: Client, bar: Callable[[JobProgress], None], stop: asyncio.Event
    ) -> JobProgress:
        return await run_job(
            dots, rows, output, default_steps=default_steps, concurrency=concurrency,
            on_progress=bar, stop=stop, total=total, reconcile=reconcile,
        )

    _run_bulk(ctx, output, rate, redis_url, total, job)


@main.command()
@click.option("--flows", "count", default=3000, show_default=True, type=click.IntRange(1))
@click.option("--rate-limit", default=200.0, show_default=True, type=PER_SECOND,
              help="The emulator's limit, /s.")
@click.option("--error-rate", default=0.03, show_default=True, type=SHARE,
              help="Share answered 503.")
@click.option(
    "--reset-rate", default=0.005, show_default=True, type=SHARE,
    help="Share of connections dropped before the request is processed.",
)
@click.option(
    "--reset-after-rate", default=0.005, show_default=True, type=SHARE,
    help="Share of creates processed, then dropped before the answer.",
)
@click.option("--concurrency", default=64, show_default=True, type=click.IntRange(1, 1000))
@click.option("--reconcile/--no-reconcile", default=True, show_default=True,
              help="Look up creates whose answer was lost (off: they fail, and resuming"
                   " duplicates those that were created). Not with --workers above 1 or --redis:"
                   " those runs compare rates, and their lost creates fail.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Processes sharing the emulator's limit (with --redis: sharing one limiter).")
@redis_option(
    "Run the workers again, sharing one limiter through this Redis (redis://host:port/db),"
    " to compare. Needs the redis extra."
)
def demo(count: int, rate_limit: float, error_rate: float, reset_rate: float,
         reset_after_rate: float, concurrency: int, reconcile: bool, workers: int,
         redis_url: str | None) -> None:
    """A bulk job against the embedded emulator, with faults, and its summary."""
    if redis_url:  # a URL that cannot work fails now, not after the first pass
        limiter = shared_limiter(redis_url, None)
        assert limiter is not None
        asyncio.run(limiter.aclose())
    faults = FaultPlan(
        rate_limit=ServerRateLimit(rate=rate_limit, burst=20, retry_after="seconds"),
        error_rate=error_rate, reset_rate=reset_rate, reset_after_rate=reset_after_rate,
        seed=7,
    )
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "results.jsonl"
        users = [str(uuid.uuid4()) for _ in range(count)]
        click.echo(
            f"aiodots demo: {count} flows through the emulator "
            f"(limit {rate_limit:g}/s, {error_rate:.0%} answered 503, "
            f"{reset_rate:.1%} of connections reset before processing and "
            f"{reset_after_rate:.1%} of creates after it)"
        )
        if workers > 1 or redis_url:
            asyncio.run(_demo_workers(faults, count, concurrency, workers, redis_url))
        else:
            asyncio.run(_demo(faults, users, output, concurrency, reconcile))


async def _demo_workers(faults: FaultPlan, count: int, concurrency: int, workers: int,
                        redis_url: str | None) -> None:
    """The same job in `workers` processes, each with its own limiter, then (with
    `redis_url`) sharing one: a fresh emulator each time, so both start alike."""
    limit = faults.rate_limit.rate if faults.rate_limit else 0
    duplicates = 0
    for shared in dict.fromkeys([None, redis_url]):
        async with DotsEmulator(faults=faults, record_bodies=False) as emulator:
            start_at = time.time() + 2.0  # all start at once, once every one has loaded
            plans = [
                WorkerPlan(base_url=emulator.base_url, **emulator.credentials,
                           flows=count // workers + (n < count % workers), start_at=start_at,
                           concurrency=concurrency, redis_url=shared)
                for n in range(workers)
            ]
            s = summary(await run_workers(plans))
            stats = emulator.stats
        how = "sharing one limit through Redis" if shared else "each with its own limiter"
        click.echo(
            f"{workers} processes {how}: {s.ok} ok, {s.failed} failed in {s.seconds:.1f}s, "
            f"together {s.rate:.0f}/s against a limit of {limit:g}/s ({s.rate / limit:.0%})"
            f"\n  {s.rate_limited} answered 429 ({s.share_429:.1%} of {s.requests} requests)"
            + (f", {s.round_trips_per_request:.2f} Redis round trips per request" if shared
               else "" if redis_url else "; add --redis URL to compare with one shared limit")
            + f"; the emulator created {stats.created} flows, {stats.duplicates} twice"
        )
        duplicates += stats.duplicates
    if duplicates:
        sys.exit(1)


async def _demo(
    faults: FaultPlan, users: list[str], output: Path, concurrency: int, reconcile: bool
) -> None:
    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        for number, user in enumerate(users, start=1):
            yield number, {"steps": ["compliance", "id-verification"], "user_id": user,
                           "metadata": {"campaign": "demo", "row": number}}

    async with DotsEmulator(faults=faults, record_bodies=False) as emulator:
        passes: list[JobProgress] = []
        elapsed = 0.0
        for attempt in range(1, DEMO_PASSES + 1):
            async with Client(**emulator.credentials, base_url=emulator.base_url) as dots:
                with Reporter(Console(stderr=True), len(users)) as bar:
                    progress = await run_job(
                        dots, rows(), output, concurrency=concurrency, on_progress=bar,
                        total=len(users), reconcile=reconcile,
                    )
            passes.append(progress)
            elapsed += progress.elapsed
            click.echo(
                f"pass {attempt}: {progress.ok} ok, {progress.failed} failed, "
                f"{progress.skipped} already ok; {progress.rate_limited} answered 429, "
                f"{progress.retries} retries, {progress.elapsed:.1f}s"
            )
            if reconcile:
                click.echo(f"  {_reconciled_text(progress)}")
            if progress.failed == 0:
                break
            click.echo(
                "  (failed rows met a reset after the request left: a flow create has no"
                " idempotency key, so the client cannot know whether it was created; resuming"
                " sends them again, duplicating those that were)"
                if not reconcile else
                "  (failed rows met more ambiguous failures in a row than reconciliation"
                " allows; resuming looks them up first)"
            )
        ok_rows = recorded_ok(output)
        stats = emulator.stats
        lost = len(users) - len(ok_rows)
        duplicated = stats.duplicates
        limit = faults.rate_limit.rate if faults.rate_limit else 0
        first = passes[0]
        click.echo(
            f"result: {len(ok_rows)}/{len(users)} rows ok; the emulator created "
            f"{stats.created} flows for {len(stats.created_per_user)} users"
            )
        click.echo(
            f"  nothing lost: {'yes' if lost == 0 else f'NO, {lost} rows without a flow'}; "
            f"nothing duplicated: {'yes' if duplicated == 0 else f'NO, {duplicated} extra'}"
            )
        click.echo(
            f"  first pass ran at {first.rate:.0f}/s against a limit of {limit:g}/s "
            f"({first.rate / limit:.0%} of it), {elapsed:.1f}s in all; "
            f"server saw {dict(sorted(stats.by_status.items()))}, {stats.resets} resets"
            )
        if lost or duplicated:
            sys.exit(1)



# -- users -----------------------------------------------------------------------------


@main.group()
def users() -> None:
    """People you onboard and pay."""


@users.command("create")
@click.option("--first-name", required=True)
@click.option("--last-name", required=True)
@click.option("--email", required=True)
@click.option("--country-code", required=True, help='Phone country code, e.g. "1".')
@click.option("--phone-number", required=True, help="Digits only.")
@click.option("--metadata", help="A JSON object, or plain text sent as a string.")
@click.option("--reconcile", is_flag=True,
              help="After a failure that may have created the user, look it up instead of"
                   " failing (needs JSON object metadata, or none).")
@click.pass_context
def users_create(
    ctx: click.Context, first_name: str, last_name: str, email: str, country_code: str,
    phone_number: str, metadata: str | None, reconcile: bool,
) -> None:
    """Create one user and print it as JSON."""
    meta = None if metadata is None else parse_metadata(metadata)

    async def create() -> Any:
        async with _client(ctx) as dots:
            return await dots.users.create(
                first_name=first_name, last_name=last_name, email=email,
                country_code=country_code, phone_number=phone_number, metadata=meta,
                reconcile=reconcile,
            )

    try:
        _print_json(converter.unstructure(asyncio.run(create())))
    except DotsError as exc:
        _fail(exc)


@users.command("get")
@click.argument("user_id")
@click.pass_context
def users_get(ctx: click.Context, user_id: str) -> None:
    """Print one user as JSON."""

    async def get() -> Any:
        async with _client(ctx) as dots:
            return await dots.users.retrieve(user_id)

    try:
        _print_json(converter.unstructure(asyncio.run(get())))
    except DotsError as exc:
        _fail(exc)


@users.command("list")
@click.option("--status", type=click.Choice(["verified", "unverified", "in_review", "disabled"]))
@click.option("--limit", "most", type=click.IntRange(1), help="Print at most this many.")
@click.pass_context
def users_list(ctx: click.Context, status: Any, most: int | None) -> None:
    """Print users as JSON Lines in the order the API lists them, fetching pages as it goes."""

    async def listing() -> None:
        async with _client(ctx) as dots:
            printed = 0
            async for user in dots.users.list(status=status, limit=100):
                click.echo(json.dumps(converter.unstructure(user), ensure_ascii=False))
                printed += 1
                if most is not None and printed >= most:
                    return

    try:
        asyncio.run(listing())
    except DotsError as exc:
        _fail(exc)


# -- payouts ---------------------------------------------------------------------------


@main.group()
def payouts() -> None:
    """Payouts to users and payout links."""


@payouts.command("bulk")
@click.argument("input_path", metavar="INPUT")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSON Lines results; re-running with it resumes.")
@click.option("--platform", type=click.Choice(
    ["paypal", "venmo", "ach", "bank_transfer", "cash_app", "default"]),
    help="Platform for rows that name none.")
@click.option("--batch-id", help="Names the batch for its idempotency keys (needed for stdin).")
@click.option("--concurrency", default=16, show_default=True, type=click.IntRange(1, 1000))
@click.option("--rate", type=PER_SECOND,
              help="Never exceed this many requests per second.")
@redis_option()
@click.pass_context
def payouts_bulk(
    ctx: click.Context, input_path: str, output: Path, platform: str | None,
    batch_id: str | None, concurrency: int, rate: float | None, redis_url: str | None,
) -> None:
    """Pay out one row of INPUT each (.csv, .jsonl, or - with --batch-id).

    A row pays its `user_id` (`amount` in cents, `platform`, ...) or sends a payout
    link to `country_code` + `phone_number`. Each row's idempotency key comes from the
    file's contents and the row number, so running the file again, or resuming after a
    crash, never pays twice. Exit status 0 when every row is ok, 1 otherwise.
    """
    try:
        identity = batch_identity(input_path, batch_id)
        check_same_batch(output, identity)
        total = count_rows(input_path)
        rows = read_payout_rows(input_path)
    except (DotsError, OSError) as exc:
        raise click.UsageError(str(exc)) from exc
    except UNREADABLE as exc:
        raise click.UsageError(f"cannot read {input_path!r}: {exc}") from exc

    async def job(
        dots: Client, bar: Callable[[JobProgress], None], stop: asyncio.Event
    ) -> JobProgress:
        return await run_payout_job(
            dots, rows, output, identity=identity, default_platform=platform,
            concurrency=concurrency, on_progress=bar, stop=stop, total=total,
        )

    _run_bulk(ctx, output, rate, redis_url, total, job)
