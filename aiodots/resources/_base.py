"""What every resource shares: operations, path building, decoding, idempotency keys and
lazy pagination. Resource modules only say which operation a method sends and with what.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import attrs

from aiodots.batch import Batch, BatchSummary
from aiodots.converter import (
    structure_list,
    structure_page,
    structure_response,
    unstructure_request,
)
from aiodots.errors import (
    APIError,
    IdempotencyKeyReusedError,
    InvalidResponseError,
    ValidationError,
)
from aiodots.files import Upload
from aiodots.models import Page
from aiodots.models._fields import Param
from aiodots.models.transfers import Transfer
from aiodots.reconcile import Reconcile
from aiodots.retry import REPLAY, Replay, is_key_rejection
from aiodots.transport import CallOptions, Transport
from aiodots.watermark import WatermarkReconciler

from ._options import CallOverrides, call_options

__all__ = ["Operation", "Pages", "Resource"]

T = TypeVar("T")
Req = TypeVar("Req")

DEFAULT_BATCH_CONCURRENCY = 64
_CURSORS = frozenset(("starting_after", "ending_before"))


@attrs.frozen
class Operation:
    """One operation of the API: `"METHOD /v2/path"` and what its answer decodes to.

    `returns` is a model class (one object), `Page` of a model via `page_of`, a tuple of
    a model via `list_of`, or None for answers whose body carries nothing to keep.
    """

    method: str
    path: str
    returns: type[Any] | None = None
    page_of: type[Any] | None = None
    list_of: type[Any] | None = None
    #: Checks of query parameters beyond the pagination ones (enums, UUIDs, dates).
    query: Mapping[str, Param] = attrs.field(factory=dict)

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def replay(self) -> Replay:
        return REPLAY[self.key]

    def path_for(self, path_args: Mapping[str, object] | None) -> str:
        """The path with its parameters checked and quoted in."""
        if not path_args:
            return self.path
        return self.path.format_map(
            {name: _path_segment(name, value) for name, value in path_args.items()}
        )

    def decode(self, data: Any, status: int, path: str) -> Any:
        if self.page_of is not None:
            return structure_page(data, self.page_of, method=self.method, path=path, status=status)
        if self.list_of is not None:
            return structure_list(data, self.list_of, method=self.method, path=path, status=status)
        if self.returns is not None:
            return structure_response(
                data, self.returns, method=self.method, path=path, status=status
            )
        return None


def _path_segment(name: str, value: object) -> str:
    # A UUID, or an integer id (a transaction's, an approval policy's) as the API's
    # models hold it: each as its text.
    if isinstance(value, uuid.UUID) or (isinstance(value, int) and not isinstance(value, bool)):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{name} must be a non-empty string, not {value!r}")
    return quote_segment(value)


def quote_segment(value: str) -> str:
    """`value` quoted as one path segment. An id of ASCII letters, digits and hyphens (a
    UUID) is returned as it is, which is what `quote` would return: `quote` measured 6k
    instructions per call (callgrind), this check 2k for a UUID; with the str's own
    `isalnum`, which looks each character up in the Unicode database, 3k."""
    if value.isascii() and value.replace("-", "").encode().isalnum():
        return value
    if value in (".", ".."):
        # Sent as it is (quoting leaves dots alone) and resolved away by URL
        # normalisation: `users.delete("..")` would send DELETE /v2/.
        raise ValidationError(f"{value!r} cannot be an id: it would name another path")
    return quote(value, safe="")


def _query_value(name: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        if not value:
            raise ValidationError(f"{name} must not be empty")
        return value
    raise ValidationError(f"{name} must be a string, number or boolean, not {value!r}")


def page_params(query: Mapping[str, Any], op: Operation | None = None) -> dict[str, str]:
    """Query parameters as text, leaving out the unset ones; pagination checked here, and
    the operation's own checks (an unknown enum value fails before anything is sent).

    One pass over the arguments, without a comprehension: every `list_page` call builds
    its query here, and the three passes this replaced measured 9.8k instructions for
    `limit=10` (callgrind), a fifth of what a page of flows costs over raw aiohttp."""
    checks = op.query if op is not None else None
    params: dict[str, str] = {}
    for name, value in query.items():
        if checks and name in checks:
            value = checks[name](name, value)
        if value is None:
            continue
        if name == "limit":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
                raise ValidationError(f"limit must be an integer from 1 to 100, not {value!r}")
            params[name] = str(value)
        elif name in _CURSORS:
            if not isinstance(value, str) or not value:
                raise ValidationError(f"{name} must be an object id, not {value!r}")
            params[name] = value
        else:
            params[name] = _query_value(name, value)
    if "starting_after" in params and "ending_before" in params:
        raise ValidationError("give starting_after or ending_before, not both")
    return params


def list_query(
    query: Mapping[str, Any], op: Operation | None = None
) -> tuple[dict[str, str], str | None, str | None]:
    """A whole list's arguments, checked once and before any request (bad ones fail when
    the list is made, not at its first iteration): the query every page sends, and the
    caller's `starting_after` and `ending_before`, which start `Pages` (it sends each
    later cursor itself, as the server gave it)."""
    params = page_params(query, op)
    return params, params.pop("starting_after", None), params.pop("ending_before", None)


class Resource:
    """Base of every `client.<resource>`: sends operations through the transport."""

    def __init__(self, transport: Transport, retry_counter: Callable[[], int]) -> None:
        self._transport = transport
        self._retry_counter = retry_counter

    def _send(
        self,
        op: Operation,
        path_args: Mapping[str, object] | None = None,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        options: CallOptions | None = None,
        raw_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Awaitable[Any]:
        """Send one logical call of `op`; awaiting the result gives its decoded answer.

        `query` is the caller's arguments, checked here; `params` a query already
        checked (or taken from the server's answer, as a list's next cursor), sent as
        it is. A request model with an `idempotency_key` field gets a fresh UUID4 when the
        caller left it unset; the same key then goes out on every attempt.

        What it returns is the transport's coroutine itself, unless the call is a keyed
        transfer that may need looking up after it (`_recovering`): every coroutine level
        between the caller and the socket is crossed again each time the request resumes.
        """
        path = op.path_for(path_args)
        if query:
            params = page_params(query, op)
        key = None
        if body is not None and op.replay is Replay.IDEMPOTENT:
            body = with_idempotency_key(body)
            key = getattr(body, "idempotency_key", None)
        payload = unstructure_request(body) if body is not None else raw_body
        sent: Awaitable[Any] = self._transport.request(
            op.method, path, body=payload, params=params or None, replay=op.replay,
            options=options, decode=op.decode, idempotency_key=key,
        )
        if key is None or op.key not in RECOVERABLE:
            return sent
        return self._recovering(sent, payload, options)

    async def _recovering(
        self, sent: Awaitable[Any], payload: Any, options: CallOptions | None
    ) -> Any:
        """A keyed transfer's call (`sent`, not yet started), and the transfer it made
        when the key is refused."""
        # Only a keyed call may need to look its transfer up since it began: the clock is
        # read for those alone, not on every call, and before `sent` starts.
        started = datetime.now(UTC)
        try:
            return await sent
        except IdempotencyKeyReusedError:
            # The money moved on an attempt of this call whose answer was lost. Find what
            # it made; failing that, the error says so and names the key.
            found = await find_transfer(self, payload, started, options)
            if found is None:
                raise
            return found
        except APIError as exc:
            # The key was used before this call: by an earlier run of the same job that
            # died before recording its answer, say. Dots' idempotency reference answers
            # the first object again; where the API refuses the key instead, the client
            # looks for that object within the key's lifetime, so both readings agree.
            if not is_key_rejection(exc):
                raise
            found = await find_transfer(self, payload, started - KEY_LIFETIME, options)
            if found is None:
                raise
            return found

    async def _send_form(
        self,
        op: Operation,
        path_args: Mapping[str, object] | None,
        *,
        body: Any,
        options: CallOptions | None,
    ) -> Any:
        """Send `body`'s fields as multipart/form-data, its file streamed from disk."""
        upload = Upload(body.file)
        text = {name: str(value) for name, value in _fields_but_file(body).items()}
        return await self._send_stream(op, path_args, upload, upload.form(text), options)

    async def _send_base64_file(
        self,
        op: Operation,
        path_args: Mapping[str, object] | None,
        *,
        body: Any,
        options: CallOptions | None,
    ) -> Any:
        """Send `body` as JSON whose `file` is the file's base64, encoded while sending."""
        if body.file is None:
            return await self._send(op, path_args, body=body, options=options)
        upload = Upload(body.file)
        stream = upload.base64_json(_fields_but_file(body))
        return await self._send_stream(op, path_args, upload, stream, options)

    async def _send_stream(
        self,
        op: Operation,
        path_args: Mapping[str, object] | None,
        upload: Upload,
        stream: Callable[[], Any],
        options: CallOptions | None,
    ) -> Any:
        if not upload.rewindable:
            options = attrs.evolve(options or CallOptions(), max_retries=0)
        path = op.path_for(path_args)
        try:
            return await self._transport.request(
                op.method, path, replay=op.replay, options=options, decode=op.decode, stream=stream
            )
        finally:
            upload.close()

    def _pages(
        self,
        op: Operation,
        path_args: Mapping[str, object] | None,
        query: Mapping[str, Any],
        overrides: CallOverrides,
    ) -> Pages[Any]:
        params, starting_after, ending_before = list_query(query, op)
        options = call_options(**overrides)

        async def fetch(cursor: Mapping[str, str]) -> Page[Any]:
            # The cursor is the caller's, checked above, or the id of an item the server
            # listed: sent as text, never checked again as input (a list's own ids need
            # not pass its cursor check; the server has the last word on them).
            page: Page[Any] = await self._send(
                op, path_args, params={**params, **cursor}, options=options
            )
            return page

        return Pages(fetch, starting_after, ending_before, path=op.path)

    def _create_many(
        self,
        requests: Any,
        send: Callable[[Req, CallOptions | None], Awaitable[Any]],
        prepare: Callable[[Any], Req],
        *,
        concurrency: int,
        ordered: bool,
        on_progress: Callable[[BatchSummary], None] | None,
        overrides: CallOverrides,
        reconciler: WatermarkReconciler[Any] | None = None,
    ) -> Batch[Req, Any]:
        options = call_options(**overrides)

        def run_one(request: Req) -> Awaitable[Any]:
            # `send`'s awaitable itself, which the batch's worker awaits: a coroutine here
            # would be one more level crossed each time the request resumes.
            return send(request, options)

        def prepare_keyed(raw: Any) -> Req:
            # The key is fixed when the item is prepared, so every attempt of the item
            # carries the same one (and the caller sees it on `BatchItem.request`).
            return with_idempotency_key(prepare(raw))

        prepared: Callable[[Any], Req] = prepare_keyed
        call: Callable[[Req], Awaitable[Any]] = run_one
        if reconciler is not None:  # the call id is fixed when the item is prepared, too
            tagged: Callable[[Any], Any] = prepare_keyed  # (a model with metadata)
            sent: Callable[[Any], Awaitable[Any]] = run_one
            prepared, call = reconciler.prepare(tagged), reconciler.sender(sent)
        return Batch(
            requests,
            call,
            prepare=prepared,
            concurrency=concurrency,
            ordered=ordered,
            on_progress=on_progress,
            retry_counter=self._retry_counter,
        )

    def _reconciler(
        self,
        list_op: Operation,
        reconcile: bool | Reconcile,
        overrides: CallOverrides,
        *,
        batch: bool = False,
    ) -> WatermarkReconciler[Any] | None:
        """What runs a create with `reconcile=` (see `aiodots.watermark`), None when off.
        `list_op` lists the objects the create makes, with no argument but the page's."""
        settings = Reconcile.of(reconcile)
        if settings is None:
            return None

        def listed(page_size: int) -> AsyncIterator[Page[Any]]:
            # Pages, not their data: a page says whether the list ends there.
            return self._pages(list_op, None, {"limit": page_size}, overrides).pages()

        return WatermarkReconciler(
            listed, settings, watermark=batch, hold=self._transport.held
        )


