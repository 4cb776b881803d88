"""One logical call: encode, authenticate, wait on the limiter, send, retry per policy,
map the final failure to a typed error, return decoded JSON.

The first attempt runs without tenacity: a call that succeeds (nearly all of them) pays
only for the request itself. Only a retryable failure builds an `AsyncRetrying` (one per
call, never shared: tenacity keeps per-call state on it).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import aiohttp
import attrs
from aiohttp import hdrs
from multidict import CIMultiDict
from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt
from yarl import URL

from . import _json
from ._version import __version__
from .errors import (
    REFUSAL_STATUSES,
    APIConnectionError,
    APIError,
    APITimeoutError,
    ClientClosedError,
    ConnectFailed,
    ConnectionDropped,
    DotsError,
    IdempotencyKeyReusedError,
    NotSentTimeout,
    RateLimitError,
    ResponseTooLargeError,
    TLSVerificationError,
    UnreadableResponseError,
    ValidationError,
    error_for_response,
    error_for_unread_body,
    excerpt,
    response_too_large,
)
from .ratelimit import (
    BoundedLimiter,
    HeaderAwareLimiter,
    ImmediateLimiter,
    QuotaAwareLimiter,
    RateLimiter,
    WaitTooLong,
)
from .ratelimit_headers import parse_rate_limit_headers
from .retry import (
    Replay,
    RetryBudget,
    RetryPolicy,
    finite_seconds,
    is_ambiguous,
    is_key_rejection,
    parse_retry_after,
)
from .running_loop import being_cancelled
from .session import attempt_timeout

__all__ = ["MAX_RESPONSE_SIZE", "CallOptions", "ClientStats", "Transport", "default_headers"]

log = logging.getLogger("aiodots")

T = TypeVar("T")

#: The shortest wait for the limiter that `max_retry_after` can refuse. A Retry-After
#: asks for whole seconds, so a `max_retry_after` below one refuses every pause; it must
#: not also refuse the pacing of a limit the server announces (100/s: 10 ms a call).
_SHORTEST_REFUSED_WAIT = 1.0

USER_AGENT = f"aiodots/{__version__}"

#: The default `Client(max_response_size=...)`, in bytes: 32 MiB. Every answer of the
#: API is JSON, and the largest a spec allows is a payout batch's results: up to 5,000
#: items with their requests (`include_request=true`) and metadata, some megabytes. A
#: list page holds at most 100 objects. No operation answers with a file.
MAX_RESPONSE_SIZE = 32 * 1024 * 1024

#: What a query's keys and values may hold to be sent exactly as written: RFC 3986's
#: unreserved characters, which no quoter changes (yarl's included).
_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]*").fullmatch


def _plain_query(params: Mapping[str, str]) -> str | None:
    """`params` as the query string aiohttp would send, when nothing in it needs quoting;
    else None (aiohttp quotes it)."""
    try:
        if _UNRESERVED("".join(params) + "".join(params.values())) is None:
            return None
    except TypeError:  # a value that is not a string: aiohttp's rules decide
        return None
    return "&".join([key + "=" + value for key, value in params.items()])


@functools.lru_cache(maxsize=256)
def _url_with_query(url: str, query: str) -> URL:
    """One URL object per target, shared by every request for it (the first page of a
    list, a poll). aiohttp reads a URL's host, port, path and query for every request,
    and yarl caches each on the URL object: `params` given to aiohttp make a new object
    per request, whose parts are worked out again. `GET /v2/flows?limit=10` measured 5 us
    less CPU per request this way (benchmarks/throughput.py), half its models' cost."""
    return URL(url).with_query(query)


def _encode_odd_body(body: Any) -> bytes:
    """A body the encoder refused: one with mappings that are not dicts is written with
    them as objects; anything else is a ValidationError, before anything is sent (the
    models check JSON values, but not, say, an integer past what the encoder writes)."""
    try:
        return _json.dumps_mappings(body)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"the request body cannot be written as JSON: {exc}") from exc


