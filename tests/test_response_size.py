"""A response body is read into memory only up to `Client(max_response_size=...)`: a
misbehaving server or proxy, or an endless chunked body, cannot exhaust a job's memory.
Over the limit the call fails with `ResponseTooLargeError`, once, and the connection is
closed rather than pooled half read.

A server on 127.0.0.1 sends a flow padded with spaces (still valid JSON) to the size a
test asks for, with a `Content-Length`, chunked without one, or gzip-compressed, and
records what it wrote and on which connection. It can answer 429 or 503 first, with
a `Retry-After` and a body as large: only the body is past the limit, and the status
and headers are heard as those of any answer."""

from __future__ import annotations

import asyncio
import json
import math
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal, NamedTuple

import pytest
from aiohttp import web

import aiodots
from aiodots.ratelimit import AdaptiveRateLimiter
from aiodots.testing import DotsEmulator
from aiodots.transport import MAX_RESPONSE_SIZE

from .conftest import API_KEY, CLIENT_ID, FakeSleep, flow_json
from .network_fixtures import serve

Mode = Literal["length", "chunked", "gzip"]

LIMIT = 1024 * 1024
#: What a server that never stops sends at most here: far past any limit below, yet
#: finite, so that a client that read it all fails its assertions instead of the machine.
ENDLESS = 256 * 1024 * 1024
PIECE = 64 * 1024


class Answer(NamedTuple):
    """One answer queued before the usual: `status` with `headers`, its body `size` bytes."""

    status: int
    size: int
    headers: Mapping[str, str] = {}


class PaddedFlows:
    """Answers `GET /api/v2/flows/{id}` with a flow padded to `size` bytes (as decoded),
    once the answers `queued` are sent, one a request."""

    def __init__(self) -> None:
        self.size = 0
        self.mode: Mode = "length"
        self.status = 200
        self.queued: deque[Answer] = deque()
        self.answers: list[dict[str, Any]] = []  # per request: sent, finished, peer

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        answer: dict[str, Any] = {
            "sent": 0, "finished": False, "peer": request.transport.get_extra_info("peername")
        }
        self.answers.append(answer)
        queued = self.queued.popleft() if self.queued else None
        status, size, headers = queued or (self.status, self.size, {})
        flow = json.dumps(flow_json()).encode()  # what it pads, an error's body too
        size = max(size, len(flow))
        response = web.StreamResponse(status=status, headers=headers)
        response.content_type = "application/json"
        if self.mode == "gzip":
            # Small on the wire, `size` bytes inflated.
            packer = zlib.compressobj(wbits=31)
            parts = [packer.compress(flow)]
            left = size - len(flow)
            while left:
                take = min(left, PIECE)
                parts.append(packer.compress(b" " * take))
                left -= take
            wire = b"".join([*parts, packer.flush()])
            response.headers["Content-Encoding"] = "gzip"
            response.content_length = len(wire)
            pieces = [wire]
        else:
            if self.mode == "chunked":
                response.enable_chunked_encoding()
            else:
                response.content_length = size
            pieces = [flow]
        await response.prepare(request)
        try:
            for piece in pieces:
                await response.write(piece)
                answer["sent"] += len(piece)
            if self.mode != "gzip":
                left = size - len(flow)
                while left:
                    take = min(left, PIECE)
                    await response.write(b" " * take)  # waits while the client does not read
                    answer["sent"] += take
                    left -= take
            await response.write_eof()
            answer["finished"] = True
        except ConnectionError:
            pass  # the client hung up: what it should do with a body it will not read
        return response


@pytest.fixture
async def server() -> AsyncIterator[tuple[PaddedFlows, str]]:
    padded = PaddedFlows()
    app = web.Application()
    app.router.add_get("/api/v2/flows/{flow_id}", padded.handle)
    runner, port = await serve(app)
    try:
        yield padded, f"http://127.0.0.1:{port}/api"
    finally:
        await runner.cleanup()


def client(base_url: str, **options: Any) -> aiodots.Client:
    return aiodots.Client(CLIENT_ID, API_KEY, base_url=base_url, **options)


