"""Nothing is sent where it does not belong: no redirect is followed, no clear-text
credentials leave the machine, and TLS is verified (against a CA the caller may add)."""

from __future__ import annotations

import logging
import re
import ssl
import traceback
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trustme
from aiohttp import web

import aiodots
from aiodots.errors import ConnectFailed
from aiodots.testing import DotsEmulator

from .conftest import API_KEY, CLIENT_ID
from .network_fixtures import ConnectProxy, basic, serve, serve_tls, trusting

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


# -- proxies ----------------------------------------------------------------------------


async def test_calls_go_through_the_proxy_which_never_sees_the_api_key(ca: trustme.CA) -> None:
    emulator = DotsEmulator()
    runner, port = await serve_tls(emulator, ca)
    try:
        async with ConnectProxy("egress:s3cret") as proxy, aiodots.Client(
            **emulator.credentials, base_url=f"https://127.0.0.1:{port}/api",
            ssl=trusting(ca), proxy=f"http://egress:s3cret@127.0.0.1:{proxy.port}",
        ) as dots:
            flow = await dots.flows.create(steps=["payout"])
            assert (await dots.flows.retrieve(flow.id)).id == flow.id
    finally:
        await runner.cleanup()
    # One tunnel, with the proxy's credentials, kept for both calls like a direct connection.
    assert proxy.asked == [("CONNECT", f"127.0.0.1:{port}", basic("egress:s3cret"))]
    assert emulator.stats.requests == 2
    assert len(proxy.relayed) > 1000  # both calls' TLS records passed through it
    api_key, client_id = emulator.credentials["api_key"], emulator.credentials["client_id"]
    assert api_key.encode() not in proxy.relayed
    assert basic(f"{client_id}:{api_key}").encode() not in proxy.relayed


async def test_a_proxy_without_credentials_is_never_sent_the_api_key(ca: trustme.CA) -> None:
    # aiohttp applies a session's default headers to the proxy's too, and turns an
    # Authorization among them into the CONNECT's Proxy-Authorization: with the API key
    # on the session, a proxy that asks for no credentials was handed the API key.
    emulator = DotsEmulator()
    runner, port = await serve_tls(emulator, ca)
    try:
        async with ConnectProxy(None) as proxy, aiodots.Client(
            **emulator.credentials, base_url=f"https://127.0.0.1:{port}/api",
            ssl=trusting(ca), proxy=f"http://127.0.0.1:{proxy.port}",
        ) as dots:
            flow = await dots.flows.create(steps=["payout"])
            assert (await dots.flows.retrieve(flow.id)).id == flow.id
    finally:
        await runner.cleanup()
    assert proxy.asked == [("CONNECT", f"127.0.0.1:{port}", None)]
    assert emulator.stats.requests == 2  # authenticated: the emulator answers 401 otherwise
    api_key, client_id = emulator.credentials["api_key"], emulator.credentials["client_id"]
    assert basic(f"{client_id}:{api_key}").encode() not in proxy.relayed