def connection_failure(
    exc: TimeoutError | aiohttp.ClientError, *, method: str, path: str
) -> APIConnectionError:
    """What an attempt that got no answer raises, with `exc` as its cause; `ConnectFailed`
    (and its subclass) where the request never left, which the retry policy and the
    reconciler rely on."""
    failure: APIConnectionError
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        # No connection in time (`attempt_timeout`'s connect part): nothing was sent.
        failure = NotSentTimeout(
            "timed out waiting for a connection; the request was not sent",
            method=method, path=path,
        )
    elif isinstance(exc, TimeoutError):
        failure = APITimeoutError("timed out waiting for the API", method=method, path=path)
    elif isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = exc.certificate_error
        failure = TLSVerificationError(
            "the server's TLS certificate was not accepted: "
            + (getattr(reason, "verify_message", None) or str(reason)),
            method=method, path=path,
        )
    elif isinstance(exc, aiohttp.ClientConnectorError):
        failure = ConnectFailed(f"could not connect: {exc.os_error}", method=method, path=path)
    elif isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        failure = ConnectionDropped(
            f"the connection dropped before the answer: {type(exc).__name__}: {exc}",
            method=method, path=path,
        )
    elif isinstance(exc, aiohttp.ClientResponseError):
        # An answer aiohttp could not take: a proxy that would not open the tunnel (then
        # nothing reached the API), or a response it could not parse. Said by status and
        # reason, and not chained: aiohttp's text names the URL it asked, and for a
        # proxy that is the proxy's, password included; a traceback would print it.
        if isinstance(exc, aiohttp.ClientHttpProxyError):
            return ConnectFailed(
                f"the proxy refused to connect: {exc.status} {exc.message}",
                method=method, path=path,
            )
        return APIConnectionError(
            f"connection failed: {type(exc).__name__}: {exc.status} {exc.message}",
            method=method, path=path,
        )
    else:
        failure = APIConnectionError(
            f"connection failed: {type(exc).__name__}: {exc}", method=method, path=path
        )
    failure.__cause__ = exc
    return failure


async def _read_bounded(
    response: aiohttp.ClientResponse, limit: int, method: str, path: str
) -> bytes:
    """The body of an answer that `_attempt`'s single read does not cover (one that had
    not arrived whole when its headers were read, or is over `limit`), if it is at most
    `limit` bytes as decoded. A `Content-Length` over the limit on a body sent as is is refused
    unread; any other body is read as it arrives, and reading stops as soon as more than
    `limit` bytes have come. (aiohttp 3.14 inflates a compressed body only as fast as it
    is read, so one that inflates without end stops there too; an older aiohttp inflates
    each chunk received whole first.) Past the limit the connection is closed, never
    pooled with the rest of the body unread, and the call fails with
    `ResponseTooLargeError`."""
    length = response.content_length
    if length is not None and length > limit and hdrs.CONTENT_ENCODING not in response.headers:
        response.close()
        raise response_too_large(
            response.status, response.headers, limit=limit, size=length, declared=True,
            method=method, path=path,
        )
    content = response.content
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            # What has arrived: at most aiohttp's read buffer (its high-water mark) and
            # one socket read, however large the body.
            chunk = await content.readany()
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                break
            chunks.append(chunk)
    except BaseException:
        response.close()  # as `ClientResponse.read` does: a body half read is not reused
        raise
    response.close()
    raise response_too_large(
        response.status, response.headers, limit=limit, size=size, declared=False,
        method=method, path=path,
    )


def default_headers(authorization: str | None) -> dict[str, str]:
    """The headers every request carries, set once on the session; the Authorization
    only when given (not with a proxy: see `Client`)."""
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    return headers if authorization is None else {"Authorization": authorization, **headers}


@attrs.frozen(kw_only=True)
class CallOptions:
    """Per-call overrides. Unset fields keep the client's settings."""

    timeout: float | None = attrs.field(default=None, validator=finite_seconds)
    max_retries: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )
    deadline: float | None = attrs.field(default=None, validator=finite_seconds)
    headers: Mapping[str, str] | None = None

    def apply(self, policy: RetryPolicy) -> RetryPolicy:
        changes: dict[str, Any] = {}
        if self.max_retries is not None:
            changes["max_retries"] = self.max_retries
        if self.deadline is not None:
            changes["deadline"] = self.deadline
        return attrs.evolve(policy, **changes) if changes else policy