async def retrieve(dots: aiodots.Client) -> aiodots.Flow:
    async with asyncio.timeout(30):
        return await dots.flows.retrieve("f-1")


@pytest.mark.parametrize("mode", ["length", "chunked", "gzip"])
async def test_a_body_exactly_at_the_limit_is_read(
    server: tuple[PaddedFlows, str], mode: Mode
) -> None:
    padded, base_url = server
    padded.mode, padded.size = mode, LIMIT
    async with client(base_url, max_response_size=LIMIT) as dots:
        flow = await retrieve(dots)
    assert flow.id == flow_json()["id"]
    assert padded.answers[0]["finished"]


@pytest.mark.parametrize("mode", ["length", "chunked", "gzip"])
async def test_a_body_one_byte_over_the_limit_fails_once_without_retrying(
    server: tuple[PaddedFlows, str], mode: Mode
) -> None:
    padded, base_url = server
    padded.mode, padded.size = mode, LIMIT + 1
    async with client(base_url, max_response_size=LIMIT, max_retries=3) as dots:
        with pytest.raises(aiodots.ResponseTooLargeError) as caught:
            await retrieve(dots)
        assert dots.stats.requests == 1
    error = caught.value
    assert (error.status, error.limit, error.size) == (200, LIMIT, LIMIT + 1)
    assert error.declared is (mode == "length")  # a gzip's length is not the body's
    assert error.body is None
    assert len(padded.answers) == 1


async def test_a_content_length_over_the_limit_is_refused_before_the_body_is_read(
    server: tuple[PaddedFlows, str],
) -> None:
    padded, base_url = server
    padded.mode, padded.size = "length", ENDLESS
    async with client(base_url, max_response_size=LIMIT) as dots:
        with pytest.raises(aiodots.ResponseTooLargeError) as caught:
            await retrieve(dots)
    error = caught.value
    assert (error.declared, error.size) == (True, ENDLESS)
    assert str(error) == (
        f"200 the response body is over max_response_size={LIMIT} bytes: its "
        f"Content-Length declares {ENDLESS} bytes; none of it was read (GET /v2/flows/f-1)"
    )
    # The connection was closed under the server while it still had most to send.
    await asyncio.sleep(0.1)
    assert not padded.answers[0]["finished"]
    assert padded.answers[0]["sent"] < ENDLESS // 4


async def test_an_endless_chunked_body_stops_being_read_near_the_limit(
    server: tuple[PaddedFlows, str],
) -> None:
    padded, base_url = server
    padded.mode, padded.size = "chunked", ENDLESS
    async with client(base_url, max_response_size=LIMIT, max_retries=3) as dots:
        with pytest.raises(aiodots.ResponseTooLargeError) as caught:
            await retrieve(dots)
        assert dots.stats.requests == 1
    error = caught.value
    assert error.declared is False
    # What the client held: the limit and at most what had arrived past it (aiohttp's
    # read buffer and one socket read).
    assert LIMIT < error.size <= LIMIT + 1024 * 1024
    assert str(error) == (
        f"200 the response body is over max_response_size={LIMIT} bytes: reading stopped "
        f"after {error.size} bytes (GET /v2/flows/f-1)"
    )
    await asyncio.sleep(0.1)
    assert not padded.answers[0]["finished"]
    assert padded.answers[0]["sent"] < ENDLESS // 4
    assert len(padded.answers) == 1


async def test_a_small_compressed_body_that_inflates_past_the_limit_is_stopped(
    server: tuple[PaddedFlows, str],
) -> None:
    """A Content-Length says nothing of what a compressed body inflates to: 64 MiB of
    JSON is some 64 KiB of gzip, under the limit on the wire."""
    padded, base_url = server
    padded.mode, padded.size = "gzip", 64 * LIMIT
    async with client(base_url, max_response_size=LIMIT) as dots:
        with pytest.raises(aiodots.ResponseTooLargeError) as caught:
            await retrieve(dots)
    assert caught.value.declared is False
    assert LIMIT < caught.value.size <= LIMIT + 1024 * 1024


