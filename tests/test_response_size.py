"""A response body is read into memory only up to `Client(max_response_size=...)`: a
misbehaving server or proxy, or an endless chunked body, cannot exhaust a job's memory.
Over the limit the call fails with `ResponseTooLargeError`, once, and the connection is
closed rather than pooled half read.

A server on 127.0.0.1 sends a flow padded with spaces (still valid JSON) to the size a
test asks for, with a `Content-Length`, chunked without one, or gzip-compressed, and
records what it wrote and on which connection."""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest
from aiohttp import web

import aiodots
from aiodots.testing import DotsEmulator
from aiodots.transport import MAX_RESPONSE_SIZE

from .conftest import API_KEY, CLIENT_ID, flow_json
from .network_fixtures import serve

Mode = Literal["length", "chunked", "gzip"]

LIMIT = 1024 * 1024
#: What a server that never stops sends at most here: far past any limit below, yet
#: finite, so that a client that read it all fails its assertions instead of the machine.
ENDLESS = 256 * 1024 * 1024
PIECE = 64 * 1024


class PaddedFlows:
    """Answers `GET /api/v2/flows/{id}` with a flow padded to `size` bytes (as decoded)."""

    def __init__(self) -> None:
        self.size = 0
        self.mode: Mode = "length"
        self.status = 200
        self.answers: list[dict[str, Any]] = []  # per request: sent, finished, peer

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        answer: dict[str, Any] = {
            "sent": 0, "finished": False, "peer": request.transport.get_extra_info("peername")
        }
        self.answers.append(answer)
        flow = json.dumps(flow_json()).encode()
        size = max(self.size, len(flow))
        response = web.StreamResponse(status=self.status)
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


async def test_an_error_status_over_the_limit_is_not_retried_either(
    server: tuple[PaddedFlows, str],
) -> None:
    """A 503 is otherwise retried; one with a body past the limit would come back the same."""
    padded, base_url = server
    padded.mode, padded.size, padded.status = "chunked", ENDLESS, 503
    async with client(base_url, max_response_size=LIMIT, max_retries=3) as dots:
        with pytest.raises(aiodots.ResponseTooLargeError) as caught:
            await retrieve(dots)
        assert dots.stats.requests == 1
    assert caught.value.status == 503
    assert len(padded.answers) == 1


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
