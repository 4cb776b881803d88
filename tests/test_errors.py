"""Each error response becomes its typed exception, with a message a person can read."""

from __future__ import annotations

import json
import time

import aioresponses
import pytest
from yarl import URL

import aiodots
from aiodots.errors import (
    error_for_response,
    error_for_unread_body,
    excerpt,
    message_from_body,
    response_too_large,
)

from .conftest import BASE_URL, ERROR_CLASSES, flow_json

FLOWS = f"{BASE_URL}/v2/flows"


@pytest.mark.parametrize(("status", "cls"), [*ERROR_CLASSES, (418, aiodots.APIError)])
async def test_each_status_raises_its_class_with_status_message_and_body(
    status: int, cls: type[aiodots.APIError], mocked: aioresponses.aioresponses
) -> None:
    body = {"error_code": "invalid-input", "message": f"boom {status}"}
    mocked.post(FLOWS, status=status, payload=body, headers={"X-Request-Id": "r1"}, repeat=True)
    async with aiodots.Client("id", "key", base_url=BASE_URL, max_retries=0) as dots:
        with pytest.raises(cls) as caught:
            await dots.flows.create(steps=["compliance"])
    err = caught.value
    assert type(err) is cls
    assert err.status == status
    assert err.message == f"boom {status}"
    assert err.body == body
    assert err.error_code == "invalid-input"
    assert err.headers["X-Request-Id"] == "r1"
    assert str(err) == f"{status} boom {status} (POST /v2/flows)"
    assert len(mocked.requests[("POST", URL(FLOWS))]) == 1