@attrs.define
class ClientStats:
    """Counters a user can read at any time (`client.stats`). One instance per client."""

    calls: int = 0  #: logical calls started
    requests: int = 0  #: HTTP attempts sent (calls + retries)
    retries: int = 0
    rate_limited: int = 0  #: 429 responses seen
    connection_errors: int = 0
    failures: int = 0  #: logical calls that ended in an error (DotsError); a cancelled one did not
    budget_exhausted: int = 0  #: retries refused because the retry budget was spent
    limiter_wait_seconds: float = 0.0  #: time spent held by the rate limiter or a pause
    backoff_wait_seconds: float = 0.0  #: time spent sleeping between attempts

    def snapshot(self) -> ClientStats:
        return attrs.evolve(self)


class _Request:
    """One logical call's fixed parts, shared by its attempts. A plain slots class: it is
    built once per call on the hot path, where a frozen attrs class costs more."""

    __slots__ = (
        "data", "deadline_at", "decode", "headers", "idempotency_key", "max_pause", "method",
        "params", "path", "stream", "timeout", "url",
    )

    def __init__(
        self,
        method: str,
        path: str,
        url: str | URL,
        headers: Mapping[str, str] | None,
        data: bytes | None,
        params: Mapping[str, str] | None,
        timeout: aiohttp.ClientTimeout,
        deadline_at: float | None,
        max_pause: float,
        decode: Callable[[Any, int, str], Any] | None,
        stream: Callable[[], Any] | None,
        idempotency_key: str | None,
    ) -> None:
        self.method = method
        self.path = path
        self.url = url
        self.headers = headers
        self.data = data
        self.params = params
        self.timeout = timeout
        self.deadline_at = deadline_at
        self.max_pause = max_pause
        self.decode = decode
        self.stream = stream
        self.idempotency_key = idempotency_key


