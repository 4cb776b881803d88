"""Bulk payouts from files: one payout per row, one JSON line per row out, resumable,
and never paying anyone twice.

Used by `aiodots payouts bulk`; needs nothing beyond the core library.

- Input: CSV or JSON Lines. A row with `user_id` pays that user (`payouts.create`:
  `amount` in cents, `platform`, `account_id`, `fund`, `tax_exempt`, `metadata`,
  `payout_fee_party`); a row with `country_code` and `phone_number` and no `user_id`
  sends a payout link to that phone (`payouts.send`, with `memo` and `metadata`).
- Each row's `idempotency_key` is a UUID derived from the input's identity (a SHA-256
  of the file's bytes, or the `--batch-id` given for standard input) and the row
  number. Running the same file again, or resuming after any crash, SIGKILL included,
  sends every row with the key it had: within Dots' 24-hour key window the API answers
  the first payout again (or refuses the key, and the client finds the payout), so no
  one is paid twice. A file edited between runs is a new batch with new keys, and an
  output written for one batch is not resumed with another's (`check_same_batch`); a
  batch named by `--batch-id` keeps its keys by row number however its file changes.
- Output and resume work as for `flows bulk` (`jobs.py`): rows recorded ok are skipped.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import attrs

from .batch import Batch
from .client import Client
from .converter import converter
from .errors import ValidationError
from .jobs import (
    JobLog,
    JobProgress,
    RowError,
    _flag,
    error_record,
    fields_of_rows,
    output_records,
    parse_metadata,
    read_cells,
    recorded_ok,
)
from .models import _fields
from .models.payouts import CreatePayout, PayoutSendRequest

__all__ = [
    "batch_identity",
    "check_same_batch",
    "payout_request",
    "read_payout_rows",
    "row_key",
    "run_payout_job",
]

#: The namespace of row keys: uuid5(NAMESPACE, "<batch identity>:<row>").
NAMESPACE = uuid.UUID("6d2c1f0e-5a43-4c49-9d0b-8f7a3b1e2c55")
_FLAGS = ("fund", "tax_exempt")
_TEXT = ("user_id", "platform", "account_id", "payout_fee_party", "country_code",
         "phone_number", "memo")

PayoutRequest = CreatePayout | PayoutSendRequest


def batch_identity(path: str, batch_id: str | None = None) -> str:
    """What names this input across runs: `batch_id` when given, else a SHA-256 of the
    file's bytes (read in chunks). Standard input has no identity of its own."""
    if batch_id:
        return "batch:" + batch_id
    if path == "-":
        raise ValidationError(
            "reading payouts from standard input needs --batch-id: the idempotency keys "
            "that stop a repeated run from paying twice are derived from it"
        )
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def row_key(identity: str, row: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{identity}:{row}"))


def check_same_batch(output: Path, identity: str) -> None:
    """A ValidationError if `output` records a row under a key `identity` does not give
    it: the output belongs to another batch (the file was edited, or `--batch-id`
    differs). Resuming it would send the rows not yet ok with keys nothing deduplicates
    against, so a row whose answer a crash lost would be paid twice; and the row numbers
    it records as ok may no longer name the same rows."""
    for record in output_records(output):
        row, key = record.get("row"), record.get("idempotency_key")
        if isinstance(row, int) and isinstance(key, str) and key != row_key(identity, row):
            raise ValidationError(
                f"{str(output)!r} was written for another batch: its row {row} was sent"
                " with another idempotency key. The input changed since (or --batch-id"
                " differs), and resuming could pay a row twice. Restore the input to"
                " finish that batch, or write a new batch to a new output."
            )


#: A whole number of cents as written in a cell: ASCII digits only (str.isdigit also
#: takes "²", and stripping every "-" took "--5"; int() then failed outside the row).
_CENTS = re.compile(r"-?[0-9]+")


def _amount(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _CENTS.fullmatch(value.strip()):
        return int(value.strip())
    raise RowError(f"amount must be a whole number of cents, not {value!r}")


def _fields_of(cells: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in _TEXT:
        value = cells.get(name)
        if isinstance(value, str):
            value = value.strip()
        if value not in (None, ""):
            fields[name] = value
    if cells.get("amount") in (None, ""):
        raise RowError("amount is required (in cents)")
    fields["amount"] = _amount(cells["amount"])
    for name in _FLAGS:
        value = cells.get(name)
        if isinstance(value, str):
            value = _flag(value, name)
        if value is not None:
            fields[name] = value
    metadata = cells.get("metadata")
    if isinstance(metadata, str) and metadata.strip():
        fields["metadata"] = parse_metadata(metadata)
    elif metadata not in (None, ""):
        fields["metadata"] = metadata
    return fields


def read_payout_rows(
    path: str, stdin: IO[str] | None = None
) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """(row number, payout fields or the reason the row is bad), lazily, in input order."""
    return fields_of_rows(read_cells(path, stdin), _fields_of)


def payout_request(
    fields: dict[str, Any], key: str, *, default_platform: str | None = None
) -> PayoutRequest:
    """The request for one row: a payout to a user, or a payout link to a phone."""
    fields = {**fields, "idempotency_key": key}
    if "user_id" in fields:
        if "platform" not in fields and default_platform:
            fields["platform"] = default_platform
        for name in ("country_code", "phone_number", "memo"):
            if name in fields:
                raise RowError(f"{name} is for payout links; a row with user_id pays the user")
        return _fields.build(CreatePayout, fields)
    if "country_code" in fields and "phone_number" in fields:
        payee = {"country_code": fields.pop("country_code"),
                 "phone_number": fields.pop("phone_number")}
        if "platform" in fields or "account_id" in fields or "fund" in fields:
            raise RowError("platform, account_id and fund need a user_id")
        return _fields.build(PayoutSendRequest, {**fields, "payee": payee})
    raise RowError("each row needs a user_id, or a country_code and phone_number")


async def run_payout_job(
    client: Client,
    rows: Iterator[tuple[int, dict[str, Any] | RowError]],
    output: Path,
    *,
    identity: str,
    default_platform: str | None = None,
    concurrency: int = 16,
    on_progress: Callable[[JobProgress], None] | None = None,
    stop: asyncio.Event | None = None,
    total: int | None = None,
) -> JobProgress:
    """Send one payout per row not yet ok in `output`, appending one line per row.

    Setting `stop` ends the job gracefully: no new row is sent, the rows in flight
    finish and are recorded, and `interrupted` is set.
    """
    check_same_batch(output, identity)
    progress = JobProgress(total=total)
    already_ok = recorded_ok(output, results=("payout", "payout_link"))
    row_of: dict[int, tuple[int, str]] = {}

    async def send(request: PayoutRequest) -> Any:
        if isinstance(request, CreatePayout):
            return await client.payouts.send_create(request)
        return await client.payouts.send(**attrs.asdict(request, recurse=False))

    with JobLog(client, output, progress, on_progress) as log:
        write, report = log.write, log.report

        def requests() -> Iterator[PayoutRequest]:
            index = 0
            for number, fields in rows:
                if stop is not None and stop.is_set():
                    progress.interrupted = True
                    return
                if number in already_ok:
                    progress.skipped += 1
                    continue
                key = row_key(identity, number)
                try:
                    if isinstance(fields, RowError):
                        raise fields
                    request = payout_request(fields, key, default_platform=default_platform)
                except ValidationError as exc:
                    write({"row": number, "ok": False, "idempotency_key": key,
                           "error": error_record(exc)})
                    progress.failed += 1
                    report()
                    continue
                row_of[index] = (number, key)
                index += 1
                yield request

        batch: Batch[PayoutRequest, Any] = Batch(
            requests(), send, prepare=lambda request: request, concurrency=concurrency,
        )
        async for item in batch:
            number, key = row_of.pop(item.index)
            if item.ok:
                kind = "payout" if isinstance(item.request, CreatePayout) else "payout_link"
                write({"row": number, "ok": True, "idempotency_key": key,
                       kind: converter.unstructure(item.result)})
                progress.ok += 1
            else:
                assert item.error is not None
                write({"row": number, "ok": False, "idempotency_key": key,
                       "error": error_record(item.error)})
                progress.failed += 1
            report()
        report()
    return progress
