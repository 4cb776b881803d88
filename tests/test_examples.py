"""The examples run as users would run them: the aiohttp receiver on aiohttp's test server
and the FastAPI app under a real uvicorn, both on 127.0.0.1, fed deliveries signed by
Svix's own signer and by the emulator; and each started by the command its docstring
gives, configured from the environment alone."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import svix.webhooks
import uvicorn
from aiohttp.test_utils import TestServer
from fastapi import FastAPI

import aiodots
from aiodots.testing import DotsEmulator, WebhookSender
from aiodots.webhooks import FlowEvent, TransferEvent, WebhookEvent
from examples import aiohttp_webhooks, fastapi_app

from .network_fixtures import free_port, stop_process

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = '{"event": "transfer.failed", "transfer_id": "t-1"}'


def svix_headers(body: str, msg_id: str = "msg_1", *, ago: float = 0) -> dict[str, str]:
    at = datetime.now(UTC) - timedelta(seconds=ago)
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(int(at.timestamp())),
        "svix-signature": svix.webhooks.Webhook(SECRET).sign(msg_id, at, body),
        "content-type": "application/json",
    }


async def post_deliveries(http: aiohttp.ClientSession, url: str) -> list[tuple[int, str]]:
    """A genuine delivery, a tampered copy, the same delivery again, and Svix's retry of
    it (same id, new timestamp and signature): what each was answered."""
    headers = svix_headers(BODY)
    sent = [
        (BODY, headers),
        (BODY.replace("t-1", "t-2"), headers),
        (BODY, headers),
        (BODY, svix_headers(BODY, ago=30)),
    ]
    answers = []
    for body, h in sent:
        async with http.post(url, data=body, headers=h) as response:
            answers.append((response.status, await response.text()))
    return answers


def assert_one_event_and_two_duplicates(
    answers: list[tuple[int, str]], events: list[WebhookEvent], duplicates: int
) -> None:
    assert [status for status, _ in answers] == [204, 400, 204, 204]
    assert "signature" in answers[1][1]
    [event] = events
    assert isinstance(event, TransferEvent)
    assert event.transfer_id == "t-1"
    assert event.delivery_id == "msg_1"
    assert duplicates == 2


# -- aiohttp ------------------------------------------------------------------------------------


@asynccontextmanager
async def aiohttp_example() -> AsyncIterator[tuple[str, aiohttp_webhooks.Receiver]]:
    app = aiohttp_webhooks.make_app(SECRET)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("/webhooks/dots")), app[aiohttp_webhooks.RECEIVER]


async def test_aiohttp_example_handles_a_delivery_once_and_refuses_a_tampered_one() -> None:
    async with aiohttp_example() as (url, receiver), aiohttp.ClientSession() as http:
        answers = await post_deliveries(http, url)
    assert_one_event_and_two_duplicates(answers, receiver.events, receiver.duplicates)


async def test_aiohttp_example_receives_what_the_emulator_sends(
    dots_emulator: DotsEmulator, dots_client: aiodots.Client
) -> None:
    async with aiohttp_example() as (url, receiver):
        dots_emulator.webhooks.subscribe(url, SECRET)
        flow = await dots_client.flows.create(steps=["compliance"])
        message = dots_emulator.complete_flow(flow.id)
        async with asyncio.timeout(10):
            await message.wait()
    [event] = receiver.events
    assert isinstance(event, FlowEvent)
    assert event.flow_id == flow.id
    assert [a.status for a in message.deliveries[0].attempts] == [204]


async def test_aiohttp_example_answers_500_when_handling_fails_and_takes_the_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failures = [RuntimeError("database down")]
    original = aiohttp_webhooks.Receiver.handle

    async def flaky(self: aiohttp_webhooks.Receiver, event: WebhookEvent) -> None:
        if failures:
            raise failures.pop()
        await original(self, event)

    monkeypatch.setattr(aiohttp_webhooks.Receiver, "handle", flaky)
    sender = WebhookSender(schedule=(0, 0.01, 0.01))
    async with DotsEmulator(webhooks=sender) as emulator, aiohttp_example() as (url, receiver):
        emulator.webhooks.subscribe(url, SECRET)
        message = emulator.webhooks.emit("flow.updated", {"flow_id": "f-1"})
        async with asyncio.timeout(10):
            await message.wait()
    assert [a.status for a in message.deliveries[0].attempts] == [500, 204]
    assert [e.delivery_id for e in receiver.events] == [message.id]
    assert receiver.duplicates == 0  # the failed attempt did not count as handled


# -- FastAPI under uvicorn ---------------------------------------------------------------------


@asynccontextmanager
async def uvicorn_serving(app: FastAPI) -> AsyncIterator[str]:
    """The app under a real uvicorn on 127.0.0.1, in this test's event loop (so it can
    talk to the emulator running in the same loop); lifespan included."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            # uvicorn tells it is up only through this flag.
            while not server.started and not task.done():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        if task.done():
            task.result()
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def fastapi_example(emulator: DotsEmulator) -> FastAPI:
    return fastapi_app.create_app(
        webhook_secret=SECRET, **emulator.credentials, base_url=emulator.base_url
    )