class Transport:
    def __init__(
        self,
        *,
        base_url: str,
        session: Callable[[], aiohttp.ClientSession],
        timeout: aiohttp.ClientTimeout,
        policy: RetryPolicy,
        limiter: RateLimiter,
        budget: RetryBudget | None,
        stats: ClientStats,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        call_headers: Mapping[str, str] | None = None,
        proxy_headers: Mapping[str, str] | None = None,
        max_response_size: int = MAX_RESPONSE_SIZE,
        traced: bool = False,
    ) -> None:
        # Paths are appended as text: joining "/v2/flows" onto ".../api" with URL
        # semantics would drop the "/api" base path.
        self._base_url = base_url.rstrip("/")
        # A query is folded into the URL (`_url_with_query`) only onto a base without one.
        self._fold_query = "?" not in self._base_url
        self._session = session
        # The session's own default (the Client passes the same object): a call that
        # keeps it passes no timeout to aiohttp.
        self._timeout = timeout
        self._policy = policy
        self._limiter = limiter
        # A limiter that reads the server's rate-limit headers, if this one does.
        self._header_limiter = limiter if isinstance(limiter, HeaderAwareLimiter) else None
        self._try_acquire = limiter.try_acquire if isinstance(limiter, ImmediateLimiter) else None
        # A limiter that holds every call while a quota the server said is spent lasts.
        self._quota_limiter = limiter if isinstance(limiter, QuotaAwareLimiter) else None
        # A limiter that can refuse a wait longer than a call accepts, if this one can.
        self._acquire_within = (
            limiter.acquire_within if isinstance(limiter, BoundedLimiter) else None
        )
        self._budget = budget
        self._stats = stats
        self._sleep = sleep
        #: the proxy's own credentials (`auth.proxy_parts`), sent with each request to it
        self._proxy_headers = proxy_headers
        #: the most bytes of an answer's body read (`_read_bounded`)
        self._max_response_size = max_response_size
        #: whether the session has aiohttp trace hooks (`_attempt` reads bodies for them)
        self._traced = traced
        # Calls waiting to be sent (held by the limiter, or sleeping before a retry), and
        # those of them that `close` cancelled: a closed client ends them at once, not
        # after a pause of up to `max_retry_after` for a request it can never send.
        self._holding: set[asyncio.Task[Any]] = set()
        self._ended: set[asyncio.Task[Any]] = set()
        self._closed = False
        # The headers of every request (credentials, identity) are the session's own
        # (`default_headers`); a call sends only what is its own. Three headers given per
        # request measured 9k instructions more than the same three on the session
        # (callgrind, a GET): aiohttp merges per-request headers in Python, header by header.
        # A call without a body so sends none of its own; one with a body, its type.
        # `call_headers` are what every request must carry itself instead: the
        # Authorization, when a proxy is in use (see `Client`).
        self._headers_plain = CIMultiDict(call_headers) if call_headers else None
        self._headers_body: Mapping[str, str] = CIMultiDict(
            {"Content-Type": "application/json", **(call_headers or {})}
        )

    @property
    def policy(self) -> RetryPolicy:
        return self._policy

    def close(self) -> None:
        """The client closes: every call waiting to be sent ends with ClientClosedError."""
        self._closed = True
        for task in self._holding:
            self._ended.add(task)
            task.cancel()

    async def held(self, wait: Callable[[], Awaitable[T]]) -> T:
        """`wait()` cut short by `close` with ClientClosedError: the limiter's wait, a
        backoff, and a call's waits outside the transport (reconciliation's)."""
        if self._closed:
            raise ClientClosedError("this aiodots Client is closed; create a new one")
        task = asyncio.current_task()
        assert task is not None
        self._holding.add(task)
        try:
            return await wait()
        except asyncio.CancelledError:
            # Only `close` cancelled it: a cancellation of the caller's own stands.
            if task in self._ended and task.uncancel() == 0:
                raise ClientClosedError(
                    "this aiodots Client was closed while the call waited to be sent"
                ) from None
            raise
        finally:
            self._holding.discard(task)
            self._ended.discard(task)

    def _backoff(self, seconds: float) -> Awaitable[None]:
        return self.held(lambda: self._sleep(seconds))

    def url_for(self, path: str) -> str:
        return self._base_url + path

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        replay: Replay = Replay.SAFE,
        options: CallOptions | None = None,
        decode: Callable[[Any, int, str], Any] | None = None,
        stream: Callable[[], Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Awaitable[Any]:
        """Send one logical call and return its decoded JSON body (None when empty), or
        what `decode(body, status, path)` makes of it: decoding inside the call lets a body
        of the wrong shape be reported with the status it came with. `decode` takes the
        path so that one module-level function serves every call (a closure made per call
        to hold the path measured 1k instructions).

        `stream` makes a fresh request body (multipart form, a streamed upload) for each
        attempt, so a retry sends it again from the start; its own headers apply.
        """
        try:
            data = None if body is None else _json.dumps(body)
        except TypeError:
            data = _encode_odd_body(body)
        headers = self._headers_plain if data is None and stream is None else self._headers_body
        if options is None:  # nearly every call
            policy, timeout = self._policy, self._timeout
        else:
            policy = options.apply(self._policy)
            timeout = self._timeout if options.timeout is None else attempt_timeout(options.timeout)
            if options.headers:
                headers = {**(headers or {}), **options.headers}
        url: str | URL = self._base_url + path
        if params and self._fold_query:
            query = _plain_query(params)
            if query is not None:
                url, params = _url_with_query(url, query), None
        request = _Request(
            method,
            path,
            url,
            headers,
            data,
            params,
            timeout,
            None if policy.deadline is None else time.monotonic() + policy.deadline,
            policy.max_retry_after,
            decode,
            stream,
            idempotency_key,
        )
        self._stats.calls += 1
        # A plain function that returns the first attempt itself, not a coroutine that
        # awaits it: every coroutine level between the caller and the socket is crossed
        # again each time the request resumes.
        return self._attempt(request, 1, (policy, replay))

    async def _retry(
        self, request: _Request, first: DotsError, policy: RetryPolicy, replay: Replay
    ) -> Any:
        # tenacity drives attempts 2..n. The first failure has already happened, so the
        # callable re-raises it once without I/O; tenacity then decides and waits for it
        # exactly as for any later failure.
        replayed: list[BaseException] = [first]
        spent = 0
        next_wait = 0.0
        attempt_number = 1
        # Whether an earlier attempt may have taken effect: then a keyed retry whose key
        # is refused as used means that earlier attempt went through.
        outcome_unknown = False

        async def attempt() -> Any:
            nonlocal attempt_number
            if replayed:
                raise replayed.pop()
            attempt_number += 1
            try:
                return await self._attempt(request, attempt_number)
            except APIError as exc:
                if outcome_unknown and replay is Replay.IDEMPOTENT and is_key_rejection(exc):
                    raise IdempotencyKeyReusedError(
                        "an earlier attempt of this call went through (its answer was "
                        f"lost), and the API refuses idempotency key {request.idempotency_key}"
                        f" as used: {exc.message}",
                        idempotency_key=request.idempotency_key,
                        status=exc.status, method=request.method, path=request.path,
                        body=exc.body, headers=exc.headers, error_code=exc.error_code,
                    ) from exc
                raise

        def should_retry(state: RetryCallState) -> bool:
            nonlocal spent, next_wait, outcome_unknown
            outcome = state.outcome
            exc = outcome.exception() if outcome is not None else None
            if exc is None:
                return False
            outcome_unknown = outcome_unknown or is_ambiguous(exc)
            if state.attempt_number > policy.max_retries or not policy.is_retryable(exc, replay):
                return False
            wait = policy.wait_for(exc, state.attempt_number)
            if request.deadline_at is not None and time.monotonic() + wait >= request.deadline_at:
                log.debug("%s %s: no retry, the deadline would pass", request.method, request.path)
                return False
            if self._budget is not None:
                cost = self._budget.try_spend(exc)
                if cost is None:
                    self._stats.budget_exhausted += 1
                    log.debug("%s %s: no retry, the retry budget is spent",
                              request.method, request.path)
                    return False
                spent += cost
            next_wait = wait
            return True

        def before_sleep(state: RetryCallState) -> None:
            self._stats.retries += 1
            self._stats.backoff_wait_seconds += next_wait
            if log.isEnabledFor(logging.DEBUG):
                outcome = state.outcome
                log.debug(
                    "%s %s: attempt %d failed (%s); retrying in %.3fs",
                    request.method, request.path, state.attempt_number,
                    outcome.exception() if outcome is not None else None, next_wait,
                )

        attempts = AsyncRetrying(
            retry=should_retry,
            wait=lambda _state: next_wait,
            stop=stop_after_attempt(policy.max_retries + 1),
            sleep=self._backoff,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            result: Any = await attempts(attempt)
        except DotsError:
            # As for the first attempt: a call cancelled (or stopped by misuse) did not
            # fail, wherever it was when it stopped.
            self._stats.failures += 1
            raise
        if self._budget is not None:
            self._budget.on_success(spent)
        return result

    async def _acquire(self, request: _Request, left: float | None = None) -> float:
        """The limiter's wait. What the server asked for (a pause, an announced limit)
        holds the call no longer than `max_retry_after`, as a Retry-After would not: a
        server announcing one request a day must not hold a web handler for a day. Nor
        longer than `left`, the seconds to the call's deadline: such a call fails at
        once, not when its deadline passes."""
        acquire_within = self._acquire_within
        if acquire_within is None:
            return await self._limiter.acquire()
        longest = max(request.max_pause, _SHORTEST_REFUSED_WAIT)
        try:
            return await acquire_within(longest if left is None else min(longest, left))
        except WaitTooLong as exc:
            if exc.seconds <= longest:  # refused for the deadline alone
                raise NotSentTimeout(
                    f"the call's deadline would pass while it waited for the rate limit"
                    f" ({exc.cause}, {exc.seconds:.1f} s)",
                    method=request.method, path=request.path,
                ) from None
            raise RateLimitError(
                f"not sent: {exc.cause} would hold the call {exc.seconds:.0f} s, longer than"
                f" max_retry_after ({request.max_pause:g} s)",
                status=429, method=request.method, path=request.path,
                retry_after=exc.seconds,
            ) from None

    async def _acquire_by_deadline(self, request: _Request) -> float:
        """The limiter's wait, cut short when the call's deadline passes: a pause that
        another call's 429 set, or a queue, must not hold a call past its deadline."""
        assert request.deadline_at is not None
        left = request.deadline_at - time.monotonic()
        try:
            async with asyncio.timeout(left):
                return await self._acquire(request, left)
        except TimeoutError:
            raise NotSentTimeout(
                "the call's deadline passed while it waited for the rate limit",
                method=request.method, path=request.path,
            ) from None

    def _heard_error(
        self, request: _Request, status: int, headers: Mapping[str, str], sent_at: float
    ) -> float | None:
        """Tell the stats and the limiter of an error answer, and return the wait its
        `Retry-After` asks for (a 429's or a 503's), if any: for a 429 that says a quota
        over a long window is spent, until that quota's reset, where that is later."""
        retry_after = None
        if status in REFUSAL_STATUSES:
            retry_after = parse_retry_after(headers.get("Retry-After"), date=headers.get("Date"))
        if self._header_limiter is not None:
            self._header_limiter.on_headers(headers)
        if status == 429:
            self._stats.rate_limited += 1
            spent = self._spent_quota(headers)
            if spent is not None and (retry_after is None or spent > retry_after):
                retry_after = spent
        # A Retry-After this call refuses to wait out must not hold every other caller
        # that long either: they go on, and fail fast on their own 429s if it persists.
        pause = retry_after
        if pause is not None and pause > request.max_pause:
            pause = None
        self._limiter.on_response(status, sent_at, pause)
        return retry_after

    def _spent_quota(self, headers: Mapping[str, str]) -> float | None:
        """The seconds until a quota that a 429's headers say is spent is whole again
        (`RateLimitInfo.quota_spent_for`), told to a `QuotaAwareLimiter`: it holds every
        call that long, and a call that will not wait fails unsent (`_acquire`). Read on
        a 429 only: a success's headers stay unparsed while the limit stays the same,
        and the one refusal that says a quota ran out costs a request, once."""
        if "RateLimit-Policy" not in headers:  # a quota is a policy with a window
            return None
        info = parse_rate_limit_headers(headers, now=time.time())
        spent = None if info is None else info.quota_spent_for
        if spent is not None and self._quota_limiter is not None:
            self._quota_limiter.on_spent_quota(spent)
        return spent

    def _heard_too_large(
        self,
        request: _Request,
        too_large: ResponseTooLargeError,
        response: aiohttp.ClientResponse,
        sent_at: float,
        attempt: int,
    ) -> APIError:
        """An answer whose body was over `max_response_size`, told to the stats and the
        limiter as one read whole is (a 2xx as a success): its status and headers arrived
        whole, only its body was not read. Returns what the attempt fails with
        (`error_for_unread_body`): a 429 that refused the call is a `RateLimitError`,
        whose Retry-After the retry policy waits out, whatever page came with it."""
        status = too_large.status
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s -> %d, its body over max_response_size (attempt %d, %.1f ms)",
                request.method, request.path, status, attempt,
                (self._limiter.now() - sent_at) * 1000,
            )
        if 200 <= status < 300:
            # The server accepted the request, whatever it answered with: a success for
            # the limiter as on the success path (the adaptive one logs the send, which
            # spent a token of the server's bucket), headers only while it wants them.
            header_limiter = self._header_limiter
            if header_limiter is not None and header_limiter.wants_headers:
                header_limiter.on_headers(response.headers)
            self._limiter.on_response(status, sent_at, None)
            return too_large
        retry_after = self._heard_error(request, status, response.headers, sent_at)
        return error_for_unread_body(too_large, reason=response.reason, retry_after=retry_after)

    async def _attempt(
        self, request: _Request, attempt: int, first: tuple[RetryPolicy, Replay] | None = None
    ) -> Any:
        """One attempt. The first (given `first`, the call's policy) also ends the call: a
        failure goes on to the retries (`_retry`), a success counts for the budget."""
        try:
            limiter = self._limiter
            try_acquire = self._try_acquire
            sent_at = None if try_acquire is None else try_acquire()
            if sent_at is None:
                if request.deadline_at is None:
                    waited = await self.held(lambda: self._acquire(request))
                else:
                    waited = await self.held(lambda: self._acquire_by_deadline(request))
                if waited:
                    self._stats.limiter_wait_seconds += waited
                sent_at = limiter.now()
            session = self._session()
            timeout = request.timeout
            if request.deadline_at is not None:
                left = request.deadline_at - time.monotonic()
                if left <= 0:
                    raise NotSentTimeout(
                        "the call's deadline passed", method=request.method, path=request.path
                    )
                timeout = attempt_timeout(min(left, timeout.total or left))
            data: Any = request.data
            headers = request.headers
            if request.stream is not None:
                data = request.stream()
                if isinstance(data, aiohttp.FormData):
                    # aiohttp sets the multipart Content-Type with its boundary itself.
                    headers = {k: v for k, v in (headers or {}).items() if k != "Content-Type"}
                sent_at = limiter.now()  # a body read from a file took its time
            self._stats.requests += 1
            # A redirect would carry the body and the credentials to another origin: a
            # 3xx is reported (RedirectError), never followed. Arguments equal to
            # aiohttp's defaults are left out: each keyword is matched against the ~30
            # of `ClientSession._request`, twice (5 of them measured 1.5k instructions).
            if data is None and headers is None and request.params is None and (
                timeout is self._timeout and self._proxy_headers is None
            ):
                sent = session.request(request.method, request.url, allow_redirects=False)
            else:
                sent = session.request(
                    request.method, request.url, data=data, params=request.params,
                    headers=headers, timeout=timeout, proxy_headers=self._proxy_headers,
                    allow_redirects=False,
                )
            try:
                # Awaited, not entered: `async with` puts a coroutine of its own between
                # this attempt and aiohttp's, crossed again at every resume, and four
                # more coroutine calls around the answer, which end in `release()`.
                response = await sent
                try:
                    # An answer that has arrived whole (a small one nearly always has by
                    # now), within the limit, is read at once, as ever; any other is read
                    # up to the limit (`_read_bounded`). Asking the stream, not the
                    # headers: a Content-Length and a Content-Encoding looked up in them
                    # measured 2.5k instructions per GET.
                    content = response.content
                    if content.is_eof() and content.total_bytes <= self._max_response_size:
                        if self._traced:
                            # aiohttp tells trace hooks of a body from `read()` alone.
                            raw = await response.read()
                        else:
                            # Taken from aiohttp's buffer as it is. `read()` gets there
                            # through five coroutine calls: 12k instructions per GET
                            # (callgrind), 3 us of CPU in the running client.
                            try:
                                raw = content.read_nowait()
                            except BaseException:
                                response.close()  # as `read()` does: never pooled
                                raise
                    else:
                        try:
                            raw = await _read_bounded(
                                response, self._max_response_size, request.method, request.path
                            )
                        except ResponseTooLargeError as too_large:
                            raise self._heard_too_large(
                                request, too_large, response, sent_at, attempt
                            ) from None
                    status = response.status
                finally:
                    response.release()  # pools the connection, or closes a broken one
            except (TimeoutError, aiohttp.ClientError) as exc:
                self._stats.connection_errors += 1
                failure = connection_failure(exc, method=request.method, path=request.path)
                raise failure from failure.__cause__
            except asyncio.CancelledError:
                # Closing the session cancels the requests still waiting for a pooled
                # connection (aiohttp's connector does): that is the client closing, not
                # this task being cancelled, and a caller must not take it for that.
                if session.closed and not being_cancelled():
                    raise ClientClosedError(
                        "this aiodots Client was closed while the call waited for a "
                        "connection; the request was not sent"
                    ) from None
                raise

            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "%s %s -> %d (attempt %d, %.1f ms)",
                    request.method, request.path, status, attempt,
                    (limiter.now() - sent_at) * 1000,
                )
            if 200 <= status < 300:
                header_limiter = self._header_limiter
                if header_limiter is not None and header_limiter.wants_headers:
                    header_limiter.on_headers(response.headers)
                limiter.on_response(status, sent_at, None)
                if not raw:
                    data = None
                else:
                    try:
                        data = _json.loads(raw)
                    except ValueError as exc:
                        try:  # what JSON allows and orjson does not (a lone surrogate)
                            data = _json.loads_lenient(raw)
                        except ValueError:
                            text = excerpt(raw.decode("utf-8", errors="replace"))
                            raise UnreadableResponseError(
                                f"the response body is not valid JSON: {text!r}",
                                status=status, method=request.method, path=request.path,
                                body=text, headers=response.headers,
                            ) from exc
                decode = request.decode
                result = data if decode is None else decode(data, status, request.path)
                if first is not None and self._budget is not None:
                    self._budget.on_success()
                return result

            headers = response.headers  # read only on the error path: success never needs it
            retry_after = self._heard_error(request, status, headers, sent_at)
            raise error_for_response(
                status, headers, raw, method=request.method, path=request.path,
                reason=response.reason, retry_after=retry_after,
            )
        except DotsError as exc:
            if first is None:
                raise
            policy, replay = first
            if policy.max_retries == 0 or not policy.is_retryable(exc, replay):
                self._stats.failures += 1
                raise
            return await self._retry(request, exc, policy, replay)
