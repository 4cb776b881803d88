"""Lists follow `has_more` lazily, and a list that does not advance cannot loop forever:
the same cursor again, or a page already seen, ends with `InvalidResponseError` naming
the cursor, after at most one repeated page. The next cursor is the id of the page's edge
item as the server gave it, never checked again as the caller's input; `has_more` is a
JSON boolean."""

from __future__ import annotations

import re
import types
from typing import Any

import aioresponses
import pytest

import aiodots
from aiodots.converter import structure_page

from .conftest import BASE_URL, flow_json

FLOWS = re.compile(re.escape(BASE_URL) + r"/v2/flows(\?.*)?$")
USERS = re.compile(re.escape(BASE_URL) + r"/v2/users(\?.*)?$")
TRANSACTIONS = re.compile(re.escape(BASE_URL) + r"/v2/transactions(\?.*)?$")
PAYMENT_CUSTOMERS = re.compile(re.escape(BASE_URL) + r"/v2/payment-customers(\?.*)?$")
USER_ID = "3c90c3cc-0d44-4b50-8888-8dd25736052a"


def sent_queries(mocked: aioresponses.aioresponses) -> list[dict[str, str]]:
    """The query of each request sent, in order, however the client gave it to aiohttp
    (folded into the URL, or as `params`): aioresponses keys requests by the URL sent."""
    return [dict(url.query) for (_, url), calls in mocked.requests.items() for _ in calls]


def sent_count(mocked: aioresponses.aioresponses) -> int:
    return sum(len(calls) for calls in mocked.requests.values())


def page(*ids: str, has_more: bool = True) -> dict[str, Any]:
    return {"data": [flow_json(id=i) for i in ids], "has_more": has_more}


def transactions(*ids: int, has_more: bool = True) -> dict[str, Any]:
    """A page of transactions: their ids are integers (the spec and the model agree)."""
    return {"data": [{"id": i, "amount": 100 * i} for i in ids], "has_more": has_more}


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
    assert sent_count(mocked) == 2


