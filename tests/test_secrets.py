"""The API key never shows: not in repr, logs (DEBUG included), errors or tracebacks."""

from __future__ import annotations

import base64
import logging
import traceback

import aioresponses
import pytest

import aiodots

from .conftest import API_KEY, BASE_URL, CLIENT_ID, flow_json

FLOWS = f"{BASE_URL}/v2/flows"
ENCODED = base64.b64encode(f"{CLIENT_ID}:{API_KEY}".encode()).decode()


def leaks(text: str) -> bool:
    return API_KEY in text or ENCODED in text


async def test_repr_of_client_hides_the_key() -> None:
    async with aiodots.Client(CLIENT_ID, API_KEY) as dots:
        assert not leaks(repr(dots))
        assert not leaks(repr(vars(dots)))
        assert not leaks(repr(vars(dots._transport)))


async def test_debug_logs_name_the_call_but_never_the_key(
    client: aiodots.Client, mocked: aioresponses.aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiodots")
    mocked.post(FLOWS, status=503)
    mocked.post(FLOWS, payload=flow_json())
    await client.flows.create(steps=["compliance"])
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "POST /v2/flows -> 503 (attempt 1" in text
    assert "retrying in" in text
    assert "POST /v2/flows -> 200 (attempt 2" in text
    assert not leaks(text)


async def test_errors_and_tracebacks_with_locals_never_show_the_key(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.post(FLOWS, status=401, payload={"message": "bad credentials"})
    with pytest.raises(aiodots.AuthenticationError) as caught:
        await client.flows.create(steps=["compliance"])
    err = caught.value
    assert not leaks(str(err))
    assert not leaks(repr(err))
    assert not leaks(repr(vars(err)))
    rendered = "".join(
        traceback.TracebackException.from_exception(err, capture_locals=True).format()
    )
    assert not leaks(rendered)


async def test_the_session_holds_the_key_redacted_and_sends_it_whole(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    # The credentials are the session's default headers (sent with every request): what
    # a traceback with locals or a debugger shows of them is redacted, what goes out not.
    mocked.post(FLOWS, payload=flow_json())
    await client.flows.create(steps=["compliance"])
    session = client._sessions.session()
    assert "Authorization" in repr(session.headers)
    assert not leaks(repr(session.headers))
    assert not leaks(repr(dict(session.headers)))
    assert session.headers["Authorization"] == f"Basic {ENCODED}"
