"""The exact bytes and headers each call sends (aioresponses: one exchange at a time)."""

from __future__ import annotations

import base64
import json
from types import MappingProxyType
from typing import Any

import aioresponses
import pytest
from yarl import URL

import aiodots

from .conftest import API_KEY, BASE_URL, CLIENT_ID, flow_json

FLOWS = f"{BASE_URL}/v2/flows"


def sent(mocked: aioresponses.aioresponses, method: str, url: str) -> list[Any]:
    return mocked.requests[(method, URL(url))]


async def test_create_sends_only_the_fields_given_as_compact_json(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.post(FLOWS, payload=flow_json())
    await client.flows.create(steps=["compliance", "id-verification"])
    (call,) = sent(mocked, "POST", FLOWS)
    assert call.kwargs["data"] == b'{"steps":["compliance","id-verification"]}'


async def test_create_sends_every_documented_field_and_step_options(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.post(FLOWS, payload=flow_json())
    await client.flows.create(
        steps=[
            "compliance",
            aiodots.RedirectStep(redirect_url="https://example.com/done"),
            aiodots.FlowStep("payout", auto_payout_enabled=False),
            {"name": "pdf-form-fill", "template_id": "tpl_1", "hide_continue_button": True},
        ],
        user_id="3c90c3cc-0d44-4b50-8888-8dd25736052a",
        metadata={"campaign": "spring", "cohort": 3},
        require_auth=True,
        hide_go_to_dashboard_on_complete=False,
    )
    (call,) = sent(mocked, "POST", FLOWS)
    assert json.loads(call.kwargs["data"]) == {
        "steps": [
            "compliance",
            {"name": "redirect", "redirect_url": "https://example.com/done"},
            {"name": "payout", "auto_payout_enabled": False},
            {"name": "pdf-form-fill", "template_id": "tpl_1", "hide_continue_button": True},
        ],
        "user_id": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
        "metadata": {"campaign": "spring", "cohort": 3},
        "require_auth": True,
        "hide_go_to_dashboard_on_complete": False,
    }


async def test_metadata_given_as_a_string_is_sent_as_that_string(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.post(FLOWS, payload=flow_json(metadata="order-42"))
    flow = await client.flows.create(steps=["payout"], metadata="order-42")
    (call,) = sent(mocked, "POST", FLOWS)
    assert call.kwargs["data"] == b'{"steps":["payout"],"metadata":"order-42"}'
    assert flow.metadata == "order-42"


async def test_metadata_in_any_mapping_is_sent_as_a_json_object(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    """The models accept any mapping as a JSON object, and the encoder writes only dicts:
    a read-only view (say) is written as the object it shows, nested ones too."""
    mocked.post(FLOWS, payload=flow_json())
    metadata = MappingProxyType({"team": "a", "more": MappingProxyType({"n": 1})})
    await client.flows.create(steps=["payout"], metadata=metadata)
    (call,) = sent(mocked, "POST", FLOWS)
    assert call.kwargs["data"] == b'{"steps":["payout"],"metadata":{"team":"a","more":{"n":1}}}'


async def test_a_body_the_encoder_cannot_write_is_a_validation_error_and_not_sent(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    with pytest.raises(aiodots.ValidationError, match="cannot be written as JSON"):
        await client.flows.create(steps=["payout"], metadata={"n": 2**64})
    assert mocked.requests == {}


async def test_every_request_carries_basic_auth_json_and_the_user_agent(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.post(FLOWS, payload=flow_json())
    await client.flows.create(steps=["compliance"])
    headers = sent(mocked, "POST", FLOWS)[0].kwargs["headers"]
    token = base64.b64encode(f"{CLIENT_ID}:{API_KEY}".encode()).decode()
    assert headers["Authorization"] == f"Basic {token}"
    assert headers["Content-Type"] == "application/json"
    assert headers["Accept"] == "application/json"
    assert headers["User-Agent"] == f"aiodots/{aiodots.__version__}"


async def test_get_requests_carry_no_content_type(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    flow_id = flow_json()["id"]
    mocked.get(f"{FLOWS}/{flow_id}", payload=flow_json())
    await client.flows.retrieve(flow_id)
    call = sent(mocked, "GET", f"{FLOWS}/{flow_id}")[0]
    # Neither headers of its own nor a body: a GET leaves both to the session's defaults.
    assert "Content-Type" not in (call.kwargs.get("headers") or {})
    assert call.kwargs.get("data") is None


async def test_per_call_headers_name_the_app_and_the_user_ip(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.post(FLOWS, payload=flow_json())
    await client.flows.create(
        steps=["compliance"], api_app_id="app_9", user_ip="203.0.113.7",
        extra_headers={"X-Trace": "t-1"},
    )
    headers = sent(mocked, "POST", FLOWS)[0].kwargs["headers"]
    assert headers["Api-App-Id"] == "app_9"
    assert headers["Dots-User-IP"] == "203.0.113.7"
    assert headers["X-Trace"] == "t-1"
    assert headers["Authorization"].startswith("Basic ")


async def test_retrieve_escapes_the_flow_id_into_one_path_segment(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    url = f"{FLOWS}/a%2Fb%3Fc"
    mocked.get(URL(url, encoded=True), payload=flow_json())
    await client.flows.retrieve("a/b?c")
    assert mocked.requests[("GET", URL(url, encoded=True))]


async def test_list_follows_has_more_with_starting_after_lazily(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    first = [flow_json(id="f1"), flow_json(id="f2")]
    second = [flow_json(id="f3")]
    mocked.get(f"{FLOWS}?limit=2", payload={"data": first, "has_more": True})
    mocked.get(f"{FLOWS}?limit=2&starting_after=f2", payload={"data": second, "has_more": False})
    flows = client.flows.list(limit=2)
    assert mocked.requests == {}  # nothing fetched until iterated
    assert [f.id async for f in flows] == ["f1", "f2", "f3"]
    assert len(mocked.requests) == 2


async def test_list_backwards_from_ending_before_uses_the_first_id_of_each_page(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.get(
        f"{FLOWS}?ending_before=f9&limit=2",
        payload={"data": [flow_json(id="f7"), flow_json(id="f8")], "has_more": True},
    )
    mocked.get(
        f"{FLOWS}?ending_before=f7&limit=2",
        payload={"data": [flow_json(id="f6")], "has_more": False},
    )
    pages = [p async for p in client.flows.list(limit=2, ending_before="f9").pages()]
    assert [[f.id for f in p.data] for p in pages] == [["f7", "f8"], ["f6"]]


async def test_list_accepts_a_bare_json_array(
    client: aiodots.Client, mocked: aioresponses.aioresponses
) -> None:
    mocked.get(FLOWS, payload=[flow_json(id="f1")])
    page = await client.flows.list_page()
    assert [f.id for f in page.data] == ["f1"]
    assert page.has_more is False


@pytest.mark.parametrize(
    ("environment", "base"),
    [("production", "https://api.dots.dev/api"), ("sandbox", "https://pls.senddotssandbox.com/api")],
)
async def test_environments_keep_the_api_base_path(
    environment: str, base: str, mocked: aioresponses.aioresponses
) -> None:
    mocked.post(f"{base}/v2/flows", payload=flow_json())
    async with aiodots.Client(CLIENT_ID, API_KEY, environment=environment) as dots:
        await dots.flows.create(steps=["compliance"])
    assert mocked.requests[("POST", URL(f"{base}/v2/flows"))]


async def test_a_custom_base_url_with_a_path_keeps_its_path(
    mocked: aioresponses.aioresponses,
) -> None:
    mocked.post("https://proxy.example/dots/api/v2/flows", payload=flow_json())
    async with aiodots.Client(
        CLIENT_ID, API_KEY, base_url="https://proxy.example/dots/api/"
    ) as dots:
        await dots.flows.create(steps=["compliance"])
    assert mocked.requests[("POST", URL("https://proxy.example/dots/api/v2/flows"))]
