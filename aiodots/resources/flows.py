"""`dots.flows`: create, retrieve, list and bulk-create onboarding flows."""

from __future__ import annotations

import functools
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from typing import Any, Unpack

from aiodots.batch import Batch, BatchSummary
from aiodots.converter import structure_page, structure_response, unstructure_request
from aiodots.errors import ValidationError
from aiodots.models import CreateFlow, Flow, FlowStep, Page, Step
from aiodots.reconcile import Reconcile, Reconciler
from aiodots.retry import Replay
from aiodots.transport import CallOptions, Transport

from ._base import Pages, list_query, page_params, quote_segment
from ._options import CallOverrides, call_options

__all__ = ["FlowPages", "Flows"]

_PATH = "/v2/flows"
DEFAULT_BATCH_CONCURRENCY = 64


class Flows:
    """Hosted onboarding flows (`/v2/flows`). Reached as `client.flows`.

    Every method takes the per-call overrides `timeout`, `max_retries`, `deadline`,
    `extra_headers`, `api_app_id` and `user_ip`.
    """

    #: A flow create has no idempotency key in the API, so it is repeated only when the
    #: request provably had no effect (connect failure, 408, 429, 503): never a duplicate.
    CREATE_REPLAY = Replay.UNPROCESSED_ONLY

    def __init__(self, transport: Transport, retry_counter: Callable[[], int]) -> None:
        self._transport = transport
        self._retry_counter = retry_counter

    async def create(
        self,
        steps: Iterable[Step | str | FlowStep | Mapping[str, Any]],
        *,
        user_id: str | None = None,
        metadata: Mapping[str, Any] | str | None = None,
        require_auth: bool | None = None,
        hide_go_to_dashboard_on_complete: bool | None = None,
        reconcile: bool | Reconcile = False,
        **overrides: Unpack[CallOverrides],
    ) -> Flow:
        """Create a flow. Invalid input raises `ValidationError` before anything is sent.

        `reconcile=True` (or a `Reconcile`): after a failure that may have created the
        flow, look it up instead of failing; see `aiodots.reconcile`.
        """
        request = CreateFlow(
            steps=steps,  # the converter validates each item
            user_id=user_id,
            metadata=metadata,
            require_auth=require_auth,
            hide_go_to_dashboard_on_complete=hide_go_to_dashboard_on_complete,
        )
        options = call_options(**overrides)
        reconciler = self._reconciler(reconcile, overrides)
        if reconciler is not None:
            return await reconciler.create(request, lambda r: self._post(r, options))
        return await self._post(request, options)

    async def send_create(self, request: CreateFlow, options: CallOptions | None = None) -> Flow:
        """Create a flow from a prepared `CreateFlow` (what `create_many` sends per item)."""
        return await self._post(request, options)

    def _post(self, request: CreateFlow, options: CallOptions | None) -> Awaitable[Flow]:
        """`send_create`'s call: the transport's coroutine itself, which `create` and
        `create_many`'s workers await with no coroutine around it (see `_page`)."""
        flow: Awaitable[Flow] = self._transport.request(
            "POST", _PATH, body=unstructure_request(request),
            replay=self.CREATE_REPLAY, options=options, decode=_created_flow,
        )
        return flow

    async def retrieve(self, flow_id: str, **overrides: Unpack[CallOverrides]) -> Flow:
        """Fetch one flow by id; `NotFoundError` when there is none."""
        if not isinstance(flow_id, str) or not flow_id.strip():
            raise ValidationError(f"flow_id must be a non-empty string, not {flow_id!r}")
        path = f"{_PATH}/{quote_segment(flow_id)}"
        flow: Flow = await self._transport.request(
            "GET", path, options=call_options(**overrides), decode=_retrieved_flow
        )
        return flow

    async def list_page(
        self,
        *,
        limit: int | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
        **overrides: Unpack[CallOverrides],
    ) -> Page[Flow]:
        """One page of flows (`limit` 1 to 100, cursors are flow ids)."""
        params = page_params(
            {"limit": limit, "starting_after": starting_after, "ending_before": ending_before}
        )
        return await self._page(params, call_options(**overrides))

    def _page(
        self, params: Mapping[str, str], options: CallOptions | None
    ) -> Awaitable[Page[Flow]]:
        """One page for a query already checked (what `FlowPages` sends, with the cursor
        the server's previous page gave). The transport's awaitable itself, not a
        coroutine around it: `list_page` would cross one more level per resume."""
        page: Awaitable[Page[Flow]] = self._transport.request(
            "GET", _PATH, params=params, options=options, decode=_flow_page
        )
        return page

    def list(
        self,
        *,
        limit: int | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
        **overrides: Unpack[CallOverrides],
    ) -> FlowPages:
        """Every flow, fetched a page at a time as you iterate (`async for flow in ...`).

        Pages follow `has_more`: forwards with `starting_after`, or backwards when you
        start from `ending_before`. Arguments are checked here, before any request.
        """
        return FlowPages(self, limit, starting_after, ending_before, overrides)

    def create_many(
        self,
        requests: Iterable[CreateFlow | Mapping[str, Any]]
        | AsyncIterable[CreateFlow | Mapping[str, Any]],
        *,
        concurrency: int = DEFAULT_BATCH_CONCURRENCY,
        ordered: bool = False,
        on_progress: Callable[[BatchSummary], None] | None = None,
        reconcile: bool | Reconcile = False,
        **overrides: Unpack[CallOverrides],
    ) -> Batch[CreateFlow, Flow]:
        """Create one flow per request, at most `concurrency` at once; see `Batch`.

        `reconcile=True` (or a `Reconcile`): each request is tagged with a call id (yours
        when tagged with `aiodots.with_call_id`), and items whose create may have taken
        effect are looked up, sharing scans, instead of failing; `item.request` is the
        tagged request.
        """
        options = call_options(**overrides)
        # A partial, not a wrapping coroutine: every coroutine level between the batch's
        # worker and the socket is crossed again each time the request resumes.
        create_one: Callable[[CreateFlow], Awaitable[Flow]] = functools.partial(
            self._post, options=options
        )
        prepare: Callable[[Any], CreateFlow] = CreateFlow.coerce
        call = create_one
        reconciler = self._reconciler(reconcile, overrides)
        if reconciler is not None:
            prepare, call = reconciler.prepare(CreateFlow.coerce), reconciler.sender(create_one)
        return Batch(
            requests,
            call,
            prepare=prepare,
            concurrency=concurrency,
            ordered=ordered,
            on_progress=on_progress,
            retry_counter=self._retry_counter,
        )

    # -- reconciliation: exactly once without a server key (aiodots/reconcile.py) -----------

    def _reconciler(
        self, reconcile: bool | Reconcile, overrides: CallOverrides
    ) -> Reconciler[Flow] | None:
        settings = Reconcile.of(reconcile)
        if settings is None:
            return None

        def newest_first(page_size: int) -> AsyncIterator[Page[Flow]]:
            # Pages, not their data: a page says whether the list ends there.
            return self.list(limit=page_size, **overrides).pages()

        return Reconciler(newest_first, settings, hold=self._transport.held)


