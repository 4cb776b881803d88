"""Bulk onboarding jobs: spreadsheet rows in, one JSON line per row out, resumable.

Used by `aiodots flows bulk` and `aiodots demo`; needs nothing beyond the core library.

- Input: CSV (columns `user_id`, `steps` separated by `;`, `metadata` as JSON or plain
  text, `require_auth`, `hide_go_to_dashboard_on_complete`) or JSON Lines with the same
  keys. Rows are numbered from 1 in input order. Other CSV columns are ignored.
- Output: per row `{"row": N, "ok": true, "flow": {...}}` or `{"row": N, "ok": false,
  "error": {"type": ..., "status": ..., "message": ...}}`, flushed as each row finishes.
- Resume: rows already recorded ok in the output are skipped; the rest are sent again and
  their lines appended. The last line of a row is its outcome.
"""

from __future__ import annotations

import asyncio
import csv
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import attrs

from .client import Client
from .converter import converter
from .errors import ValidationError
from .models import CreateFlow

__all__ = ["JobProgress", "RowError", "count_rows", "read_rows", "recorded_ok", "run_job"]

_TRUE = {"true", "1", "yes", "y"}
_FALSE = {"false", "0", "no", "n"}
_COLUMNS = ("user_id", "steps", "metadata", "require_auth", "hide_go_to_dashboard_on_complete")


class RowError(ValidationError):
    """A row that cannot become a request (bad JSON, a bad cell)."""


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


def _jsonl_fields(line: str) -> dict[str, Any]:
    try:
        fields = json.loads(line)
    except ValueError as exc:
        raise RowError(f"not valid JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise RowError("each line must be a JSON object")
    steps = fields.get("steps")
    if isinstance(steps, str):
        fields["steps"] = split_names(steps, ";")
    return fields


def read_rows(
    path: str, stdin: IO[str] | None = None
) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """(row number, fields or the reason the row is bad), lazily, in input order."""
    fmt = input_format(path)
    handle: IO[str] = (stdin or sys.stdin) if path == "-" else open(  # noqa: SIM115
        path, newline="", encoding="utf-8-sig"
    )
    try:
        if fmt == "csv":
            reader = csv.DictReader(handle)
            for number, cells in enumerate(reader, start=1):
                try:
                    yield number, _csv_fields(cells)
                except RowError as exc:
                    yield number, exc
        else:
            number = 0
            for line in handle:
                if not line.strip():
                    continue
                number += 1
                try:
                    yield number, _jsonl_fields(line)
                except RowError as exc:
                    yield number, exc
    finally:
        if handle is not stdin and handle is not sys.stdin:
            handle.close()


def count_rows(path: str) -> int | None:
    """Rows in a file (one streaming pass), or None for standard input."""
    if path == "-":
        return None
    return sum(1 for _ in read_rows(path))


def recorded_ok(output: Path) -> set[int]:
    """Rows an earlier run recorded as ok. A line cut short by a crash is ignored."""
    done: set[int] = set()
    if not output.exists():
        return done
    with output.open(encoding="utf-8") as lines:
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("ok") is True:
                row = record.get("row")
                if isinstance(row, int):
                    done.add(row)
    return done


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
) -> JobProgress:
    """Send one flow create per row not yet ok in `output`, appending one line per row.

    Setting `stop` ends the job gracefully: no new row is sent, the rows in flight finish
    and are recorded, and `interrupted` is set.
    """
    progress = JobProgress(total=total)
    already_ok = recorded_ok(output)
    started = time.monotonic()
    stats_before = client.stats.snapshot()
    row_of: dict[int, int] = {}

    with _open_for_append(output) as out:

        def write(record: dict[str, Any]) -> None:
            out.write(json.dumps(record, separators=(",", ":")) + "\n")
            out.flush()

        def report() -> None:
            progress.elapsed = time.monotonic() - started
            progress.rate_limited = client.stats.rate_limited - stats_before.rate_limited
            progress.retries = client.stats.retries - stats_before.retries
            if on_progress is not None:
                on_progress(progress)

        def requests() -> Iterator[CreateFlow]:
            index = 0
            for number, fields in rows:
                if stop is not None and stop.is_set():
                    progress.interrupted = True
                    return
                if number in already_ok:
                    progress.skipped += 1
                    continue
                try:
                    if isinstance(fields, RowError):
                        raise fields
                    if "steps" not in fields and default_steps:
                        fields = {**fields, "steps": default_steps}
                    request = CreateFlow.coerce(fields)
                except ValidationError as exc:
                    write({"row": number, "ok": False, "error": error_record(exc)})
                    progress.failed += 1
                    report()
                    continue
                row_of[index] = number
                index += 1
                yield request

        async for item in client.flows.create_many(requests(), concurrency=concurrency):
            number = row_of.pop(item.index)
            if item.ok:
                flow = converter.unstructure(item.result)
                write({"row": number, "ok": True, "flow": flow})
                progress.ok += 1
            else:
                assert item.error is not None
                write({"row": number, "ok": False, "error": error_record(item.error)})
                progress.failed += 1
            report()
    report()
    return progress