async def test_fastapi_example_creates_a_flow_and_receives_its_webhook(
    dots_emulator: DotsEmulator,
) -> None:
    app = fastapi_example(dots_emulator)
    services: fastapi_app.Services = app.state.services
    async with uvicorn_serving(app) as url, aiohttp.ClientSession() as http:
        async with http.post(f"{url}/flows", json={"steps": ["compliance", "payout"]}) as r:
            assert r.status == 201
            flow_id = (await r.json())["id"]
        assert dots_emulator.stats.created == 1

        dots_emulator.webhooks.subscribe(f"{url}/webhooks/dots", SECRET)
        message = dots_emulator.complete_flow(flow_id)
        async with asyncio.timeout(10):
            await message.wait()
        # The app fetched the flow through its client after the (ids-only) webhook.
        assert services.completed_steps == {flow_id: ["compliance", "payout"]}
        assert [a.status for a in message.deliveries[0].attempts] == [204]
    assert services._dots is None  # the lifespan closed the client


async def test_fastapi_example_handles_a_delivery_once_and_refuses_a_tampered_one(
    dots_emulator: DotsEmulator,
) -> None:
    app = fastapi_example(dots_emulator)
    services: fastapi_app.Services = app.state.services
    async with uvicorn_serving(app) as url, aiohttp.ClientSession() as http:
        answers = await post_deliveries(http, f"{url}/webhooks/dots")
    assert_one_event_and_two_duplicates(answers, services.events, services.duplicates)


async def test_fastapi_example_reports_bad_input_before_calling_dots(
    dots_emulator: DotsEmulator,
) -> None:
    async with uvicorn_serving(fastapi_example(dots_emulator)) as url, aiohttp.ClientSession(
    ) as http, http.post(f"{url}/flows", json={"steps": ["no-such-step"]}) as response:
        assert response.status == 422
        assert "no-such-step" in await response.text()
    assert dots_emulator.stats.requests == 0


# -- the commands in the examples' docstrings ------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


@asynccontextmanager
async def command_serving(argv: list[str], env: dict[str, str]) -> AsyncIterator[str]:
    """`python <argv> --port P` run from the repository's root, as a user runs it; the
    URL once it accepts connections. Stopped with SIGTERM on exit."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv, "--host", "127.0.0.1", "--port", str(port),
        cwd=ROOT, env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                if proc.returncode is not None:
                    assert proc.stderr is not None
                    raise AssertionError((await proc.stderr.read()).decode()) from None
                assert time.monotonic() < deadline, "the example did not start"
                await asyncio.sleep(0.1)
            else:
                writer.close()
                await writer.wait_closed()
                break
        yield f"http://127.0.0.1:{port}"
    finally:
        await stop_process(proc)


@pytest.mark.slow
async def test_aiohttp_example_runs_as_its_docstring_says(dots_emulator: DotsEmulator) -> None:
    # DOTS_WEBHOOK_SECRET=whsec_... python examples/aiohttp_webhooks.py --port 8080
    argv = ["examples/aiohttp_webhooks.py"]
    async with command_serving(argv, {"DOTS_WEBHOOK_SECRET": SECRET}) as url:
        dots_emulator.webhooks.subscribe(f"{url}/webhooks/dots", SECRET)
        message = dots_emulator.webhooks.emit("flow.updated", {"flow_id": "f-1"})
        async with asyncio.timeout(10):
            await message.wait()
        async with aiohttp.ClientSession() as http, http.post(
            f"{url}/webhooks/dots", data=BODY, headers=svix_headers(BODY.replace("1", "2"))
        ) as forged:
            assert forged.status == 400
    assert [a.status for a in message.deliveries[0].attempts] == [204]


@pytest.mark.slow
async def test_fastapi_example_runs_under_uvicorn_as_its_docstring_says(
    dots_emulator: DotsEmulator,
) -> None:
    # export DOTS_CLIENT_ID=... DOTS_API_KEY=... DOTS_WEBHOOK_SECRET=whsec_...
    # uvicorn examples.fastapi_app:app --port 8000
    env = {
        "DOTS_CLIENT_ID": dots_emulator.client_id, "DOTS_API_KEY": dots_emulator.api_key,
        "DOTS_BASE_URL": dots_emulator.base_url, "DOTS_WEBHOOK_SECRET": SECRET,
    }
    argv = ["-m", "uvicorn", "examples.fastapi_app:app", "--log-level", "warning"]
    async with command_serving(argv, env) as url, aiohttp.ClientSession() as http:
        # curl -X POST localhost:8000/flows -H 'content-type: application/json' \
        #      -d '{"steps": ["compliance"]}'
        async with http.post(f"{url}/flows", json={"steps": ["compliance"]}) as response:
            assert response.status == 201
            created = await response.json()
        assert set(created) == {"id", "link"}
        assert dots_emulator.stats.created == 1
        dots_emulator.webhooks.subscribe(f"{url}/webhooks/dots", SECRET)
        message = dots_emulator.complete_flow(created["id"])
        async with asyncio.timeout(10):
            await message.wait()
    assert [a.status for a in message.deliveries[0].attempts] == [204]
    # The app fetched the flow after the (ids-only) webhook, through its one client.
    assert dots_emulator.stats.by_route["GET /api/v2/flows/{flow_id}"] == 1
