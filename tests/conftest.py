"""Shared fixtures. The emulator fixtures (`dots_emulator`, `dots_client`) come from the
plugin aiodots ships (`aiodots.testing.plugin`), exactly as a user's suite gets them."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aioresponses.core
import pytest
import trustme
from aiohttp import ClientResponse

import aiodots

# A real redis-server for the shared limiter's tests (pytest-redis starts it).
pytest_plugins = ["tests.redis_fixtures"]

BASE_URL = "https://api.dots.dev/api"
CLIENT_ID = "client-id-123"
API_KEY = "sk_live_SECRET_never_show_me"


_TAKES_STREAM_WRITER = "stream_writer" in inspect.signature(ClientResponse.__init__).parameters


class _ResponseWithStreamWriter(ClientResponse):
    """aioresponses 0.7.9 builds `ClientResponse` without the `stream_writer` argument
    that aiohttp 3.14 made required (pnuckowski/aioresponses#289, open). The response is
    complete when built, so a writer whose output size is 0 is all it needs.

    Chosen over pinning aiohttp below 3.14: the emulator tests must run on the aiohttp
    users install, and this shim touches only how aioresponses fakes a response.
    """

    class _SentWriter:
        output_size = 0

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        if _TAKES_STREAM_WRITER:  # not before 3.14: the floor, 3.11, refuses the argument
            kwargs.setdefault("stream_writer", self._SentWriter())
        super().__init__(method, url, **kwargs)


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses.aioresponses]:
    """aioresponses with the aiohttp 3.14 shim; real sockets are never opened under it."""
    monkeypatch.setattr(aioresponses.core, "ClientResponse", _ResponseWithStreamWriter)
    with aioresponses.aioresponses() as mock:
        yield mock


class FakeSleep:
    """Records every wait instead of waiting, and moves a virtual clock by it, so retry
    and rate-limit tests take no real time. `now` is the clock for the limiter."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.clock = 1000.0

    def now(self) -> float:
        return self.clock

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock += seconds


@pytest.fixture
def fake_sleep() -> FakeSleep:
    return FakeSleep()


def make_client(sleep: FakeSleep | None = None, **kwargs: Any) -> aiodots.Client:
    """A client on the production base URL (aioresponses intercepts every call)."""
    options: dict[str, Any] = {"base_url": BASE_URL}
    if sleep is not None:
        options["sleep"] = sleep
        options["rate_limiter"] = aiodots.AdaptiveRateLimiter(clock=sleep.now, sleep=sleep)
    options.update(kwargs)
    return aiodots.Client(CLIENT_ID, API_KEY, **options)


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A certificate authority no system CA store trusts (tests/network_fixtures.py)."""
    return trustme.CA()


@pytest.fixture
async def client(fake_sleep: FakeSleep) -> AsyncIterator[aiodots.Client]:
    async with make_client(
        fake_sleep, retry_policy=aiodots.RetryPolicy(max_retries=3, rand=lambda: 1.0)
    ) as dots:
        yield dots


#: The documented status -> exception mapping, as tests on both paths check it.
ERROR_CLASSES: list[tuple[int, type[aiodots.APIError]]] = [
    (400, aiodots.BadRequestError),
    (401, aiodots.AuthenticationError),
    (403, aiodots.PermissionDeniedError),
    (404, aiodots.NotFoundError),
    (409, aiodots.ConflictError),
    (422, aiodots.UnprocessableEntityError),
    (429, aiodots.RateLimitError),
    (500, aiodots.ServerError),
    (502, aiodots.ServerError),
    (503, aiodots.ServerError),
    (504, aiodots.ServerError),
]


def flow_json(**overrides: Any) -> dict[str, Any]:
    """A flow object as the API reference shows it."""
    flow: dict[str, Any] = {
        "id": "6b7f5a0e-9a0b-4c55-8c2e-3d2f4c1b9a10",
        "created": "2023-11-07T05:31:56Z",
        "user_id": None,
        "steps": ["compliance", "id-verification"],
        "completed_steps": [],
        "link": "https://app.dots.dev/flow/6b7f5a0e",
        "metadata": None,
    }
    flow.update(overrides)
    return flow
