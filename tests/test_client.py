"""Configuration and lifecycle: credentials, environments, close, use after close."""

from __future__ import annotations

import asyncio
import gc
import warnings

import aioresponses
import pytest

import aiodots
from aiodots.testing import DotsEmulator

from .conftest import BASE_URL, flow_json


def test_credentials_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOTS_CLIENT_ID", "env-id")
    monkeypatch.setenv("DOTS_API_KEY", "env-key")
    monkeypatch.setenv("DOTS_BASE_URL", "http://127.0.0.1:9/api")
    client = aiodots.Client()
    assert client.client_id == "env-id"
    assert client.base_url == "http://127.0.0.1:9/api"


def test_missing_credentials_fail_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOTS_CLIENT_ID", raising=False)
    monkeypatch.delenv("DOTS_API_KEY", raising=False)
    with pytest.raises(aiodots.ValidationError, match="DOTS_CLIENT_ID and DOTS_API_KEY"):
        aiodots.Client()
    with pytest.raises(aiodots.ValidationError):
        aiodots.Client("id-only")


def test_environment_maps_to_the_documented_hosts_and_base_url_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DOTS_BASE_URL", raising=False)
    assert aiodots.Client("i", "k").base_url == "https://api.dots.dev/api"
    assert aiodots.Client("i", "k", environment="sandbox").base_url == (
        "https://pls.senddotssandbox.com/api"
    )
    assert aiodots.Client(
        "i", "k", environment="sandbox", base_url="https://api.senddotssandbox.com/api"
    ).base_url == "https://api.senddotssandbox.com/api"
    with pytest.raises(aiodots.ValidationError, match="unknown environment"):
        aiodots.Client("i", "k", environment="staging")
    with pytest.raises(aiodots.ValidationError, match="http"):
        aiodots.Client("i", "k", base_url="api.dots.dev")


def test_invalid_settings_are_validation_errors() -> None:
    with pytest.raises(aiodots.ValidationError):
        aiodots.Client("i", "k", timeout=0)
    with pytest.raises(aiodots.ValidationError):
        aiodots.Client("i", "k", max_retries=-1)
    with pytest.raises(aiodots.ValidationError):
        aiodots.Client("i", "k", max_connections=0)
    with pytest.raises(aiodots.ValidationError):
        aiodots.Client("i", "k", rate_limit=0)


async def test_close_is_idempotent_and_a_closed_client_refuses_calls(
    mocked: aioresponses.aioresponses,
) -> None:
    mocked.post(f"{BASE_URL}/v2/flows", payload=flow_json(), repeat=True)
    dots = aiodots.Client("i", "k", base_url=BASE_URL)
    await dots.flows.create(steps=["payout"])
    await dots.close()
    await dots.close()
    assert dots.closed
    with pytest.raises(aiodots.ClientClosedError, match="closed"):
        await dots.flows.create(steps=["payout"])
    with pytest.raises(aiodots.ClientClosedError):
        async with dots:
            pass


async def test_a_client_closed_before_first_use_never_opens_a_session() -> None:
    dots = aiodots.Client("i", "k")
    await dots.close()
    with pytest.raises(aiodots.ClientClosedError):
        await dots.flows.retrieve("f1")


async def test_async_with_closes_the_pool_and_leaves_no_warning(
    dots_emulator: DotsEmulator,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        emu = dots_emulator
        async with aiodots.Client(**emu.credentials, base_url=emu.base_url) as d:
            await d.flows.create(steps=["payout"])
            session = d._sessions.session()
        assert session.closed
        del d, session
        gc.collect()


async def test_an_unclosed_client_warns_with_a_resource_warning(
    dots_emulator: DotsEmulator,
) -> None:
    dots = aiodots.Client(**dots_emulator.credentials, base_url=dots_emulator.base_url)
    await dots.flows.create(steps=["payout"])
    session = dots._sessions.session()
    with pytest.warns(ResourceWarning, match="was not closed"):
        dots.__del__()
    await session.close()
    dots._sessions._closed = True  # closed by hand above; keep __del__ quiet


async def test_one_pool_serves_every_call_of_a_client(
    dots_emulator: DotsEmulator,
) -> None:
    async with aiodots.Client(**dots_emulator.credentials, base_url=dots_emulator.base_url) as d:
        first = d._sessions.session()
        await asyncio.gather(*(d.flows.create(steps=["payout"]) for _ in range(20)))
        assert d._sessions.session() is first


def test_the_public_names_are_the_documented_ones() -> None:
    documented = {
        "Client", "Flow", "CreateFlow", "Step", "FlowStep", "RedirectStep", "BatchItem",
        "DotsError", "APIError", "BadRequestError", "AuthenticationError",
        "PermissionDeniedError", "NotFoundError", "ConflictError", "UnprocessableEntityError",
        "RateLimitError", "ServerError", "APIConnectionError", "APITimeoutError",
        "ValidationError",
    }
    assert documented <= set(aiodots.__all__)
    for name in aiodots.__all__:
        assert hasattr(aiodots, name), name
