"""A real Dots API server on 127.0.0.1 (aiohttp.web), with faults on demand.

Serves every operation of Dots' v2 OpenAPI document under `/api`: flows from memory on a
fast path of their own here, every other operation through `api.py` (users, transfers
and payout links from memory, the rest from their response schemas). It checks Basic
auth, validates requests as the API documents, and answers errors as JSON. Every request
goes through one pipeline, in this order:

    record -> latency -> connection reset -> queued or random error -> auth
           -> server rate limit -> endpoint -> fault after processing

so a fault before the endpoint never creates an object, and one after it (a lost or
wrong answer to a create that took effect) always has: what the counters say was
created is exactly what a client may have caused.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
import uuid
from collections import Counter, deque
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypedDict

import attrs
from aiohttp import web

from .api import ApiState, IdempotencyMode, ListOrder
from .faults import FaultPlan, FaultState, ForcedResponse, Padding
from .spec import InvalidInput as SpecViolation
from .spec import load_spec
from .validation import InvalidInput, validate_create_flow
from .webhooks import WebhookMessage, WebhookSender

__all__ = ["DotsEmulator", "EmulatorStats", "RecordedRequest"]

DEFAULT_CLIENT_ID = "emulator-client-id"
DEFAULT_API_KEY = "emulator-api-key"
#: the largest request body read (aiohttp refuses a larger one while reading it)
_MAX_BODY = 1024**2
#: what `pad_next` pads with, a piece at a time
_PADDING = b" " * (64 * 1024)
_HTML_502 = (
    "<html><head><title>502 Bad Gateway</title></head><body>"
    "<center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)
_REASONS = {
    400: ("invalid-input", "Bad request"),
    409: ("conflict", "Conflict"),
    413: ("payload-too-large", "Payload too large"),
    401: ("unauthorized", "Invalid credentials"),
    404: ("not-found", "Not found"),
    408: ("request-timeout", "Request timeout"),
    429: ("rate-limited", "Too many requests"),
    500: ("internal-error", "Internal server error"),
    502: ("bad-gateway", "Bad gateway"),
    503: ("service-unavailable", "Service unavailable"),
    504: ("gateway-timeout", "Gateway timeout"),
}


class Credentials(TypedDict):
    client_id: str
    api_key: str


@attrs.frozen
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    #: The request target as it arrived, undecoded: the path and the query's exact bytes.
    target: str = ""

    def json(self) -> Any:
        return json.loads(self.body)


@attrs.define
class EmulatorStats:
    """What the emulator saw. Tests assert on it: nothing lost, nothing duplicated."""

    requests: int = 0
    by_status: Counter[int] = attrs.Factory(Counter)
    by_route: Counter[str] = attrs.Factory(Counter)
    created: int = 0
    #: creates per `user_id`: a value above 1 means a flow was created twice for one user
    created_per_user: Counter[str] = attrs.Factory(Counter)
    #: objects created per resource ("flows", "users", "transfers", "payouts",
    #: "payout_links"); a request repeating an idempotency key creates nothing
    created_by_resource: Counter[str] = attrs.Factory(Counter)
    #: requests seen per `idempotency_key`
    requests_per_key: Counter[str] = attrs.Factory(Counter)
    resets: int = 0
    #: body bytes written for `pad_next` answers, and how many of them the client hung up
    #: on before their end
    padded_bytes_sent: int = 0
    padded_cut_off: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    #: arrival times (time.monotonic()) of the latest requests, for rate assertions
    arrivals: deque[float] = attrs.Factory(lambda: deque(maxlen=200_000))
    last_requests: deque[RecordedRequest] = attrs.Factory(lambda: deque(maxlen=50))

    @property
    def last_request(self) -> RecordedRequest:
        return self.last_requests[-1]

    @property
    def duplicates(self) -> int:
        """Flows created beyond the first for the same user."""
        return sum(n - 1 for n in self.created_per_user.values() if n > 1)


class DotsEmulator:
    """`async with DotsEmulator() as emu: Client(base_url=emu.base_url, ...)`.

    `client_id` / `api_key` are the credentials it accepts (`emu.credentials`).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultPlan | None = None,
        client_id: str = DEFAULT_CLIENT_ID,
        api_key: str = DEFAULT_API_KEY,
        record_bodies: bool = True,
        idempotency: IdempotencyMode = "replay",
        webhooks: WebhookSender | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.api_key = api_key
        self.record_bodies = record_bodies
        self.stats = EmulatorStats()
        self.flows: dict[str, dict[str, Any]] = {}
        # Creation order, and each id's place in it: a page is found in O(limit).
        self._flow_order: list[str] = []
        #: The order `GET /v2/flows` lists in (newest first, as Dots does), so that a test
        #: can check that reconciliation never counts on it.
        self.flows_order: ListOrder = "newest-first"
        self._flow_index: dict[str, int] = {}
        self._faults = FaultState(faults or FaultPlan())
        self._expected_auth = "Basic " + base64.b64encode(
            f"{client_id}:{api_key}".encode()
        ).decode()
        self._runner: web.AppRunner | None = None
        #: webhook deliveries: `emulator.webhooks.subscribe(url, secret)`, `.emit(...)`
        self.webhooks = webhooks if webhooks is not None else WebhookSender()
        self._app = web.Application(middlewares=[self._pipeline], client_max_size=_MAX_BODY)
        self._app.router.add_post("/api/v2/flows", self._create_flow)
        self._app.router.add_get("/api/v2/flows", self._list_flows)
        self._app.router.add_get("/api/v2/flows/{flow_id}", self._get_flow)
        #: Every other operation of the spec: checked against it, answered from memory
        #: (users, transfers, payouts, payout links) or from its response schema.
        #: `idempotency`: what a repeated `idempotency_key` gets, the first answer again
        #: ("replay", Dots' idempotency reference) or a 409 ("reject", the spec's text).
        self.spec = load_spec()
        self.api = ApiState(
            self.spec, _error, lambda: self.stats, idempotency=idempotency,
            link_base=lambda: self.url,
        )
        self.api.on_change.append(self._send_change)
        self.api.register(self._app.router, skip={"POST /v2/flows", "GET /v2/flows",
                                                  "GET /v2/flows/{flow_id}"})

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> DotsEmulator:
        # A test server stops at once: in-flight handlers (a latency fault) are cancelled.
        runner = web.AppRunner(
            self._app, access_log=None, handle_signals=False, shutdown_timeout=0.1
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=1024)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        await self.webhooks.close()  # no delivery outlives the emulator
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> DotsEmulator:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The API base, ready for `aiodots.Client(base_url=...)`."""
        return f"{self.url}/api"

    @property
    def credentials(self) -> Credentials:
        """`Client(**emulator.credentials, base_url=emulator.base_url)`."""
        return {"client_id": self.client_id, "api_key": self.api_key}

    # -- faults, changed while running ------------------------------------------------------

    @property
    def faults(self) -> FaultPlan:
        return self._faults.plan

    def set_faults(self, plan: FaultPlan) -> None:
        """Replace the fault plan (the rate limit's bucket starts full again)."""
        self._faults.set_plan(plan)

    def fail_next(
        self, count: int = 1, *, status: int = 503, body: str = "json",
        retry_after: str | None = None,
    ) -> None:
        """Answer the next `count` requests with `status` before processing them."""
        forced = ForcedResponse(status=status, body=body, retry_after=retry_after)  # type: ignore[arg-type]
        self._faults.forced.extend([forced] * count)

    def reset_next(self, count: int = 1) -> None:
        """Drop the connection of the next `count` requests before processing them."""
        self._faults.resets_pending += count

    def truncate_next(self, count: int = 1) -> None:
        """Process the next `count` successful requests, then send their JSON cut short.
        (The object exists: this is the case a client must not silently retry.)"""
        self._faults.truncations_pending += count

    def pad_next(self, count: int = 1, *, size: int, chunked: bool = False) -> None:
        """Process the next `count` successful requests, then send their JSON padded with
        spaces to `size` bytes (still valid JSON; as is if already larger): with a
        `Content-Length`, or `chunked` without one. Written as the client reads it, and
        stopped when it hangs up: `size` may be far more than it will ever read.
        `stats.padded_bytes_sent` and `stats.padded_cut_off` say how far it got."""
        if size < 0:
            raise ValueError(f"size must be 0 or more, not {size}")
        self._faults.paddings.extend([Padding(size, chunked)] * count)

    # One-shot faults after processing (the object exists; the answer is lost or wrong).
    def reset_after_next(self, count: int = 1) -> None:
        """Process the next `count` successful requests, then drop their connections."""
        self._faults.after_processing.extend(["reset"] * count)

    def fail_after_next(self, count: int = 1, *, status: int = 500) -> None:
        """Process the next `count` successful requests, then answer `status` instead."""
        self._faults.after_processing.extend([ForcedResponse(status=status)] * count)

    def reset_stats(self) -> None:
        self.stats = EmulatorStats()

    # -- state changes that send webhooks ----------------------------------------------------

    def set_transfer_status(self, transfer_id: str, status: str) -> dict[str, Any]:
        """Move a transfer or payout to `status` (`completed`, `failed`, ...) as Dots does
        when money settles, and send `transfer.<status>` to the subscribed endpoints."""
        if transfer_id not in self.api.transfers:
            raise KeyError(f"the emulator has no transfer {transfer_id!r}")
        return self.api.set_transfer_status(transfer_id, status)

    def _send_change(self, kind: str, obj: dict[str, Any]) -> None:
        # Transfers' and users' changes become webhooks, as Dots sends them; with no
        # endpoint subscribed nothing is kept (a benchmark creates millions of objects).
        if not self.webhooks.endpoints:
            return
        if kind.startswith("transfer."):
            self.webhooks.emit(kind, {"transfer_id": obj["id"]})
        elif kind == "user.updated":
            self.webhooks.emit(kind, {"user_id": obj["id"]})

    def complete_flow(self, flow_id: str) -> WebhookMessage:
        """Mark every step of a flow completed, as if its person finished it, and send
        `flow.updated` to the endpoints subscribed on `self.webhooks`."""
        flow = self.flows.get(flow_id)
        if flow is None:
            raise KeyError(f"the emulator has no flow {flow_id!r}")
        flow["completed_steps"] = list(flow["steps"])
        return self.webhooks.emit("flow.updated", {"flow_id": flow_id})

    # -- the pipeline ---------------------------------------------------------------------

    @web.middleware
    async def _pipeline(self, request: web.Request, handler: Any) -> web.StreamResponse:
        stats = self.stats
        stats.requests += 1
        stats.arrivals.append(time.monotonic())
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        route = request.match_info.route.resource
        stats.by_route[f"{request.method} {route.canonical if route else request.path}"] += 1
        try:
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                # aiohttp's own answer would be text and pass uncounted: answer as every
                # other error, and count it.
                stats.by_status[413] += 1
                return _error(413, f"the body is over {_MAX_BODY} bytes")
            if self.record_bodies:
                stats.last_requests.append(
                    RecordedRequest(
                        request.method, request.path, dict(request.query),
                        dict(request.headers), body, request.raw_path,
                    )
                )
            if b'"idempotency_key"' in body:
                # Counted as it arrives, before any fault: a test sees every attempt.
                key = _idempotency_key(body)
                if key is not None:
                    stats.requests_per_key[key] += 1
            response = await self._answer(request, handler)
            if response is None:
                return web.Response(status=499)  # the connection is already gone
            stats.by_status[response.status] += 1
            return response
        finally:
            stats.in_flight -= 1

    async def _answer(self, request: web.Request, handler: Any) -> web.StreamResponse | None:
        faults = self._faults
        delay = faults.latency()
        if delay:
            await asyncio.sleep(delay)
        if faults.take_reset():
            self.stats.resets += 1
            assert request.transport is not None
            request.transport.abort()
            return None
        forced = faults.take_forced()
        if forced is not None:
            return _forced_response(forced)
        if request.headers.get("Authorization") != self._expected_auth:
            return _error(401, self._auth_problem(request.headers.get("Authorization")))
        limit_headers: dict[str, str] = {}
        if faults.bucket is not None:
            wait = faults.bucket.take()
            limit_headers = faults.bucket.limit_headers()
            if wait is not None:
                headers = dict(limit_headers)
                value = faults.bucket.retry_after_header(wait)
                if value is not None:
                    headers["Retry-After"] = value
                return _error(429, "rate limit exceeded", headers=headers)
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPNotFound:
            response = _error(404, f"no route for {request.method} {request.path}")
        except web.HTTPMethodNotAllowed:
            response = _error(405, f"{request.method} is not allowed on {request.path}")
        response.headers.update(limit_headers)  # the server's announced limit, if any
        if 200 <= response.status < 300:  # faults after processing: see faults.py
            after = faults.take_after_processing(request.method)
            if after == "reset":
                self.stats.resets += 1
                assert request.transport is not None
                request.transport.abort()
                return None
            if after is not None:
                return _forced_response(after)
        # Only a successful answer with a body is cut or padded (and uses the fault up):
        # an error in between must not spend it, or the create it was meant for arrives
        # whole.
        if (
            200 <= response.status < 300
            and isinstance(response, web.Response)
            and response.body
        ):
            if faults.take_truncation():
                raw = bytes(response.body)  # type: ignore[arg-type]
                return web.Response(
                    status=response.status, body=raw[: len(raw) // 2],
                    content_type="application/json", headers=limit_headers,
                )
            padding = faults.take_padding()
            if padding is not None:
                return await self._send_padded(request, response, padding, limit_headers)
        return response

    async def _send_padded(
        self, request: web.Request, answer: web.Response, padding: Padding,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        raw = bytes(answer.body)  # type: ignore[arg-type]
        size = max(padding.size, len(raw))
        response = web.StreamResponse(status=answer.status, headers=headers)
        response.content_type = "application/json"
        if padding.chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = size
        await response.prepare(request)
        piece, left = raw, size
        try:
            while left:
                await response.write(piece)  # waits while the client does not read
                self.stats.padded_bytes_sent += len(piece)
                left -= len(piece)
                piece = _PADDING[: min(left, len(_PADDING))]
            await response.write_eof()
        except ConnectionError:  # the client hung up before the end, as it may
            self.stats.padded_cut_off += 1
        return response

    def _auth_problem(self, header: str | None) -> str:
        if not header:
            return "missing Authorization header"
        scheme, _, token = header.partition(" ")
        if scheme != "Basic":
            return "Authorization must use the Basic scheme"
        try:
            base64.b64decode(token, validate=True)
        except (binascii.Error, ValueError):
            return "malformed Basic credentials"
        return "invalid client id or API key"

    # -- endpoints ------------------------------------------------------------------------

    async def _create_flow(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(400, "the body is not valid JSON")
        try:
            validate_create_flow(body)
            self.spec.check_body(self.spec.operations["POST /v2/flows"], body)
        except (InvalidInput, SpecViolation) as exc:
            return _error(400, str(exc))
        flow_id = str(uuid.uuid4())
        flow = {
            "id": flow_id,
            "created": datetime.now(UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"
            ),
            "user_id": body.get("user_id"),
            "steps": [s if isinstance(s, str) else s["name"] for s in body["steps"]],
            "completed_steps": [],
            "link": f"{self.url}/flow/{flow_id}",
            "metadata": body.get("metadata"),
        }
        self.flows[flow_id] = flow
        self._flow_index[flow_id] = len(self._flow_order)
        self._flow_order.append(flow_id)
        self.stats.created += 1
        self.stats.created_by_resource["flows"] += 1
        if body.get("user_id"):
            self.stats.created_per_user[body["user_id"]] += 1
        return web.json_response(flow)

    async def _get_flow(self, request: web.Request) -> web.Response:
        flow = self.flows.get(request.match_info["flow_id"])
        if flow is None:
            return _error(404, "flow not found")
        return web.json_response(flow)

    async def _list_flows(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            self.spec.check_query(self.spec.operations["GET /v2/flows"], query)
        except SpecViolation as exc:
            return _error(400, str(exc))
        try:
            limit = int(query.get("limit", "10"))
        except ValueError:
            return _error(400, "'limit' must be an integer")
        if not 1 <= limit <= 100:
            return _error(400, "'limit' must be between 1 and 100")
        if "starting_after" in query and "ending_before" in query:
            return _error(400, "use 'starting_after' or 'ending_before', not both")
        # Position k of the listing order is creation index n - 1 - k newest first, k
        # oldest first.
        order, count = self._flow_order, len(self._flow_order)
        if "starting_after" in query:
            cursor = self._listed_position(query["starting_after"])
            if cursor is None:
                return _error(400, "'starting_after' is not a known flow id")
            start, end = cursor + 1, min(count, cursor + 1 + limit)
            has_more = end < count
        elif "ending_before" in query:
            cursor = self._listed_position(query["ending_before"])
            if cursor is None:
                return _error(400, "'ending_before' is not a known flow id")
            start, end = max(0, cursor - limit), cursor
            has_more = start > 0
        else:
            start, end = 0, min(count, limit)
            has_more = end < count
        newest_first = self.flows_order == "newest-first"
        window = [
            self.flows[order[count - 1 - k if newest_first else k]] for k in range(start, end)
        ]
        return web.json_response({"data": window, "has_more": has_more})

    def _listed_position(self, flow_id: str) -> int | None:
        index = self._flow_index.get(flow_id)
        if index is None or self.flows_order == "oldest-first":
            return index
        return len(self._flow_order) - 1 - index


def _error(
    status: int, message: str, *, headers: dict[str, str] | None = None,
    code: str | None = None,
) -> web.Response:
    if code is None:
        code, _ = _REASONS.get(status, ("error", "Error"))
    return web.json_response(
        {"error_code": code, "message": message}, status=status, headers=headers
    )


def _idempotency_key(body: bytes) -> str | None:
    try:
        decoded = json.loads(body)
    except ValueError:
        return None
    key = decoded.get("idempotency_key") if isinstance(decoded, dict) else None
    return key if isinstance(key, str) else None


def _forced_response(forced: ForcedResponse) -> web.Response:
    headers = {"Retry-After": forced.retry_after} if forced.retry_after else None
    if forced.body == "html":
        return web.Response(
            status=forced.status, text=_HTML_502, content_type="text/html", headers=headers
        )
    if forced.body == "truncated":
        return web.Response(
            status=forced.status, body=b'{"error_code": "internal-err',
            content_type="application/json", headers=headers,
        )
    _, reason = _REASONS.get(forced.status, ("error", "Error"))
    return _error(forced.status, f"{reason} (injected by the emulator)", headers=headers)