async def test_a_refused_tunnel_is_a_connect_failure_that_names_no_password(
    ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    emulator = DotsEmulator()
    runner, port = await serve_tls(emulator, ca)
    caplog.set_level(logging.DEBUG, logger="aiodots")
    try:
        async with ConnectProxy("egress:right") as proxy:
            dots = aiodots.Client(
                **emulator.credentials, base_url=f"https://127.0.0.1:{port}/api",
                ssl=trusting(ca), proxy=f"http://egress:hunter2@127.0.0.1:{proxy.port}",
                max_retries=1,
            )
            async with dots:
                with pytest.raises(aiodots.APIConnectionError) as caught:
                    await dots.flows.retrieve("f-1")
                stats = dots.stats
    finally:
        await runner.cleanup()
    assert str(caught.value) == (
        "the proxy refused to connect: 407 Proxy Authentication Required (GET /v2/flows/f-1)"
    )
    assert isinstance(caught.value, ConnectFailed)  # never reached the API: safe to retry
    assert (stats.requests, stats.retries) == (2, 1)
    assert [method for method, _, _ in proxy.asked] == ["CONNECT", "CONNECT"]
    assert emulator.stats.requests == 0
    told = ["".join(traceback.format_exception(caught.value)), repr(dots), caplog.text,
            with_locals(caught.value)]
    assert not [text for text in told if "hunter2" in text or HUNTER2_BASIC in text]


def with_locals(exc: BaseException) -> str:
    """A traceback as pytest --showlocals, rich or Sentry show it: every frame's locals,
    aiohttp's own included, down the whole chain of causes."""
    return "".join(traceback.TracebackException.from_exception(exc, capture_locals=True).format())


HUNTER2_BASIC = basic("egress:hunter2").removeprefix("Basic ")


async def test_a_proxy_answer_aiohttp_cannot_parse_names_no_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiohttp's own error for it names the proxy URL it asked, password included."""
    caplog.set_level(logging.DEBUG, logger="aiodots")
    garbage = b"HTTP/1.1 200 OK\r\nA header without a colon\r\n\r\n"
    async with ConnectProxy("egress:hunter2", answer=garbage) as proxy:
        dots = aiodots.Client(
            CLIENT_ID, API_KEY, proxy=f"http://egress:hunter2@127.0.0.1:{proxy.port}",
            retry_policy=aiodots.RetryPolicy(max_retries=1, backoff_initial=0.001),
        )
        async with dots:
            with pytest.raises(aiodots.APIConnectionError) as caught:
                await dots.flows.retrieve("f-1")
    assert str(caught.value).startswith("connection failed: ClientResponseError: 400 ")
    assert len(proxy.asked) == 2  # a read is retried after an unreadable answer
    told = ["".join(traceback.format_exception(caught.value)), repr(dots), caplog.text]
    assert "retrying in" in caplog.text  # the retry's log line was written, and checked
    assert not [text for text in told if "hunter2" in text]


async def test_an_unreachable_proxy_is_a_connect_failure_that_names_no_password(
    unused_tcp_port: int,
) -> None:
    async with aiodots.Client(
        CLIENT_ID, API_KEY, proxy=f"http://egress:hunter2@127.0.0.1:{unused_tcp_port}",
        max_retries=0,
    ) as dots:
        with pytest.raises(ConnectFailed) as caught:
            await dots.flows.retrieve("f-1")
    # Shown before any assert names the password: the test's own frame is in the
    # traceback, and pytest keeps what an assert compared in that frame's locals.
    told = ["".join(traceback.format_exception(caught.value)), with_locals(caught.value)]
    assert str(caught.value).startswith("could not connect: ")
    assert not [text for text in told if "hunter2" in text or HUNTER2_BASIC in text]


@pytest.mark.parametrize(
    ("proxy", "shown"),
    [
        ("ftp://egress:hunter2@proxy.example:2121", "***@proxy.example:2121"),
        ("egress:hunter2@proxy.example:3128", "***@proxy.example:3128"),  # no scheme
        ("http//egress:hunter2@proxy.example:3128", "***@proxy.example:3128"),
        ("proxy.example:3128", "proxy.example:3128"),
        ("http://", "http://"),
        (3128, None),
    ],
)
def test_a_proxy_is_checked_at_construction_without_repeating_its_password(
    proxy: Any, shown: str | None
) -> None:
    with pytest.raises(aiodots.ValidationError) as caught:
        aiodots.Client(CLIENT_ID, API_KEY, proxy=proxy)
    message = str(caught.value)
    assert "hunter2" not in message
    if shown is None:
        assert message == "proxy must be a URL string, not int"
    else:
        assert message.startswith("proxy must be an http:// or https:// URL with a host")
        assert message.endswith(f"not {shown!r}")


def test_plain_http_through_a_proxy_needs_the_insecure_switch() -> None:
    proxy = "http://proxy.example:3128"
    with pytest.raises(aiodots.ValidationError, match="plain http through a proxy"):
        aiodots.Client(CLIENT_ID, API_KEY, base_url="http://127.0.0.1:8080/api", proxy=proxy)
    aiodots.Client(CLIENT_ID, API_KEY, base_url="http://127.0.0.1:8080/api", proxy=proxy,
                   allow_insecure_http=True)


@pytest.mark.parametrize("url", ["http://[bad/api", "https://[bad/api", "http://:80/api"])
def test_a_malformed_base_url_is_a_validation_error(url: str) -> None:
    with pytest.raises(aiodots.ValidationError, match="not a valid URL"):
        aiodots.Client(CLIENT_ID, API_KEY, base_url=url)


@pytest.mark.parametrize(
    "url",
    [
        "https://user:hunter2@api.dots.dev/api",
        "https://hunter2@api.dots.dev/api",
        "https://:hunter2@api.dots.dev/api",
        "https://user:hunter2#x@api.dots.dev/api",  # a "#" unencoded: no valid URL
        "user:hunter2@api.dots.dev/api",  # no scheme
        "http://user:hunter2@127.0.0.1:8080/api",
    ],
)
def test_a_base_url_with_credentials_is_refused_without_repeating_them(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API key goes as Basic auth, which aiohttp will not combine with a URL's own:
    such a base URL could never work, and the client's repr would show its password."""
    for given, env in ((url, None), (None, url)):
        if env is not None:
            monkeypatch.setenv("DOTS_BASE_URL", env)
        with pytest.raises(aiodots.ValidationError) as caught:
            aiodots.Client(CLIENT_ID, API_KEY, base_url=given)
        told = "".join(traceback.format_exception(caught.value))
        assert "hunter2" not in told
        assert "***@" in str(caught.value)
