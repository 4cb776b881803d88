"""Bulk onboarding jobs: spreadsheet rows in, one JSON line per row out, resumable.

Used by `aiodots flows bulk` and `aiodots demo`; needs nothing beyond the core library.

- Input: CSV (columns `user_id`, `steps` separated by `;`, `metadata` as JSON or plain
  text, `require_auth`, `hide_go_to_dashboard_on_complete`) or JSON Lines with the same
  keys. Rows are numbered from 1 in input order. Other CSV columns are ignored; a header
  that names a column twice is refused, and a row with more cells than the header is
  that row's error (which cell was meant is anyone's guess).
- Output: per row `{"row": N, "ok": true, "flow": {...}}` or `{"row": N, "ok": false,
  "error": {"type": ..., "status": ..., "message": ...}}`, flushed as each row finishes.
- Resume: rows already recorded ok in the output are skipped; the rest are sent again and
  their lines appended. The last line of a row is its outcome. An ok line records a
  digest of its row (`"input"`): an output is not resumed with an input whose rows
  recorded ok read otherwise (`check_same_input`). Rows not yet ok may be edited.
- Reconciliation (on by default; see the flows section below): each row's create carries
  the row's call id, `<job id>:<row>`, so a create whose answer was lost is found rather
  than failed, and a resume after a hard kill first finds the rows an earlier run created
  without recording them. The job id and each run's start are kept in the output as
  `{"job": {"id": ..., "started": ...}}` lines.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import attrs

from .client import Client
from .converter import converter
from .errors import ClientClosedError, DotsError, ValidationError
from .models import CreateFlow, Flow
from .reconcile import Reconcile, ReconcileEvent, call_id_of, scan_newest_first, with_call_id

__all__ = [
    "JobProgress",
    "JobRecord",
    "LookupFailed",
    "RowError",
    "check_same_input",
    "count_rows",
    "find_rows_created",
    "input_digest",
    "output_records",
    "read_rows",
    "recorded_job",
    "recorded_ok",
    "row_call_id",
    "run_job",
]

#: Sends per row when a job reconciles (a call's own default is 3): a row fails its pass
#: only when every send but the last was provably not created and the last was lost
#: too. At the demo's fault rates (0.5% of creates lost before processing, 0.5% after)
#: some row of 3,000 does with 3 sends about once in 1,300 jobs, with 5 about once in
#: fifty million: the job finishes in one pass.
BULK_SENDS = 5

_TRUE = {"true", "1", "yes", "y"}
_FALSE = {"false", "0", "no", "n"}
_COLUMNS = ("user_id", "steps", "metadata", "require_auth", "hide_go_to_dashboard_on_complete")


class RowError(ValidationError):
    """A row that cannot become a request (bad JSON, a bad cell)."""


class LookupFailed(DotsError):
    """The resume look-up failed: sending unrecorded rows then could duplicate them."""


@attrs.define
class JobProgress:
    total: int | None = None  #: rows in the input, when known up front
    skipped: int = 0  #: rows already ok in the output of an earlier run
    ok: int = 0
    failed: int = 0
    rate_limited: int = 0
    retries: int = 0
    elapsed: float = 0.0
    interrupted: bool = False
    reconciled_found: int = 0  #: rows whose answer was lost, found created by a look-up
    reconciled_resent: int = 0  #: rows provably not created by a failed send, sent again
    #: rows an earlier, killed run created without recording them (counted in `ok` too)
    found_on_resume: int = 0
    lookup_requests: int = 0  #: list requests those look-ups made

    @property
    def reconciled(self) -> int:
        """Rows that met a failure which may have created their flow, and still ended ok."""
        return self.reconciled_found + self.reconciled_resent

    @property
    def done(self) -> int:
        return self.ok + self.failed

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0


def input_format(path: str) -> str:
    if path == "-" or path.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if path.endswith(".csv"):
        return "csv"
    raise ValidationError(f"cannot tell the format of {path!r}: use a .csv or .jsonl file")


def split_names(text: str, separator: str) -> list[str]:
    """`"a; b;"` -> `["a", "b"]`: step names as people type them in a cell or a flag."""
    return [name.strip() for name in text.split(separator) if name.strip()]


def parse_metadata(text: str) -> dict[str, Any] | str:
    """Metadata typed as text: a JSON object becomes a mapping, anything else is sent as
    the text it is (the API takes both)."""
    try:
        decoded = json.loads(text)
    except ValueError:
        return text
    return decoded if isinstance(decoded, dict) else text


def _flag(value: str, column: str) -> bool | None:
    text = value.strip().lower()
    if not text:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise RowError(f"{column} must be true or false, not {value!r}")


def _csv_fields(cells: dict[str, str | None]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    user_id = (cells.get("user_id") or "").strip()
    if user_id:
        fields["user_id"] = user_id
    steps = (cells.get("steps") or "").strip()
    if steps:
        fields["steps"] = split_names(steps, ";")
    metadata = cells.get("metadata") or ""
    if metadata.strip():
        fields["metadata"] = parse_metadata(metadata)
    for flag in ("require_auth", "hide_go_to_dashboard_on_complete"):
        value = _flag(cells.get(flag) or "", flag)
        if value is not None:
            fields[flag] = value
    return fields


def _jsonl_fields(fields: dict[str, Any]) -> dict[str, Any]:
    steps = fields.get("steps")
    if isinstance(steps, str):
        fields["steps"] = split_names(steps, ";")
    return fields


def _json_object(line: str) -> dict[str, Any]:
    try:
        fields = json.loads(line)
    except ValueError as exc:
        raise RowError(f"not valid JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise RowError("each line must be a JSON object")
    return fields


def read_cells(
    path: str, stdin: IO[str] | None = None
) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """(row number, the row's cells or the reason it cannot be read), lazily, in input
    order: a CSV row's columns, or a JSON Lines object (blank lines skipped). What the
    cells mean is each job's business (`read_rows`, `payout_jobs.read_payout_rows`)."""
    fmt = input_format(path)
    handle: IO[str] = (stdin or sys.stdin) if path == "-" else open(  # noqa: SIM115
        path, newline="", encoding="utf-8-sig"
    )
    try:
        if fmt == "csv":
            yield from _csv_cells(csv.DictReader(handle))
            return
        number = 0
        for line in handle:
            if not line.strip():
                continue
            number += 1
            try:
                yield number, _json_object(line)
            except RowError as exc:
                yield number, exc
    finally:
        if handle is not stdin and handle is not sys.stdin:
            handle.close()


def _csv_cells(
    reader: csv.DictReader[str],
) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    # DictReader keeps the last of two columns of one name, and puts cells beyond the
    # header under None, both silently: a second `amount` column, or "1,000" unquoted
    # (amount 1, "000" dropped), paid an amount nobody wrote in that column.
    names = [name for name in reader.fieldnames or () if name]
    for name in names:
        if names.count(name) > 1:
            raise ValidationError(f"the header names the column {name!r} twice")
    for number, cells in enumerate(reader, start=1):
        extra = cells.pop(None, None)
        if extra and any(cell.strip() for cell in extra):
            yield number, RowError(
                f"more cells than the header has columns ({len(names)}): a comma in a"
                " number or text that is not in quotes?"
            )
        else:
            yield number, cells


def fields_of_rows(
    cells: Iterator[tuple[int, dict[str, Any] | RowError]],
    fields: Callable[[dict[str, Any]], dict[str, Any]],
) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """Each row's cells made into request fields by `fields`; a row it refuses (or that
    could not be read) comes out as its `RowError`. A model's own `ValidationError` is
    that row's too: one bad row must never stop the job."""
    for number, row in cells:
        if isinstance(row, RowError):
            yield number, row
            continue
        try:
            yield number, fields(row)
        except RowError as exc:
            yield number, exc
        except ValidationError as exc:
            yield number, RowError(str(exc))


def read_rows(
    path: str, stdin: IO[str] | None = None
) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """(row number, flow fields or the reason the row is bad), lazily, in input order."""
    fields = _csv_fields if input_format(path) == "csv" else _jsonl_fields
    return fields_of_rows(read_cells(path, stdin), fields)


def count_rows(path: str) -> int | None:
    """Rows in a file (one streaming pass), or None for standard input."""
    if path == "-":
        return None
    return sum(1 for _ in read_cells(path))


def recorded_ok(
    output: Path, results: tuple[str, ...] = ("flow",)
) -> dict[int, str | None]:
    """Rows an earlier run recorded as ok, with the digest of each row's input where its
    line has one (`input_digest`). A line cut short by a crash is ignored.

    `results`: the keys this kind of job records its result under. An ok line with none
    of them is another kind of job's (a flow in a payouts output): a ValidationError,
    since skipping its row would leave that row undone with the run saying it is done.
    """
    done: dict[int, str | None] = {}
    for record in output_records(output):
        row = record.get("row")
        if record.get("ok") is True and isinstance(row, int):
            if not any(key in record for key in results):
                raise ValidationError(
                    f"{str(output)!r} was written by another kind of job: its row"
                    f" {row} holds no {' or '.join(results)}. Give this job its"
                    " own output."
                )
            digest = record.get("input")
            done[row] = digest if isinstance(digest, str) else done.get(row)
    return done


def output_records(output: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects an output holds, one per line, none if it does not exist yet. A
    line cut short by a crash is skipped."""
    if not output.exists():
        return
    with output.open(encoding="utf-8") as lines:
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


def input_digest(fields: dict[str, Any]) -> str:
    """A short digest of a row as read, recorded with its outcome: what a resume
    compares the row it reads now with."""
    text = json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differs(
    output: Path, done: dict[int, str | None], number: int, fields: dict[str, Any] | RowError
) -> ValidationError | None:
    """The error for a row recorded ok from other contents than `fields`, else None."""
    recorded = done.get(number)
    if recorded is None or isinstance(fields, RowError) or recorded == input_digest(fields):
        return None
    return ValidationError(
        f"{str(output)!r} was written for another input: its row {number} was done from"
        " other contents. Resumed with this input, rows it never sent would be skipped as"
        " done. Give this input its own output (rows not yet ok may be fixed and resumed)."
    )


def check_same_input(
    output: Path, rows: Iterator[tuple[int, dict[str, Any] | RowError]]
) -> None:
    """Read `rows` (a file's, before anything is sent) against the rows `output`
    recorded ok: a ValidationError at the first that reads otherwise."""
    done = recorded_ok(output)
    if not any(done.values()):
        return
    for number, fields in rows:
        error = differs(output, done, number, fields)
        if error is not None:
            raise error


def error_record(error: BaseException) -> dict[str, Any]:
    return {
        "type": type(error).__name__,
        "status": getattr(error, "status", None),
        "message": str(error),
    }


def _open_for_append(output: Path) -> IO[str]:
    handle = output.open("a+", encoding="utf-8")
    handle.seek(0, 2)
    if handle.tell():
        handle.seek(handle.tell() - 1)
        if handle.read(1) != "\n":
            handle.write("\n")  # the last run died mid-line: start clean
    return handle


# -- flows: reconciliation of rows -----------------------------------------------------
#
# A row's call id is `<job id>:<row>`. The job id is random, made by the first run and
# kept in the output's job lines: the output is what ties runs of one job together
# (resume means "the same --output"), so moving or renaming the input, or piping it
# from standard input, never breaks a resume, and two jobs run from one file never
# take each other's flows for their own.


@attrs.frozen
class JobRecord:
    """The job lines of an output: the job's id and the earliest run's start."""

    id: str
    first_started: datetime


def recorded_job(output: Path) -> JobRecord | None:
    """The job an output belongs to, or None (a new output, or one written before job
    lines existed)."""
    if not output.exists():
        return None
    job_id: str | None = None
    first: datetime | None = None
    with output.open(encoding="utf-8") as lines:
        for line in lines:
            if not line.startswith('{"job"'):
                continue
            try:
                job = json.loads(line)["job"]
                started = datetime.fromisoformat(job["started"])
            except (ValueError, KeyError, TypeError):
                continue
            if not isinstance(job.get("id"), str) or started.tzinfo is None:
                continue
            job_id = job_id or job["id"]
            first = started if first is None else min(first, started)
    return None if job_id is None or first is None else JobRecord(job_id, first)


def row_call_id(job_id: str, row: int) -> str:
    return f"{job_id}:{row}"


def _flow_pages(client: Client, size: int) -> AsyncIterator[Sequence[Flow]]:
    async def pages() -> AsyncIterator[Sequence[Flow]]:
        async for page in client.flows.list(limit=size).pages():
            yield page.data

    return pages()


async def find_rows_created(
    client: Client, job: JobRecord, settings: Reconcile
) -> tuple[dict[int, Flow], int]:
    """Rows of `job` that have a flow, found in one scan of the flows created since its
    first run began (less the clock-skew margin); and the list requests it took.

    Waits `settle` first: a killed run's last creates may still be in the server's hands.
    Closing the client ends that wait with `ClientClosedError`, as it ends the client's
    other waits (`Transport.held`), and the scan after it the same way.
    """
    prefix = f"{job.id}:"
    try:
        await client._transport.held(lambda: asyncio.sleep(settings.settle))
        found, pages = await scan_newest_first(
            _flow_pages(client, settings.page_size),
            cutoff=job.first_started - timedelta(seconds=settings.clock_skew),
            overscan=settings.overscan,
            match=lambda call_id: call_id.startswith(prefix),
        )
    except DotsError as exc:
        if isinstance(exc, ClientClosedError) or client.closed:
            # Ended by the close (the settle cut short, a list request cut off or held
            # by the limiter), not because the API could not answer.
            raise ClientClosedError(
                "this aiodots Client was closed while the job waited to look up, or looked"
                " up, the rows an earlier run may have created: nothing was sent"
            ) from exc
        raise LookupFailed(
            f"could not look up the rows an earlier run may have created, so nothing was"
            f" sent: run again, or resume without reconciliation to send them regardless"
            f" ({exc})"
        ) from exc
    rows: dict[int, Flow] = {}
    for call_id, flow in found.items():
        row = call_id[len(prefix):]
        if row.isdigit():
            rows[int(row)] = flow
    return rows, pages


class _RowOutcomes:
    """What reconciliation did per call id, so each row's line can say so."""

    def __init__(self, progress: JobProgress) -> None:
        self._progress = progress
        self._last: dict[str, str] = {}

    def __call__(self, event: ReconcileEvent) -> None:
        if event.kind == "scan":
            self._progress.lookup_requests += event.pages
        elif event.call_id is not None and event.kind in ("found", "not-found"):
            self._last[event.call_id] = event.kind

    def finished(self, call_id: str | None, ok: bool) -> str | None:
        """How an item's row was reconciled ("found", "sent again"), if it was."""
        last = self._last.pop(call_id, None) if call_id is not None else None
        if last is None or not ok:
            return None
        if last == "found":
            self._progress.reconciled_found += 1
            return "found"
        self._progress.reconciled_resent += 1
        return "sent again"


# -- the job -----------------------------------------------------------------------------


class JobLog:
    """A job's output: one JSON line per record, flushed as it is written (so a crash
    loses no finished row), and the progress callback fed with the client's counters."""

    def __init__(
        self,
        client: Client,
        output: Path,
        progress: JobProgress,
        on_progress: Callable[[JobProgress], None] | None,
    ) -> None:
        self._client = client
        self._output = output
        self._progress = progress
        self._on_progress = on_progress
        self._started = time.monotonic()
        self._stats_before = client.stats.snapshot()
        self._out: IO[str] | None = None

    def __enter__(self) -> JobLog:
        self._out = _open_for_append(self._output)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._out is not None:
            self._out.close()

    def write(self, record: dict[str, Any]) -> None:
        assert self._out is not None
        self._out.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._out.flush()

    def report(self) -> None:
        progress, stats = self._progress, self._client.stats
        progress.elapsed = time.monotonic() - self._started
        progress.rate_limited = stats.rate_limited - self._stats_before.rate_limited
        progress.retries = stats.retries - self._stats_before.retries
        if self._on_progress is not None:
            self._on_progress(progress)


async def run_job(
    client: Client,
    rows: Iterator[tuple[int, dict[str, Any] | RowError]],
    output: Path,
    *,
    default_steps: list[str] | None = None,
    concurrency: int = 32,
    on_progress: Callable[[JobProgress], None] | None = None,
    stop: asyncio.Event | None = None,
    total: int | None = None,
    reconcile: bool | Reconcile = True,
) -> JobProgress:
    """Send one flow create per row not yet ok in `output`, appending one line per row.

    Setting `stop` ends the job gracefully: no new row is sent, the rows in flight finish
    and are recorded, and `interrupted` is set. `reconcile` (on by default): see the
    flows section above; `False` sends every row as a plain create.
    """
    progress = JobProgress(total=total)
    already_ok = recorded_ok(output)
    row_of: dict[int, tuple[int, str | None]] = {}
    settings = Reconcile(max_attempts=BULK_SENDS) if reconcile is True else Reconcile.of(reconcile)
    outcomes = _RowOutcomes(progress)
    if settings is not None:
        settings = attrs.evolve(settings, on_event=_chain(settings.on_event, outcomes))
    earlier_job = recorded_job(output) if settings is not None else None
    job_id = earlier_job.id if earlier_job is not None else uuid.uuid4().hex[:16]
    found_rows: dict[int, Flow] = {}

    with JobLog(client, output, progress, on_progress) as log:
        write, report = log.write, log.report
        if settings is not None:
            # Recorded before anything is sent, so a resume knows what to look for.
            write({"job": {"id": job_id, "started": datetime.now(UTC).isoformat()}})
        every_row_ok = total is not None and already_ok.keys() >= set(range(1, total + 1))
        if settings is not None and earlier_job is not None and not every_row_ok:
            found, pages = await find_rows_created(client, earlier_job, settings)
            progress.lookup_requests += pages
            for number, flow in sorted(found.items()):
                if number in already_ok:
                    continue
                found_rows[number] = flow
                write({"row": number, "ok": True, "flow": converter.unstructure(flow),
                       "reconciled": "found on resume"})
                progress.found_on_resume += 1
                progress.ok += 1

        def requests() -> Iterator[CreateFlow]:
            index = 0
            for number, fields in rows:
                if stop is not None and stop.is_set():
                    progress.interrupted = True
                    return
                if number in already_ok:
                    # From standard input this is the only check (a file is read whole
                    # first, `check_same_input`): the rows in flight finish, then it ends.
                    changed = differs(output, already_ok, number, fields)
                    if changed is not None:
                        raise changed
                    progress.skipped += 1
                    continue
                if number in found_rows:
                    continue  # recorded above, as found on resume
                try:
                    if isinstance(fields, RowError):
                        raise fields
                    digest = input_digest(fields)  # the row as read, before --steps
                    if "steps" not in fields and default_steps:
                        fields = {**fields, "steps": default_steps}
                    request = CreateFlow.coerce(fields)
                    if settings is not None:
                        request = with_call_id(request, row_call_id(job_id, number))
                except ValidationError as exc:
                    write({"row": number, "ok": False, "error": error_record(exc)})
                    progress.failed += 1
                    report()
                    continue
                row_of[index] = (number, digest)
                index += 1
                yield request

        async for item in client.flows.create_many(
            requests(), concurrency=concurrency, reconcile=settings or False
        ):
            number, digest = row_of.pop(item.index)
            how = outcomes.finished(call_id_of(getattr(item.request, "metadata", None)), item.ok)
            if item.ok:
                flow = converter.unstructure(item.result)
                record = {"row": number, "ok": True, "flow": flow, "input": digest}
                if how is not None:
                    record["reconciled"] = how
                write(record)
                progress.ok += 1
            else:
                assert item.error is not None
                write({"row": number, "ok": False, "error": error_record(item.error)})
                progress.failed += 1
            report()
        report()
    return progress


def _chain(
    first: Callable[[ReconcileEvent], None] | None, then: Callable[[ReconcileEvent], None]
) -> Callable[[ReconcileEvent], None]:
    if first is None:
        return then

    def both(event: ReconcileEvent) -> None:
        first(event)
        then(event)

    return both