#: Keyed creates whose object an earlier attempt made can be found again: both make a
#: transfer, and the transfers list filters by user and creation date.
RECOVERABLE = frozenset({"POST /v2/transfers", "POST /v2/payouts"})
_LIST_TRANSFERS = Operation("GET", "/v2/transfers", page_of=Transfer)
#: How long Dots keeps an idempotency key.
KEY_LIFETIME = timedelta(hours=24)
#: How far before the call's start a transfer may be stamped (clocks differ).
RECOVERY_CLOCK_SKEW = timedelta(minutes=5)
#: The most transfers one recovery reads (10 pages of 100).
RECOVERY_SCAN_LIMIT = 1000


async def find_transfer(
    resource: Resource, sent: Mapping[str, Any], started: datetime, options: CallOptions | None
) -> Any:
    """The transfer an earlier attempt of a keyed call created, after the API refused the
    retry's key: the only transfer for that user since the call began with the same
    amount and metadata. None when there is none, or more than one (then no guess)."""
    user_id = sent.get("user_id")
    if user_id is None:
        return None
    since = started - RECOVERY_CLOCK_SKEW
    params = page_params({"user_id": user_id, "start_date": since, "limit": 100})

    async def fetch(cursor: Mapping[str, str]) -> Page[Any]:
        page: Page[Any] = await resource._send(
            _LIST_TRANSFERS, params={**params, **cursor}, options=options
        )
        return page

    matches = []
    seen = 0
    async for transfer in Pages[Any](fetch):
        seen += 1
        if (
            transfer.amount == sent.get("amount")
            # No metadata sent may come back as {} or null: the same "none".
            and (transfer.metadata or None) == (sent.get("metadata") or None)
            and (transfer.created is None or transfer.created >= since)
        ):
            matches.append(transfer)
        if seen >= RECOVERY_SCAN_LIMIT:
            break
    return matches[0] if len(matches) == 1 else None