async def test_an_html_502_page_becomes_a_server_error_with_a_short_excerpt(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    page = (
        "<html><head><title>502 Bad Gateway</title></head><body>"
        + "<p>x</p>" * 500 + "</body></html>"
    )
    mocked.get(f"{FLOWS}/f1", status=502, body=page, content_type="text/html", repeat=True)
    with pytest.raises(aiodots.ServerError) as caught:
        await client.flows.retrieve("f1", max_retries=0)
    assert caught.value.message == "502 Bad Gateway"
    assert str(caught.value) == "502 Bad Gateway (GET /v2/flows/f1)"


async def test_truncated_json_on_success_is_an_invalid_response_not_a_decode_error(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.post(FLOWS, status=200, body='{"id": "f1", "crea')
    with pytest.raises(aiodots.InvalidResponseError) as caught:
        await client.flows.create(steps=["compliance"])
    assert "not valid JSON" in str(caught.value)
    assert caught.value.status == 200
    assert len(mocked.requests) == 1  # the flow may exist: a create is not repeated


async def test_a_lone_escaped_surrogate_is_json_read_with_a_replacement_character(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    # JSON's grammar allows "\\ud83d" alone (RFC 8259 section 8.2): what a server writes
    # that cuts a string between the halves of an emoji (JavaScript's JSON.stringify
    # does). orjson refuses it; the answer is no broken body to try again.
    metadata = {"name": "Zo\ud83d", "k\udc00": ["\ud83d\ude00", "\udc00x"]}
    body = json.dumps(flow_json(metadata=metadata))  # ensure_ascii: escapes, as sent
    assert "\\ud83d\"" in body
    mocked.get(f"{FLOWS}/f1", status=200, body=body)
    flow = await client.flows.retrieve("f1")
    assert flow.metadata == {"name": "Zo\ufffd", "k\ufffd": ["\U0001f600", "\ufffdx"]}
    assert len(mocked.requests[("GET", URL(f"{FLOWS}/f1"))]) == 1
    # What is no JSON stays refused on that path too.
    for bad in ('{"id": NaN}', '{"id": 1e400}', '{"id": "\\ud83d", "crea'):
        mocked.get(f"{FLOWS}/f2", status=200, body=bad)
        with pytest.raises(aiodots.UnreadableResponseError, match="not valid JSON"):
            await client.flows.retrieve("f2", max_retries=0)


async def test_truncated_json_in_an_error_body_still_maps_the_status(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.post(FLOWS, status=400, body='{"message": "steps is req')
    with pytest.raises(aiodots.BadRequestError) as caught:
        await client.flows.create(steps=["compliance"])
    assert caught.value.message == '{"message": "steps is req'


async def test_a_success_body_of_the_wrong_shape_is_an_invalid_response(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.post(FLOWS, payload={"id": 17, "link": "x"})
    with pytest.raises(aiodots.InvalidResponseError) as caught:
        await client.flows.create(steps=["compliance"])
    text = str(caught.value)
    assert "$.id" in text
    assert "$.created" in text


async def test_a_bad_body_is_reported_with_the_status_it_came_with(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.post(FLOWS, status=201, payload={"id": "f1"})
    with pytest.raises(aiodots.InvalidResponseError) as caught:
        await client.flows.create(steps=["compliance"])
    assert caught.value.status == 201
    assert "$.link" in str(caught.value)
    mocked.get(FLOWS, status=202, payload={"data": "nope"})
    with pytest.raises(aiodots.InvalidResponseError) as caught:
        await client.flows.list_page()
    assert caught.value.status == 202


async def test_a_json_array_where_an_object_is_expected_is_an_invalid_response(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.get(f"{FLOWS}/f1", payload=[flow_json()])
    with pytest.raises(aiodots.InvalidResponseError, match="expected a JSON object"):
        await client.flows.retrieve("f1")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"message": "m"}, "m"),
        ({"error": "resource-busy"}, "resource-busy"),
        ({"error": {"message": "nested"}}, "nested"),
        ({"detail": [{"msg": "a"}, {"msg": "b"}]}, "a; b"),
        ({"unrelated": 1}, None),
        ("plain", "plain"),
    ],
)
def test_message_extraction_handles_the_shapes_seen(body: object, message: str | None) -> None:
    assert message_from_body(body) == message


def test_error_code_is_kept_from_a_kebab_case_error_field() -> None:
    err = error_for_response(409, {}, b'{"error": "resource-busy"}', method="POST", path="/p")
    assert isinstance(err, aiodots.ConflictError)
    assert err.error_code == "resource-busy"


def test_an_empty_error_body_falls_back_to_the_reason_phrase() -> None:
    err = error_for_response(503, {}, b"", method="GET", path="/p", reason="Service Unavailable")
    assert str(err) == "503 Service Unavailable (GET /p)"


def test_excerpt_is_one_short_line() -> None:
    text = excerpt("<div>" + "word " * 200 + "</div>")
    assert "\n" not in text
    assert len(text) <= 200


@pytest.mark.parametrize(
    "page",
    [
        "<title>" * 15_000,  # titles that never close
        "<" * 100_000,  # tags that never close
        "<title" * 15_000,
        "<p>" + "<title>x" * 12_000 + "</title>",
    ],
    ids=["open-titles", "open-tags", "open-title-tags", "one-late-close"],
)
def test_a_hostile_error_page_is_excerpted_in_linear_time(page: str) -> None:
    """The excerpt runs inside the event loop on whatever body a server (or a proxy in
    front of it) sends: 100 kB of unclosed tags took seconds, and a megabyte minutes,
    while every other call on the loop waited."""
    started = time.perf_counter()
    error = error_for_response(
        502, {}, page.encode(), method="GET", path="/v2/flows/f-1", reason="Bad Gateway"
    )
    assert time.perf_counter() - started < 0.5
    assert isinstance(error, aiodots.ServerError)
    assert len(excerpt(page)) <= 200


def test_a_title_is_still_found_after_a_stray_tag() -> None:
    page = "<a <b><html><head><TITLE lang=en>502 Bad\nGateway</title></head><p>x</p>"
    assert excerpt(page) == "502 Bad Gateway"


def test_control_characters_a_server_sends_are_escaped_in_the_message() -> None:
    """The message goes to logs and terminals (the retry's DEBUG line, a CLI's "error:"):
    a newline from the server must not start a forged log line, nor an escape sequence
    repaint the terminal. The body keeps what was sent."""
    sent = "bad\nINFO:aiodots:all clear\r\x1b[2J\x85\u2028end"
    error = error_for_response(
        400, {}, json.dumps({"message": sent}).encode(), method="POST", path="/v2/flows"
    )
    assert error.message == "bad\\nINFO:aiodots:all clear\\r\\x1b[2J\\x85\\u2028end"
    assert str(error) == f"400 {error.message} (POST /v2/flows)"
    assert error.body == {"message": sent}
    moved = error_for_response(
        302, {"Location": "https://elsewhere.example/\x1b[2J"}, b"", method="GET",
        path="/v2/flows", reason="Found\x07",
    )
    assert isinstance(moved, aiodots.RedirectError)
    assert moved.location == "https://elsewhere.example/\x1b[2J"
    assert not [c for c in str(moved) if not c.isprintable()]


def test_validation_error_is_a_value_error_and_a_dots_error() -> None:
    assert issubclass(aiodots.ValidationError, ValueError)
    assert issubclass(aiodots.ValidationError, aiodots.DotsError)
    assert issubclass(aiodots.APITimeoutError, aiodots.APIConnectionError)
    assert issubclass(aiodots.RateLimitError, aiodots.APIError)


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 5000 + b"]" * 5000,  # deeper than the JSON decoder's stack
        b'{"error": ' * 900 + b'"deep-code"' + b"}" * 900,  # within it, deeper than a look
        b'{"message": ' + b"[" * 900 + b'"deep"' + b"]" * 900 + b"}",
    ],
    ids=["past-the-decoder", "nested-error-objects", "nested-lists"],
)
def test_an_error_body_of_any_depth_maps_to_its_error_without_raising(raw: bytes) -> None:
    """`error_for_response` never raises: a hostile or broken body nested thousands deep
    (a RecursionError in the decoder, or in the look for a message) still maps."""
    error = error_for_response(500, {}, raw, method="GET", path="/v2/flows/f-1")
    assert isinstance(error, aiodots.ServerError)
    assert error.status == 500


def test_error_headers_are_read_whatever_their_case() -> None:
    """aiohttp's C parser re-cases known header names, its pure-Python parser (PyPy,
    AIOHTTP_NO_EXTENSIONS) does not, and proxies often send lower case: a redirect's
    target and a header the caller reads must not depend on it."""
    moved = error_for_response(
        302, {"location": "https://elsewhere.example/x"}, b"", method="GET", path="/v2/f"
    )
    assert isinstance(moved, aiodots.RedirectError)
    assert moved.location == "https://elsewhere.example/x"
    refused = error_for_response(
        503, {"x-request-id": "r-1"}, b"{}", method="GET", path="/v2/f"
    )
    assert refused.headers["X-Request-Id"] == "r-1"
    assert refused.headers.get("x-request-id") == "r-1"


@pytest.mark.parametrize(
    ("declared", "size", "said"),
    [
        (True, 209_715_200, "its Content-Length declares 209715200 bytes; none of it was read"),
        (False, 33_619_968, "reading stopped after 33619968 bytes"),
    ],
    ids=["declared", "observed"],
)
def test_a_body_over_the_limit_names_the_limit_and_the_size_and_nothing_of_the_body(
    declared: bool, size: int, said: str
) -> None:
    error = response_too_large(
        200, {"Set-Cookie": "session=SECRET"}, limit=33_554_432, size=size,
        declared=declared, method="GET", path="/v2/payout-batches/b-1/results",
    )
    assert isinstance(error, aiodots.ResponseTooLargeError)
    assert isinstance(error, aiodots.InvalidResponseError)
    assert (error.status, error.limit, error.size, error.declared) == (
        200, 33_554_432, size, declared
    )
    assert error.body is None
    assert str(error) == (
        f"200 the response body is over max_response_size=33554432 bytes: {said} "
        "(GET /v2/payout-batches/b-1/results)"
    )
    assert "SECRET" not in str(error)
    assert "SECRET" not in repr(error)


@pytest.mark.parametrize("status", [200, 201, 408, 500, 502, 504])
def test_a_body_over_the_limit_is_never_retried_unless_a_refusal_came_with_it(
    status: int,
) -> None:
    """A server that sent 200 MB once sends it again: no kind of call makes it worth
    another attempt (a 502's, say, which is otherwise retried for a read)."""
    policy = aiodots.RetryPolicy()
    too_large = response_too_large(
        status, {}, limit=10, size=11, declared=False, method="GET", path="/v2/flows"
    )
    error = error_for_unread_body(too_large, reason="Whatever", retry_after=None)
    assert error is too_large
    for replay in aiodots.Replay:
        assert not policy.is_retryable(error, replay)


@pytest.mark.parametrize(
    ("status", "reason", "cls"),
    [(429, "Too Many Requests", aiodots.RateLimitError),
     (503, "Service Unavailable", aiodots.ServerError)],
)
def test_a_refusal_over_the_limit_is_still_that_refusal_with_its_retry_after(
    status: int, reason: str, cls: type[aiodots.APIError]
) -> None:
    """A 429 or a 503 means what its status and headers say, whatever page comes with
    it: the error of its status, retried for every kind of call as a refusal is."""
    too_large = response_too_large(
        status, {"Retry-After": "7"}, limit=10, size=4096, declared=True,
        method="POST", path="/v2/flows",
    )
    error = error_for_unread_body(too_large, reason=reason, retry_after=7.0)
    assert type(error) is cls
    assert (error.status, error.retry_after, error.body, error.error_code) == (
        status, 7.0, None, None
    )
    assert error.headers["retry-after"] == "7"
    assert str(error) == (
        f"{status} {reason}; the response body is over max_response_size=10 bytes: its "
        "Content-Length declares 4096 bytes; none of it was read (POST /v2/flows)"
    )
    policy = aiodots.RetryPolicy()
    for replay in aiodots.Replay:
        assert policy.is_retryable(error, replay)
    assert policy.wait_for(error, 1) == 7.0