@pytest.mark.parametrize("status", [500, 502])
async def test_an_error_status_over_the_limit_is_not_retried_either(
    server: tuple[PaddedFlows, str], status: int
) -> None:
    """A read answered 500 or 502 is otherwise retried; one whose body, the error's
    account of itself, is past the limit would come back the same."""
    padded, base_url = server
    padded.mode, padded.size, padded.status = "chunked", ENDLESS, status
    async with client(base_url, max_response_size=LIMIT, max_retries=3) as dots:
        with pytest.raises(aiodots.ResponseTooLargeError) as caught:
            await retrieve(dots)
        assert dots.stats.requests == 1
    assert caught.value.status == status
    assert len(padded.answers) == 1


def on_a_virtual_clock(sleep: FakeSleep) -> dict[str, Any]:
    """A client's options that make it wait on `sleep`'s clock, its limiter's pauses too."""
    return {"sleep": sleep, "rate_limiter": AdaptiveRateLimiter(clock=sleep.now, sleep=sleep)}


@pytest.mark.parametrize("mode", ["length", "chunked", "gzip"])
async def test_a_429_over_the_limit_is_a_rate_limit_refusal_whose_retry_after_is_honoured(
    server: tuple[PaddedFlows, str], mode: Mode, fake_sleep: FakeSleep
) -> None:
    """A proxy's error page past the limit, say: the status and the Retry-After are the
    answer, and arrive whole. Only the body is not read."""
    padded, base_url = server
    padded.mode = mode
    padded.queued.append(Answer(429, LIMIT + 1, {"Retry-After": "7"}))
    options = on_a_virtual_clock(fake_sleep)
    async with client(base_url, max_response_size=LIMIT, **options) as dots:
        flow = await retrieve(dots)
        stats = dots.stats.snapshot()
    assert flow.id == flow_json()["id"]
    assert len(padded.answers) == 2
    # Every caller paused the 7 s asked from the refusal (the clock stood at 1000), and
    # the call went again once they had passed.
    assert options["rate_limiter"].paused_until == 1007.0
    assert fake_sleep.waits == [7.0]
    assert (stats.requests, stats.retries, stats.rate_limited, stats.failures) == (2, 1, 1, 0)


async def test_a_429_over_the_limit_that_persists_fails_with_rate_limit_error_and_its_wait(
    dots_emulator: DotsEmulator, fake_sleep: FakeSleep
) -> None:
    """An HTML page (some 150 bytes) past a small limit, on both attempts: the call ends
    as on any 429, with the wait the server asked for and no body."""
    dots_emulator.fail_next(2, status=429, body="html", retry_after="3")
    async with aiodots.Client(
        **dots_emulator.credentials, base_url=dots_emulator.base_url,
        max_response_size=64, max_retries=1, **on_a_virtual_clock(fake_sleep),
    ) as dots:
        with pytest.raises(aiodots.RateLimitError) as caught:
            await retrieve(dots)
        stats = dots.stats.snapshot()
    error = caught.value
    assert not isinstance(error, aiodots.ResponseTooLargeError)
    assert (error.status, error.retry_after, error.body, error.error_code) == (429, 3, None, None)
    assert error.headers["Retry-After"] == "3"
    size = int(error.headers["Content-Length"])
    assert str(error) == (
        "429 Too Many Requests; the response body is over max_response_size=64 bytes: its "
        f"Content-Length declares {size} bytes; none of it was read (GET /v2/flows/f-1)"
    )
    assert dots_emulator.stats.by_status[429] == 2
    assert fake_sleep.waits == [3.0]
    assert (stats.requests, stats.retries, stats.rate_limited, stats.failures) == (2, 1, 2, 1)


async def test_an_oversized_429_asking_past_max_retry_after_fails_fast_and_holds_no_one(
    server: tuple[PaddedFlows, str], fake_sleep: FakeSleep
) -> None:
    padded, base_url = server
    padded.queued.append(Answer(429, ENDLESS, {"Retry-After": "3600"}))
    options = on_a_virtual_clock(fake_sleep)
    async with client(
        base_url, max_response_size=LIMIT, max_retry_after=30, **options
    ) as dots:
        with pytest.raises(aiodots.RateLimitError) as caught:
            await retrieve(dots)
        assert dots.stats.rate_limited == 1
    assert caught.value.retry_after == 3600
    assert len(padded.answers) == 1
    assert fake_sleep.waits == []
    assert options["rate_limiter"].paused_until == -math.inf  # the others go on


