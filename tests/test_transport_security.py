"""Nothing is sent where it does not belong: no redirect is followed, no clear-text
credentials leave the machine, and TLS is verified (against a CA the caller may add)."""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trustme
from aiohttp import web

import aiodots
from aiodots.testing import DotsEmulator

from .conftest import API_KEY, CLIENT_ID

# -- redirects --------------------------------------------------------------------------


class Recorder:
    """A second origin on 127.0.0.1 that records whatever reaches it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bytes, dict[str, str]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(
            (request.method, request.path, await request.read(), dict(request.headers))
        )
        return web.json_response({"id": "stolen", "steps": ["payout"]})


async def serve(app: web.Application, **site: Any) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, **site).start()
    return runner, runner.addresses[0][1]


@pytest.fixture
async def elsewhere() -> AsyncIterator[tuple[Recorder, str]]:
    recorder = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    runner, port = await serve(app)
    yield recorder, f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_to_another_origin_is_an_error_and_sends_it_nothing(
    elsewhere: tuple[Recorder, str], status: int
) -> None:
    recorder, other = elsewhere
    location = f"{other}/api/v2/flows"

    async def redirect(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=status, headers={"Location": location})

    api = web.Application()
    api.router.add_route("*", "/{tail:.*}", redirect)
    runner, port = await serve(api)
    try:
        async with aiodots.Client(
            CLIENT_ID, API_KEY, base_url=f"http://127.0.0.1:{port}/api"
        ) as dots:
            with pytest.raises(aiodots.RedirectError) as caught:
                await dots.flows.create(steps=["payout"], metadata={"secret": "body"})
            with pytest.raises(aiodots.APIError):
                await dots.flows.retrieve("f1")
            assert dots.stats.requests == 2  # a redirect is not retried either
    finally:
        await runner.cleanup()
    assert recorder.seen == []
    error = caught.value
    assert error.status == status
    assert error.location == location
    assert location in str(error)
    assert API_KEY not in str(error)


async def test_redirect_error_sits_under_api_error() -> None:
    assert issubclass(aiodots.RedirectError, aiodots.APIError)
    error = aiodots.errors.error_for_response(
        304, {}, b"", method="GET", path="/v2/flows/f1", reason="Not Modified"
    )
    assert type(error) is aiodots.RedirectError
    assert error.location is None


# -- clear-text http --------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://api.dots.dev/api", "http://10.0.0.5:8080/api", "http://[2001:db8::1]/api",
     "http://localhost.example.com/api"],
)
def test_plain_http_to_another_host_is_refused(url: str) -> None:
    with pytest.raises(aiodots.ValidationError, match="clear text") as caught:
        aiodots.Client(CLIENT_ID, API_KEY, base_url=url)
    assert API_KEY not in str(caught.value)


def test_plain_http_from_the_environment_is_refused_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOTS_BASE_URL", "http://api.dots.dev/api")
    with pytest.raises(aiodots.ValidationError, match="clear text"):
        aiodots.Client(CLIENT_ID, API_KEY)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/api", "http://127.4.5.6/api", "http://[::1]:8080/api",
     "http://localhost:8080/api", "http://LOCALHOST/api"],
)
def test_plain_http_to_loopback_is_allowed(url: str) -> None:
    assert aiodots.Client(CLIENT_ID, API_KEY, base_url=url).base_url == url.rstrip("/")


def test_plain_http_elsewhere_needs_an_explicit_opt_in() -> None:
    client = aiodots.Client(
        CLIENT_ID, API_KEY, base_url="http://dots.internal/api", allow_insecure_http=True
    )
    assert client.base_url == "http://dots.internal/api"


# -- TLS --------------------------------------------------------------------------------


async def test_an_ssl_context_reaches_the_connector() -> None:
    context = ssl.create_default_context()
    async with aiodots.Client(CLIENT_ID, API_KEY, ssl=context) as dots:
        connector = dots._sessions.session().connector
        assert connector is not None
        assert connector._ssl is context  # type: ignore[attr-defined]


def test_an_ssl_context_that_does_not_verify_is_refused() -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with pytest.raises(aiodots.ValidationError, match="verify"):
        aiodots.Client(CLIENT_ID, API_KEY, ssl=context)
    with pytest.raises(aiodots.ValidationError, match="SSLContext"):
        aiodots.Client(CLIENT_ID, API_KEY, ssl=False)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A certificate authority no system CA store trusts."""
    return trustme.CA()


async def serve_tls(
    emulator: DotsEmulator, ca: trustme.CA, host: str = "127.0.0.1"
) -> tuple[web.AppRunner, int]:
    """The emulator over TLS on 127.0.0.1, with a certificate `ca` issued for `host`."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(host).configure_cert(server_context)
    return await serve(emulator._app, ssl_context=server_context)


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_tls_is_verified_against_the_callers_context(ca: trustme.CA) -> None:
    emulator = DotsEmulator()
    runner, port = await serve_tls(emulator, ca)
    base_url = f"https://127.0.0.1:{port}/api"
    try:
        async with aiodots.Client(**emulator.credentials, base_url=base_url,
                                  max_retries=0) as dots:
            with pytest.raises(aiodots.APIConnectionError):
                await dots.flows.create(steps=["payout"])
        assert emulator.stats.requests == 0

        async with aiodots.Client(**emulator.credentials, base_url=base_url,
                                  ssl=trusting(ca)) as dots:
            flow = await dots.flows.create(steps=["payout"])
        assert emulator.flows[flow.id]["steps"] == ["payout"]
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("host", "trusted", "reason"),
    [
        ("127.0.0.1", False, r"local issuer|self.signed"),  # OpenSSL's words for it
        ("api.example.test", True, r"mismatch"),
    ],
    ids=["untrusted-ca", "another-host"],
)
async def test_a_rejected_certificate_fails_at_once_and_is_never_retried(
    ca: trustme.CA, host: str, trusted: bool, reason: str
) -> None:
    """Every attempt would meet the same certificate: retrying only delays the error (by
    the whole backoff) and hides its cause behind "could not connect"."""
    emulator = DotsEmulator()
    runner, port = await serve_tls(emulator, ca, host)
    try:
        async with aiodots.Client(
            **emulator.credentials, base_url=f"https://127.0.0.1:{port}/api", max_retries=3,
            ssl=trusting(ca) if trusted else None,
        ) as dots:
            with pytest.raises(aiodots.TLSVerificationError) as caught:
                await dots.flows.retrieve("f-1")
            with pytest.raises(aiodots.TLSVerificationError):  # a create: the same
                await dots.flows.create(steps=["payout"])
            stats = dots.stats
        message = str(caught.value)
        assert re.fullmatch(
            f"the server's TLS certificate was not accepted: .*({reason}).* "
            r"\(GET /v2/flows/f-1\)",
            message,
        ), message
        assert isinstance(caught.value, aiodots.APIConnectionError)
        assert (stats.requests, stats.retries, stats.failures) == (2, 0, 2)
        assert emulator.stats.requests == 0
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("url", ["http://[bad/api", "https://[bad/api", "http://:80/api"])
def test_a_malformed_base_url_is_a_validation_error(url: str) -> None:
    with pytest.raises(aiodots.ValidationError, match="not a valid URL"):
        aiodots.Client(CLIENT_ID, API_KEY, base_url=url)