def _fields_but_file(body: Any) -> dict[str, Any]:
    fields: dict[str, Any] = unstructure_request(attrs.evolve(body, file=None))
    return {name: value for name, value in fields.items() if name != "file" and value is not None}


def with_idempotency_key(body: T) -> T:
    """`body` with a fresh UUID4 `idempotency_key` unless it has one (or takes none)."""
    if attrs.has(type(body)) and getattr(body, "idempotency_key", "") is None:
        return attrs.evolve(body, idempotency_key=str(uuid.uuid4()))  # type: ignore[misc]
    return body


class Pages(Generic[T]):
    """Async iterator over every object of a list, one page request at a time;
    `.pages()` yields the pages themselves.

    Pages follow `has_more`: forwards with `starting_after`, or backwards when started
    from `ending_before`. The next cursor is the id of the page's last item (its first,
    backwards) as text, handed to `fetch` as the server gave it. A server that answers
    the same cursor again, or a page already seen, or whose edge item has no id to go on
    from, ends the iteration with `InvalidResponseError` instead of looping forever.
    """

    def __init__(
        self,
        fetch: Callable[[Mapping[str, str]], Any],
        starting_after: str | None = None,
        ending_before: str | None = None,
        *,
        path: str = "",
    ) -> None:
        self._fetch = fetch
        self._starting_after = starting_after
        self._ending_before = ending_before
        self._path = path

    async def pages(self) -> AsyncIterator[Page[T]]:
        backwards = self._ending_before is not None
        cursor = self._ending_before if backwards else self._starting_after
        seen_cursors: set[str] = set()
        seen_pages: set[tuple[str | None, ...]] = set()
        while True:
            arg = "ending_before" if backwards else "starting_after"
            page: Page[T] = await self._fetch({arg: cursor} if cursor is not None else {})
            ids = tuple(_cursor_of(item) for item in page.data)
            if ids in seen_pages and ids:
                raise InvalidResponseError(
                    f"the list does not advance: {arg}={cursor!r} answered a page already "
                    "seen",
                    status=200, method="GET", path=self._path, body=None,
                )
            seen_pages.add(ids)
            yield page
            if not page.has_more or not page.data:
                return
            next_cursor = ids[0] if backwards else ids[-1]
            if next_cursor is None:
                where = f"the page at {arg}={cursor!r}" if cursor is not None else "the first page"
                edge = "first" if backwards else "last"
                raise InvalidResponseError(
                    f"the list cannot advance: {where} says more follow, but its {edge} "
                    "item has no id to continue from",
                    status=200, method="GET", path=self._path, body=None,
                )
            if not next_cursor or next_cursor == cursor or next_cursor in seen_cursors:
                raise InvalidResponseError(
                    f"the list does not advance: after {arg}={cursor!r} the next cursor "
                    f"would be {next_cursor!r} again",
                    status=200, method="GET", path=self._path, body=None,
                )
            if cursor is not None:
                seen_cursors.add(cursor)
            cursor = next_cursor

    def __aiter__(self) -> AsyncIterator[T]:
        return self._items()

    async def _items(self) -> AsyncIterator[T]:
        async for page in self.pages():
            for item in page.data:
                yield item


def _cursor_of(item: object) -> str | None:
    """A listed item's id as the cursor that continues after it: the id as the server
    gave it, as text (a transaction's id is an int), or None when the item has none.
    `str()` alone would make a missing id the cursor "None"."""
    value = getattr(item, "id", None)
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)
