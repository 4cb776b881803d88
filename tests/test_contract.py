"""The contract: every operation of Dots' OpenAPI document, called through its method.

For each operation the test builds arguments from the spec's own schemas, calls the
method that `aiodots.OPERATIONS` names against the emulator (which checks the path,
query and body against the same spec and answers bodies that validate against its
response schemas), and checks that the method returns its model.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_asyncio

import aiodots
from aiodots._generate import METHODS, python_name
from aiodots.models import Page
from aiodots.resources._base import Operation, Pages
from aiodots.testing import DotsEmulator
from aiodots.testing.spec import ApiSpec, OperationSpec, load_spec

SPEC = load_spec()
SHARED_SPEC = Path(__file__).resolve().parents[2] / "shared" / "openapi" / "dots-v2.yaml"


def test_operations_cover_every_operation_of_the_spec() -> None:
    missing = sorted(set(SPEC.operations) - set(aiodots.OPERATIONS))
    extra = sorted(set(aiodots.OPERATIONS) - set(SPEC.operations))
    assert not missing, f"the spec has operations OPERATIONS lacks: {missing}"
    assert not extra, f"OPERATIONS names operations the spec lacks: {extra}"
    assert len(aiodots.OPERATIONS) == 82


def test_operations_name_real_methods() -> None:
    client = aiodots.Client("id", "key")
    for key, name in aiodots.OPERATIONS.items():
        target: Any = client
        for part in name.split("."):
            target = getattr(target, part, None)
            assert target is not None, f"{key}: client.{name} does not exist"
        assert callable(target), f"{key}: client.{name} is not a method"


@pytest.mark.skipif(not SHARED_SPEC.exists(), reason="no ../shared checkout beside the project")
def test_the_vendored_spec_is_dots_document_unchanged() -> None:
    vendored = Path(aiodots.__file__).parent / "testing" / "openapi" / "dots-v2.yaml"
    assert vendored.read_bytes() == SHARED_SPEC.read_bytes()


# -- calling every operation ----------------------------------------------------------------


def _without_other_groups(schema: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    """A `oneOf` of required groups (user_id or customer_id): keep the first group only."""
    for alternatives in (schema.get("oneOf", []), schema.get("then", {}).get("oneOf", [])):
        groups = [alt["required"] for alt in alternatives if set(alt) == {"required"}]
        for group in groups[1:]:
            for name in group:
                if name not in groups[0]:
                    value.pop(name, None)
    return value


def body_arguments(spec: ApiSpec, op: OperationSpec) -> dict[str, Any]:
    if op.body_schema is None:
        return {}
    schema = spec.resolve(op.body_schema)
    value = spec.instance(op.body_schema)
    if not isinstance(value, dict):
        return {}
    value = _without_other_groups(schema, value)
    if op.content_type == "multipart/form-data" or "file" in value:
        value["file"] = b"%PDF-1.4 a small invoice"
    return {python_name(name): item for name, item in value.items()}


class World:
    """Objects the stateful operations act on, made through the client itself."""

    def __init__(self, client: aiodots.Client) -> None:
        self.client = client
        self.ids: dict[str, str] = {}

    async def path_value(self, name: str) -> str:
        if name in self.ids:
            return self.ids[name]
        if name == "user_id":
            user = await self.client.users.create(
                first_name="Ada", last_name="Lovelace", email="ada@example.com",
                country_code="1", phone_number="4155550100",
            )
            assert user.id is not None
            self.ids[name] = user.id
        elif name == "transfer_id":
            user_id = await self.path_value("user_id")
            transfer = await self.client.transfers.create(amount=-500, user_id=user_id)
            assert transfer.id is not None
            self.ids[name] = transfer.id
        elif name == "payout_link_id":
            link = await self.client.payout_links.create(amount=1000)
            assert link.id is not None
            self.ids[name] = link.id
        elif name == "flow_id":
            self.ids[name] = (await self.client.flows.create(steps=["compliance"])).id
        else:
            self.ids[name] = str(uuid.uuid4())
        return self.ids[name]


@pytest_asyncio.fixture
async def contract() -> AsyncIterator[tuple[DotsEmulator, aiodots.Client]]:
    async with DotsEmulator() as emulator, aiodots.Client(
        **emulator.credentials, base_url=emulator.base_url, max_retries=0
    ) as client:
        emulator.api.check_responses = True  # every answer validates against the spec
        yield emulator, client


def _query_arguments(op: OperationSpec, world: World) -> dict[str, Any]:
    values: dict[str, Any] = {"limit": 5}
    for name, schema in op.query.items():
        if name in ("limit", "starting_after", "ending_before"):
            continue
        if name == "user_id":
            continue  # filled below, with a user that exists
        values[name] = SPEC.instance(schema, name)
    return {k: v for k, v in values.items() if k in op.query}


@pytest.mark.parametrize("key", sorted(METHODS), ids=lambda key: key)
async def test_every_operation_through_its_method(
    key: str, contract: tuple[DotsEmulator, aiodots.Client]
) -> None:
    emulator, client = contract
    op = SPEC.operations[key]
    world = World(client)
    path_args = [await world.path_value(name) for name in op.path_params]
    kwargs = {**_query_arguments(op, world), **body_arguments(SPEC, op)}
    if "user_id" in op.query or "user_id" in kwargs:
        kwargs["user_id"] = await world.path_value("user_id")
    if key == "POST /v2/flows":
        kwargs = {"steps": ["compliance"]}
    target: Any = client
    for part in METHODS[key].split("."):
        target = getattr(target, part)
    seen_before = emulator.stats.by_route[f"{op.method} {op.route}"]

    result = target(*path_args, **kwargs)
    if isinstance(result, Pages | aiodots.resources.FlowPages):
        result = [item async for item in result]
        items: list[Any] = result
    else:
        result = await result
        items = []

    assert emulator.stats.by_route[f"{op.method} {op.route}"] == seen_before + 1, (
        "the method did not send its operation"
    )
    assert emulator.stats.by_status[400] == 0, (
        f"the emulator refused the request: {emulator.stats.last_request.body!r}"
    )
    answered = emulator.stats.last_request
    assert answered.method == op.method
    if op.response_schema is None:
        assert result is None
    elif items or isinstance(result, list):
        assert all(attrs.has(type(item)) for item in items)
    else:
        assert attrs.has(type(result)) or isinstance(result, tuple | Page), (
            f"{METHODS[key]} returned {type(result).__name__}, not a model"
        )


def test_every_response_example_validates_against_its_schema() -> None:
    for op in SPEC.operations.values():
        SPEC.check_response(op, SPEC.example(op))


def test_operation_objects_know_their_replay_rule() -> None:
    op = Operation("POST", "/v2/payouts")
    assert op.replay is aiodots.Replay.IDEMPOTENT


async def test_payout_link_steps_take_the_options_the_spec_gives_them(
    contract: tuple[DotsEmulator, aiodots.Client],
) -> None:
    # A payout link's `additional_steps` items take options a flow's steps do not
    # (`force`, `payment_intent_id`, ...): each goes out as given, and the emulator
    # checks the body against the document.
    emulator, client = contract
    step = {
        "name": "payout",
        "auto_payout_enabled": False,
        "payment_intent_id": "pi_123",
        "force": True,
        "require_default_payout_method": True,
        "require_auto_payout_method": False,
        "hide_continue_button": True,
        "payout_fee_party": "platform",
    }
    await client.payout_links.create(amount=1000, additional_steps=["compliance", step])
    assert emulator.stats.by_status[400] == 0
    assert emulator.stats.last_request.json()["additional_steps"] == ["compliance", step]
    # No minimum: an empty list is a value of the field, sent as it is.
    await client.payout_links.create(amount=1000, additional_steps=[])
    assert emulator.stats.last_request.json()["additional_steps"] == []
    with pytest.raises(aiodots.ValidationError, match="unknown step option"):
        await client.payout_links.create(amount=1000, additional_steps=[{"name": "payout", "x": 1}])


def test_the_generator_knows_each_step_model_s_options() -> None:
    from aiodots._generate import STEP_MODELS

    for name, (options, _, _) in STEP_MODELS.items():
        model = getattr(aiodots, name)
        assert options == {a.name for a in attrs.fields(model)}, name
