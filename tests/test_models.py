"""Request models refuse bad input before any I/O; response models accept what comes."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aioresponses
import attrs
import pytest

import aiodots
from aiodots.converter import converter, structure_page, structure_response, unstructure_request
from aiodots.resources._base import page_params
from aiodots.resources.apps import _LIST as _APPS_LIST

from .conftest import flow_json


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": []}, "must not be empty"),
        ({"steps": ["compliance", "bogus"]}, "unknown step 'bogus'"),
        ({"steps": "compliance"}, "must be a list"),
        ({"steps": ["redirect"]}, "redirect step needs a redirect_url"),
        ({"steps": [{"name": "redirect"}]}, "redirect step needs a redirect_url"),
        ({"steps": [{"name": "redirect", "redirect_url": "ftp://x.io"}]}, "http or https"),
        ({"steps": [{"name": "payout", "colour": "red"}]}, "unknown step option"),
        ({"steps": [{"redirect_url": "https://a.io"}]}, "needs a 'name'"),
        ({"steps": ["payout", "payout"]}, "appears more than once"),
        ({"steps": [7]}, "must be a string"),
        ({"steps": ["payout"], "user_id": "not-a-uuid"}, "user_id must be a UUID"),
        ({"steps": ["payout"], "metadata": {"at": datetime.now()}}, "not JSON-serialisable"),
        ({"steps": ["payout"], "metadata": {"x": math.nan}}, "not a finite number"),
        ({"steps": ["payout"], "metadata": {1: "a"}}, "keys must be strings"),
        ({"steps": ["payout"], "metadata": 5}, "mapping or a string"),
        ({"steps": ["payout"], "require_auth": "yes"}, "require_auth must be true or false"),
    ],
)
async def test_bad_input_raises_validation_error_and_sends_nothing(
    kwargs: dict[str, Any], message: str, mocked: aioresponses.aioresponses
) -> None:
    async with aiodots.Client("id", "key", base_url="https://api.dots.dev/api") as dots:
        with pytest.raises(aiodots.ValidationError, match=message):
            await dots.flows.create(**kwargs)
    assert mocked.requests == {}


async def test_bad_call_options_and_ids_fail_before_io(
    mocked: aioresponses.aioresponses,
) -> None:
    async with aiodots.Client("id", "key") as dots:
        with pytest.raises(aiodots.ValidationError):
            await dots.flows.retrieve("")
        with pytest.raises(aiodots.ValidationError):
            await dots.flows.create(steps=["payout"], timeout=-1)
        with pytest.raises(aiodots.ValidationError):
            await dots.flows.create(steps=["payout"], extra_headers={"X": "a\r\nEvil: 1"})
        with pytest.raises(aiodots.ValidationError):
            dots.flows.list(limit=101)
        with pytest.raises(aiodots.ValidationError):
            dots.flows.list(starting_after="a", ending_before="b")
    assert mocked.requests == {}


def test_user_id_accepts_a_uuid_object() -> None:
    user = uuid.uuid4()
    assert aiodots.CreateFlow(steps=["payout"], user_id=user).user_id == str(user)


def test_models_are_frozen_with_slots() -> None:
    flow = structure_response(flow_json(), aiodots.Flow, method="GET", path="/")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        flow.id = "other"  # type: ignore[misc]
    for cls in (aiodots.Flow, aiodots.CreateFlow, aiodots.FlowStep, aiodots.RedirectStep):
        assert "__slots__" in cls.__dict__


def test_create_flow_from_a_mapping_rejects_unknown_keys() -> None:
    with pytest.raises(aiodots.ValidationError, match="unknown CreateFlow field"):
        aiodots.CreateFlow.coerce({"steps": ["payout"], "user": "x"})
    with pytest.raises(aiodots.ValidationError, match="steps is required"):
        aiodots.CreateFlow.coerce({})
    with pytest.raises(aiodots.ValidationError, match=r"unknown CreateFlow field\(s\): 1, user"):
        aiodots.CreateFlow.coerce({"steps": ["payout"], 1: "x", "user": "y"})  # a row's key
    request = aiodots.CreateFlow.coerce({"steps": ["payout"], "require_auth": True})
    assert unstructure_request(request) == {"steps": ["payout"], "require_auth": True}


def test_redirect_step_is_a_flow_step_named_redirect() -> None:
    step = aiodots.RedirectStep(redirect_url="https://example.com/done")
    assert isinstance(step, aiodots.FlowStep)
    assert step.name is aiodots.Step.REDIRECT
    assert unstructure_request(step) == {
        "name": "redirect", "redirect_url": "https://example.com/done",
    }


def test_flow_created_is_an_aware_datetime() -> None:
    flow = structure_response(flow_json(), aiodots.Flow, method="GET", path="/")
    assert flow.created == datetime(2023, 11, 7, 5, 31, 56, tzinfo=UTC)
    offset = structure_response(
        flow_json(created="2023-11-07T07:31:56.120+02:00"), aiodots.Flow, method="GET", path="/"
    )
    assert offset.created.utcoffset() == timedelta(hours=2)
    naive = structure_response(
        flow_json(created="2023-11-07T05:31:56"), aiodots.Flow, method="GET", path="/"
    )
    assert naive.created.tzinfo is UTC


def test_unknown_steps_stay_strings_and_unknown_fields_are_ignored() -> None:
    flow = structure_response(
        flow_json(steps=["compliance", "tax-interview"], completed_steps=["compliance"],
                  brand_new_field={"x": 1}),
        aiodots.Flow, method="GET", path="/",
    )
    assert flow.steps == (aiodots.Step.COMPLIANCE, "tax-interview")
    assert flow.completed_steps == (aiodots.Step.COMPLIANCE,)


def test_flow_step_lists_sent_as_null_are_empty() -> None:
    # Every other model's optional fields take null; a server that writes an empty list
    # as null (Go's nil slice) must not fail a flow, or a list's whole page of them.
    payload = flow_json(steps=None, completed_steps=None)
    flow = structure_response(payload, aiodots.Flow, method="GET", path="/")
    assert (flow.steps, flow.completed_steps) == ((), ())
    page = structure_page(
        {"data": [flow_json(), payload]}, aiodots.Flow, method="GET", path="/"
    )
    assert page.data[1] == flow
    assert converter.structure(payload, aiodots.Flow) == flow


def test_flow_metadata_may_be_an_object_a_string_or_null() -> None:
    for metadata in ({"a": "b"}, "text", None):
        flow = structure_response(flow_json(metadata=metadata), aiodots.Flow, method="G", path="/")
        assert flow.metadata == metadata


def test_step_values_are_the_documented_names() -> None:
    assert [s.value for s in aiodots.Step] == [
        "compliance", "id-verification", "manage-payouts", "manage-payments",
        "payout", "background-check", "redirect", "pdf-form-fill",
    ]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"limit": 0}, "limit must be an integer from 1 to 100"),
        ({"limit": 101}, "limit must be an integer from 1 to 100"),
        ({"limit": True}, "limit must be an integer from 1 to 100"),
        ({"limit": 10.0}, "limit must be an integer from 1 to 100"),
        ({"limit": "10"}, "limit must be an integer from 1 to 100"),
        ({"starting_after": ""}, "starting_after must be an object id"),
        ({"ending_before": 7}, "ending_before must be an object id"),
        ({"starting_after": "a", "ending_before": "b"}, "not both"),
    ],
)
def test_page_arguments_are_refused_with_their_name(query: dict[str, object], message: str) -> None:
    with pytest.raises(aiodots.ValidationError, match=message):
        page_params(query)


def test_page_arguments_are_sent_as_text_and_unset_ones_left_out() -> None:
    query = {"limit": 10, "starting_after": None, "ending_before": "flow_1", "status": None}
    assert page_params(query) == {"limit": "10", "ending_before": "flow_1"}
    # An operation's own checks run first: a UUID cursor is sent as its text.
    cursor = uuid.uuid4()
    assert page_params({"starting_after": cursor}, _APPS_LIST) == {"starting_after": str(cursor)}
    with pytest.raises(aiodots.ValidationError):
        page_params({"starting_after": "not-a-uuid"}, _APPS_LIST)