@pytest.mark.parametrize("mode", ["length", "chunked"])
async def test_a_503_over_the_limit_is_retried_after_its_retry_after(
    server: tuple[PaddedFlows, str], mode: Mode, fake_sleep: FakeSleep
) -> None:
    """A 503 says, as a 429 does, that the request was not acted on and when to come
    back; the page that says so, however large, says nothing of the answer after."""
    padded, base_url = server
    padded.mode = mode
    padded.queued.append(Answer(503, ENDLESS, {"Retry-After": "5"}))
    async with client(base_url, max_response_size=LIMIT, **on_a_virtual_clock(fake_sleep)) as dots:
        flow = await retrieve(dots)
        stats = dots.stats.snapshot()
    assert flow.id == flow_json()["id"]
    assert len(padded.answers) == 2
    assert not padded.answers[0]["finished"]  # its body was not read to the end
    assert fake_sleep.waits == [5.0]
    assert (stats.requests, stats.retries, stats.rate_limited) == (2, 1, 0)


async def test_a_503_over_the_limit_that_persists_fails_with_server_error_and_its_wait(
    server: tuple[PaddedFlows, str],
) -> None:
    padded, base_url = server
    padded.queued.append(Answer(503, LIMIT + 1, {"Retry-After": "5"}))
    async with client(base_url, max_response_size=LIMIT, max_retries=0) as dots:
        with pytest.raises(aiodots.ServerError) as caught:
            await retrieve(dots)
    assert not isinstance(caught.value, aiodots.ResponseTooLargeError)
    assert (caught.value.status, caught.value.retry_after, caught.value.body) == (503, 5, None)


class LimiterSpy:
    """A limiter that records what the transport tells it of each answer."""

    def __init__(self) -> None:
        self.wants_headers = True
        self.responses: list[tuple[int, float | None]] = []
        self.limits: list[str | None] = []  # each answer's X-RateLimit-Limit handed over

    async def acquire(self) -> float:
        return 0.0

    def on_response(self, status: int, sent_at: float, retry_after: float | None) -> None:
        self.responses.append((status, retry_after))

    def now(self) -> float:
        return time.monotonic()

    def on_headers(self, headers: Mapping[str, str]) -> None:
        self.limits.append(headers.get("X-RateLimit-Limit"))


@pytest.mark.parametrize(
    ("status", "retry_after"), [(200, None), (429, 7.0), (503, 7.0), (500, None)]
)
async def test_an_answer_over_the_limit_is_reported_to_the_limiter_with_its_headers(
    server: tuple[PaddedFlows, str], status: int, retry_after: float | None
) -> None:
    """What a limiter learns from an answer is in its status and headers, which arrive
    whole however large the body: a 429 over the limit still refused the call, and a
    2xx was still accepted (it spent a token of the server's bucket, and a send log
    that left it out would solve that bucket wrong)."""
    padded, base_url = server
    padded.queued.append(
        Answer(status, LIMIT + 1, {"Retry-After": "7", "X-RateLimit-Limit": "100"})
    )
    spy = LimiterSpy()
    async with client(
        base_url, max_response_size=LIMIT, max_retries=0, rate_limiter=spy
    ) as dots:
        with pytest.raises(aiodots.APIError):
            await retrieve(dots)
    assert spy.responses == [(status, retry_after)]
    assert spy.limits == ["100"]