async def test_a_cursor_that_comes_back_after_other_pages_stops_the_list(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.get(FLOWS, payload=page("a", "b"))
    mocked.get(FLOWS, payload=page("c", "d"))
    mocked.get(FLOWS, payload=page("a", "b"))
    mocked.get(FLOWS, payload=page("c", "d"))
    with pytest.raises(aiodots.InvalidResponseError, match="does not advance"):
        _ = [flow async for flow in client.flows.list()]
    assert sent_count(mocked) == 3


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


async def test_transactions_follow_their_integer_ids_page_by_page(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.get(TRANSACTIONS, payload=transactions(1, 2))
    mocked.get(TRANSACTIONS, payload=transactions(3, 4))
    mocked.get(TRANSACTIONS, payload=transactions(5, has_more=False))
    ids = [t.id async for t in client.transactions.list(limit=2)]
    assert ids == [1, 2, 3, 4, 5]
    assert sent_queries(mocked) == [
        {"limit": "2"},
        {"limit": "2", "starting_after": "2"},
        {"limit": "2", "starting_after": "4"},
    ]


async def test_transactions_go_backwards_from_an_id_the_caller_got_from_the_api(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.get(TRANSACTIONS, payload=transactions(8, 9))
    mocked.get(TRANSACTIONS, payload=transactions(6, 7, has_more=False))
    # A transaction's `id` is an int: the caller can hand it back as it is.
    ids = [t.id async for t in client.transactions.list(ending_before=10, limit=2)]
    assert ids == [8, 9, 6, 7]
    assert sent_queries(mocked) == [
        {"limit": "2", "ending_before": "10"},
        {"limit": "2", "ending_before": "8"},
    ]
    mocked.get(TRANSACTIONS, payload=transactions(8, has_more=False))
    page = await client.transactions.list_page(starting_after=7)
    assert [t.id for t in page.data] == [8]
    assert sent_queries(mocked)[-1] == {"starting_after": "7"}


async def test_the_server_s_ids_are_sent_back_as_cursors_without_the_caller_s_checks(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    # The users list checks the caller's cursors as UUIDs; ids the server listed are
    # its own to judge, and go back as it gave them.
    mocked.get(USERS, payload={"data": [{"id": "usr_1"}, {"id": "usr 2"}], "has_more": True})
    mocked.get(USERS, payload={"data": [{"id": "usr_3"}], "has_more": False})
    ids = [u.id async for u in client.users.list(limit=2)]
    assert ids == ["usr_1", "usr 2", "usr_3"]
    assert sent_queries(mocked) == [{"limit": "2"}, {"limit": "2", "starting_after": "usr 2"}]


async def test_a_bad_cursor_of_the_caller_fails_before_anything_is_sent(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    with pytest.raises(aiodots.ValidationError, match="integer id"):
        client.transactions.list(starting_after="not-a-number")
    with pytest.raises(aiodots.ValidationError, match="integer id"):
        await client.transactions.list_page(ending_before=True)
    with pytest.raises(aiodots.ValidationError, match="UUID"):
        client.users.list(starting_after="2")
    with pytest.raises(aiodots.ValidationError, match="object id"):
        client.payment_customers.list(ending_before="")
    with pytest.raises(aiodots.ValidationError, match="not both"):
        client.flows.list(starting_after="a", ending_before="b")
    assert sent_count(mocked) == 0


NO_ID_CASES = [
    pytest.param("users", "/v2/users", {"id": USER_ID}, {"email": "a@x.io"}, id="uuid-checked"),
    pytest.param(
        "payment_customers", "/v2/payment-customers", {"id": USER_ID}, {"id": None},
        id="unchecked",
    ),
    pytest.param("transactions", "/v2/transactions", {"id": 1}, {"amount": 5}, id="integer-ids"),
]


@pytest.mark.parametrize(("resource", "path", "with_id", "without_id"), NO_ID_CASES)
@pytest.mark.parametrize("backwards", [False, True], ids=["forwards", "backwards"])
async def test_an_edge_item_without_an_id_ends_the_list_as_an_invalid_response(
    client: aiodots.Client,
    mocked: aioresponses.aioresponses,
    resource: str,
    path: str,
    with_id: dict[str, Any],
    without_id: dict[str, Any],
    backwards: bool,
) -> None:
    # The item without an id is the one the next cursor would be taken from.
    data = [without_id, with_id] if backwards else [with_id, without_id]
    url = re.compile(re.escape(BASE_URL + path) + r"(\?.*)?$")
    mocked.get(url, payload={"data": data, "has_more": True}, repeat=True)
    cursor = {"ending_before": 5 if resource == "transactions" else USER_ID} if backwards else {}
    listed = getattr(client, resource).list(**cursor)
    seen: list[Any] = []

    async def collect() -> None:
        async for item in listed:
            seen.append(item)

    with pytest.raises(aiodots.InvalidResponseError, match="has no id") as caught:
        await collect()
    assert len(seen) == 2  # the page itself is fine and was yielded
    assert caught.value.path == path
    assert sent_count(mocked) == 1


async def test_an_item_without_an_id_on_the_last_page_is_no_error(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.get(USERS, payload={"data": [{"id": USER_ID}, {}], "has_more": False})
    assert len([u async for u in client.users.list()]) == 2


@pytest.mark.parametrize("has_more", ["false", "true", 1, 0, "yes", [], {}])
def test_has_more_must_be_a_json_boolean(has_more: Any) -> None:
    for body in ({"data": [], "has_more": has_more},
                 types.MappingProxyType({"data": [], "has_more": has_more})):
        with pytest.raises(aiodots.InvalidResponseError, match="has_more") as caught:
            structure_page(body, aiodots.Flow, method="GET", path="/v2/flows")
        assert caught.value.path == "/v2/flows"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"data": [], "has_more": True}, True),
        ({"data": [], "has_more": False}, False),
        ({"data": [], "has_more": None}, False),
        ({"data": []}, False),
        ([], False),
    ],
)
def test_has_more_absent_or_null_means_no_more(body: Any, expected: bool) -> None:
    assert structure_page(body, aiodots.Flow, method="GET", path="/").has_more is expected


@pytest.mark.parametrize("has_more", ["false", 1, "yes"])
async def test_a_list_whose_has_more_is_not_a_boolean_stops_at_its_first_page(
    client: aiodots.Client, mocked: aioresponses.aioresponses, has_more: Any
) -> None:
    mocked.get(FLOWS, payload={"data": [flow_json(id="a")], "has_more": has_more}, repeat=True)
    with pytest.raises(aiodots.InvalidResponseError, match="has_more"):
        _ = [flow async for flow in client.flows.list()]
    assert sent_count(mocked) == 1


async def test_transactions_take_the_uuid_cursor_the_spec_types_them_as(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    # The document types the transactions list's cursors as UUIDs while a transaction's
    # `id` is an integer: a cursor of either reading is sent as given.
    mocked.get(TRANSACTIONS, payload=transactions(8, has_more=False))
    await client.transactions.list_page(starting_after=USER_ID)
    mocked.get(TRANSACTIONS, payload=transactions(8, has_more=False))
    ids = [t.id async for t in client.transactions.list(ending_before=USER_ID)]
    assert ids == [8]
    assert sent_queries(mocked) == [{"starting_after": USER_ID}, {"ending_before": USER_ID}]
