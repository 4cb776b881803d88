"""Per-call options: a keyword that is neither a field nor an option is a TypeError."""

from __future__ import annotations

from typing import Any

import aioresponses
import pytest

import aiodots
from aiodots.resources._options import call_options

from .conftest import BASE_URL, flow_json


def test_a_misspelt_option_is_a_type_error_naming_it() -> None:
    typo: dict[str, Any] = {"max_retry": 3}
    with pytest.raises(TypeError, match="'max_retry'"):
        call_options(**typo)


def test_every_documented_option_is_accepted() -> None:
    options = call_options(
        timeout=1.0, max_retries=2, deadline=5.0, extra_headers={"X-A": "1"},
        api_app_id="app", user_ip="10.0.0.1",
    )
    assert options is not None
    assert options.max_retries == 2
    assert options.headers == {"X-A": "1", "Api-App-Id": "app", "Dots-User-IP": "10.0.0.1"}


async def test_a_misspelt_option_sends_nothing(mocked: aioresponses.aioresponses) -> None:
    mocked.post(f"{BASE_URL}/v2/flows", payload=flow_json())
    mocked.get(f"{BASE_URL}/v2/flows/f1", payload=flow_json())
    typo: dict[str, Any] = {"max_retry": 3}
    async with aiodots.Client("id", "key", base_url=BASE_URL) as dots:
        with pytest.raises(TypeError, match="'max_retry'"):
            await dots.flows.create(steps=["payout"], **typo)
        with pytest.raises(TypeError, match="'max_retry'"):
            await dots.flows.retrieve("f1", **typo)
        with pytest.raises(TypeError, match="'max_retry'"):
            dots.flows.create_many([{"steps": ["payout"]}], **typo)
    assert mocked.requests == {}


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"extra_headers": {"X-A": "a\r\nX-Injected: 1"}}, "X-A contains a line break"),
        ({"extra_headers": {"X-A": "a\0b"}}, "X-A contains a line break or a NUL"),
        ({"extra_headers": {"X-Bad\r\nName": "v"}}, "'X-Bad\\r\\nName' is not a header name"),
        ({"extra_headers": {"X A": "v"}}, "'X A' is not a header name"),
        ({"extra_headers": {1: "v"}}, "1 is not a header name"),
        ({"extra_headers": {"X-A": 1}}, "X-A must be a string, not int"),
        ({"api_app_id": "app\r\nX-Injected: 1"}, "api_app_id contains a line break"),
        ({"api_app_id": 12345}, "api_app_id must be a string, not int"),
        ({"user_ip": "1.2.3.4\nX-Injected: 1"}, "user_ip contains a line break"),
        ({"user_ip": ["1.2.3.4"]}, "user_ip must be a string, not list"),
    ],
)
async def test_a_header_option_that_could_not_be_sent_is_refused_before_sending(
    mocked: aioresponses.aioresponses, option: dict[str, Any], message: str
) -> None:
    """aiohttp refuses these itself, but with its own ValueError or TypeError; the
    caller is owed a ValidationError that names the option, and nothing sent."""
    with pytest.raises(aiodots.ValidationError) as caught:
        call_options(**option)
    assert message in str(caught.value)
    async with aiodots.Client("id", "key", base_url=BASE_URL) as dots:
        with pytest.raises(aiodots.ValidationError):
            await dots.flows.retrieve("f1", **option)
    assert mocked.requests == {}