@pytest.mark.parametrize("mode", ["length", "chunked"])
async def test_the_connection_of_a_body_over_the_limit_is_closed_and_the_next_call_succeeds(
    server: tuple[PaddedFlows, str], mode: Mode
) -> None:
    """With one connection in the pool, a connection left half read and pooled would hand
    the next call the rest of the old body; one never released would hold it forever."""
    padded, base_url = server
    padded.mode = mode
    async with client(base_url, max_response_size=LIMIT, max_connections=1) as dots:
        padded.size = 0
        await retrieve(dots)
        await retrieve(dots)  # a body within the limit leaves its connection pooled
        padded.size = ENDLESS
        with pytest.raises(aiodots.ResponseTooLargeError):
            await retrieve(dots)
        padded.size = 0
        flow = await retrieve(dots)
    assert flow.id == flow_json()["id"]
    first, again, refused, after = (answer["peer"] for answer in padded.answers)
    assert first == again == refused
    assert after != refused


async def test_a_create_answered_past_the_limit_fails_once_and_the_client_goes_on(
    dots_emulator: DotsEmulator,
) -> None:
    """Through the emulator: the flow was created (a 2xx), its answer streams on without
    end; the call fails at once, and the next one, on the pool's only connection, works."""
    dots_emulator.pad_next(size=ENDLESS, chunked=True)
    async with aiodots.Client(
        **dots_emulator.credentials, base_url=dots_emulator.base_url,
        max_response_size=LIMIT, max_connections=1,
    ) as dots:
        with pytest.raises(aiodots.ResponseTooLargeError) as caught:
            async with asyncio.timeout(30):
                await dots.flows.create(steps=["compliance"])
        assert (caught.value.status, caught.value.declared) == (200, False)
        async with asyncio.timeout(30):
            await dots.flows.create(steps=["compliance"])
        assert (dots.stats.requests, dots.stats.failures) == (2, 1)
    stats = dots_emulator.stats
    assert (stats.requests, stats.created, stats.padded_cut_off) == (2, 2, 1)
    assert stats.padded_bytes_sent < ENDLESS // 4


async def test_a_reconciled_create_answered_past_the_limit_is_found_not_sent_again(
    dots_emulator: DotsEmulator,
) -> None:
    """A 2xx over the limit took effect, as any 2xx whose body is not the documented
    JSON: with `reconcile=True` the flow it made is looked up and returned."""
    dots_emulator.pad_next(size=ENDLESS, chunked=True)
    async with aiodots.Client(
        **dots_emulator.credentials, base_url=dots_emulator.base_url,
        max_response_size=LIMIT,
    ) as dots:
        async with asyncio.timeout(30):
            flow = await dots.flows.create(
                steps=["compliance"], reconcile=aiodots.Reconcile(settle=0.01)
            )
    assert list(dots_emulator.flows) == [flow.id]
    assert dots_emulator.stats.created == 1


def test_the_default_limit_is_32_mib() -> None:
    assert MAX_RESPONSE_SIZE == 32 * 1024 * 1024
    dots = aiodots.Client(CLIENT_ID, API_KEY)
    assert dots._transport._max_response_size == MAX_RESPONSE_SIZE


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "1024", None])
def test_the_limit_must_be_a_whole_number_of_bytes_above_zero(value: object) -> None:
    with pytest.raises(aiodots.ValidationError, match="max_response_size must be a whole"):
        aiodots.Client(CLIENT_ID, API_KEY, max_response_size=value)  # type: ignore[arg-type]


async def test_answers_without_a_body_succeed_and_keep_their_connection() -> None:
    """An answer with nothing to read (a 204, an empty 200) is taken from aiohttp's
    buffer like any other: the call succeeds, and the pool's one connection serves the
    next call."""
    peers: list[Any] = []

    async def answer(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername"))
        if len(peers) % 2:
            return web.Response(status=204)
        return web.Response(status=200, body=b"", content_type="application/json")

    app = web.Application()
    app.router.add_post("/api/v2/users/{user_id}/send-verification-token", answer)
    runner, port = await serve(app)
    try:
        async with client(f"http://127.0.0.1:{port}/api", max_connections=1) as dots:
            async with asyncio.timeout(30):
                for _ in range(4):
                    await dots.users.send_verification_token("u-1")
            assert (dots.stats.requests, dots.stats.failures) == (4, 0)
    finally:
        await runner.cleanup()
    assert len(peers) == 4
    assert len(set(peers)) == 1
