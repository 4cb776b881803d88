"""Lists follow `has_more` lazily, and a list that does not advance cannot loop forever:
the same cursor again, or a page already seen, ends with `InvalidResponseError` naming
the cursor, after at most one repeated page."""

from __future__ import annotations

import re
from typing import Any

import aioresponses
import pytest

import aiodots

from .conftest import BASE_URL, flow_json

FLOWS = re.compile(re.escape(BASE_URL) + r"/v2/flows(\?.*)?$")
USERS = re.compile(re.escape(BASE_URL) + r"/v2/users(\?.*)?$")


def sent_queries(mocked: aioresponses.aioresponses) -> list[dict[str, str]]:
    """The query of each request sent, in order, however the client gave it to aiohttp
    (folded into the URL, or as `params`): aioresponses keys requests by the URL sent."""
    return [dict(url.query) for (_, url), calls in mocked.requests.items() for _ in calls]


def page(*ids: str, has_more: bool = True) -> dict[str, Any]:
    return {"data": [flow_json(id=i) for i in ids], "has_more": has_more}


async def test_pages_are_fetched_as_the_iteration_goes(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.get(FLOWS, payload=page("a", "b"))
    mocked.get(FLOWS, payload=page("c", has_more=False))
    ids = [flow.id async for flow in client.flows.list(limit=2)]
    assert ids == ["a", "b", "c"]
    assert sent_queries(mocked) == [{"limit": "2"}, {"limit": "2", "starting_after": "b"}]


async def test_a_server_answering_the_same_page_again_stops_with_the_cursor_named(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    for _ in range(5):
        mocked.get(FLOWS, payload=page("a", "b"))
    seen: list[str] = []

    async def collect() -> None:
        async for flow in client.flows.list():
            seen.append(flow.id)

    with pytest.raises(aiodots.InvalidResponseError, match="starting_after='b'"):
        await collect()
    assert seen == ["a", "b"]  # the repeated page is not yielded
    assert sum(len(calls) for calls in mocked.requests.values()) == 2


async def test_a_cursor_that_comes_back_after_other_pages_stops_the_list(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.get(FLOWS, payload=page("a", "b"))
    mocked.get(FLOWS, payload=page("c", "d"))
    mocked.get(FLOWS, payload=page("a", "b"))
    mocked.get(FLOWS, payload=page("c", "d"))
    with pytest.raises(aiodots.InvalidResponseError, match="does not advance"):
        _ = [flow async for flow in client.flows.list()]
    assert sum(len(calls) for calls in mocked.requests.values()) == 3


async def test_an_empty_page_that_says_more_follow_ends_the_list(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.get(FLOWS, payload={"data": [], "has_more": True})
    assert [flow async for flow in client.flows.list()] == []


async def test_every_resource_list_has_the_same_guard(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    user = {"id": "3c90c3cc-0d44-4b50-8888-8dd25736052a", "email": "a@example.com"}
    for _ in range(3):
        mocked.get(USERS, payload={"data": [user], "has_more": True})
    with pytest.raises(aiodots.InvalidResponseError, match="starting_after") as caught:
        _ = [u async for u in client.users.list()]
    assert caught.value.path == "/v2/users"


async def test_backwards_pages_follow_ending_before(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.get(FLOWS, payload=page("y", "z"))
    mocked.get(FLOWS, payload=page("w", "x", has_more=False))
    ids = [flow.id async for flow in client.flows.list(ending_before="zz", limit=2)]
    assert ids == ["y", "z", "w", "x"]
    assert sent_queries(mocked)[1] == {"limit": "2", "ending_before": "y"}
