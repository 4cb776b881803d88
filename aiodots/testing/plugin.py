"""pytest plugin (entry point `pytest11`): the fixtures `dots_emulator` and `dots_client`.

    async def test_onboarding(dots_client, dots_emulator):
        flow = await dots_client.flows.create(steps=["compliance"])
        assert dots_emulator.stats.created == 1

`dots_emulator` is a fresh emulator per test (no faults; change them with
`dots_emulator.set_faults(...)` or `fail_next(...)`); `dots_client` is a `Client` wired
to it with retries on and waits shortened. Both need pytest-asyncio; without it this
plugin defines nothing, so installing aiodots never breaks an unrelated test suite.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator

from aiodots.client import Client
from aiodots.retry import RetryPolicy

from .emulator import DotsEmulator

if importlib.util.find_spec("pytest_asyncio") is not None:
    import pytest_asyncio

    @pytest_asyncio.fixture
    async def dots_emulator() -> AsyncIterator[DotsEmulator]:
        """A Dots emulator on 127.0.0.1, one per test."""
        async with DotsEmulator() as emulator:
            yield emulator

    @pytest_asyncio.fixture
    async def dots_client(dots_emulator: DotsEmulator) -> AsyncIterator[Client]:
        """An aiodots Client talking to `dots_emulator`, closed after the test. Retry
        waits are kept short so fault tests run fast."""
        async with Client(
            dots_emulator.client_id,
            dots_emulator.api_key,
            base_url=dots_emulator.base_url,
            retry_policy=RetryPolicy(max_retries=3, backoff_initial=0.01, backoff_max=0.05),
        ) as client:
            yield client