def _created_flow(data: Any, status: int, path: str) -> Flow:
    return structure_response(data, Flow, method="POST", path=path, status=status)


def _retrieved_flow(data: Any, status: int, path: str) -> Flow:
    return structure_response(data, Flow, method="GET", path=path, status=status)


def _flow_page(data: Any, status: int, path: str) -> Page[Flow]:
    return structure_page(data, Flow, method="GET", path=path, status=status)


class FlowPages(Pages[Flow]):
    """Async iterator over flows, one page request at a time; `.pages()` yields pages.
    A list that does not advance ends with `InvalidResponseError` (see `Pages`).
    The arguments are checked when it is made, before any request."""

    def __init__(
        self,
        flows: Flows,
        limit: int | None,
        starting_after: str | None,
        ending_before: str | None,
        overrides: CallOverrides,
    ) -> None:
        params, first_after, first_before = list_query(
            {"limit": limit, "starting_after": starting_after, "ending_before": ending_before}
        )
        options = call_options(**overrides)

        async def fetch(cursor: Mapping[str, str]) -> Page[Flow]:
            # The caller's cursor, checked above, or the id of the flow the server listed
            # last (first, backwards): sent as the server gave it, not checked again.
            return await flows._page({**params, **cursor}, options)

        super().__init__(fetch, first_after, first_before, path=_PATH)
