"""The resources beyond flows, as a user meets them: exact bytes sent, bad input refused
before sending, responses decoded tolerantly into models, lists paged lazily."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import attrs
import pytest
import pytest_asyncio

import aiodots
from aiodots._generate import generate, load_spec, same_code
from aiodots.converter import converter
from aiodots.resources._base import Operation
from aiodots.testing import DotsEmulator
from aiodots.testing.spec import load_spec as load_api_spec


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[DotsEmulator]:
    async with DotsEmulator() as emu:
        yield emu


@pytest_asyncio.fixture
async def client(emulator: DotsEmulator) -> AsyncIterator[aiodots.Client]:
    async with aiodots.Client(
        **emulator.credentials, base_url=emulator.base_url, max_retries=0
    ) as dots:
        yield dots


USER: dict[str, Any] = {
    "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com",
    "country_code": "44", "phone_number": "2071234567",
}


def test_the_generated_modules_are_what_the_spec_gives() -> None:
    stale = [str(p) for p, text in generate(load_spec()).items() if not same_code(p, text)]
    assert not stale, f"run `python -m aiodots._generate`: out of date: {stale}"


async def test_users_create_sends_the_documented_body(
    client: aiodots.Client, emulator: DotsEmulator
) -> None:
    user = await client.users.create(
        **USER, date_of_birth=date(1815, 12, 10), metadata={"crm": "c-1"},
        form_1099_adjustment={"year": 2026, "form": "1099-NEC", "amount": 500},
    )
    sent = emulator.stats.last_request
    assert sent.method == "POST"
    assert sent.path == "/api/v2/users"
    assert json.loads(sent.body) == {
        **USER, "date_of_birth": "1815-12-10", "metadata": {"crm": "c-1"},
        "1099_adjustment": {"year": 2026, "form": "1099-NEC", "amount": 500},
    }
    assert isinstance(user, aiodots.User)
    assert user.email == "ada@example.com"
    assert user.phone_number == aiodots.UserPhoneNumber(
        country_code="44", phone_number="2071234567"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"first_name": ""}, "first_name"),
        ({"country_code": "+44"}, "country_code"),
        ({"date_of_birth": "10/12/1815"}, "date"),
        ({"payout_options_exclude_list": ["paypal", "carrier-pigeon"]}, "one of"),
        ({"payout_options_exclude_list": ["paypal", "paypal"]}, "repeat"),
        ({"metadata": {"when": object()}}, "metadata"),
    ],
)
async def test_bad_user_input_is_refused_before_anything_is_sent(
    client: aiodots.Client, emulator: DotsEmulator, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(aiodots.ValidationError, match=message):
        await client.users.create(**{**USER, **change})
    assert emulator.stats.requests == 0


async def test_a_misspelt_keyword_is_a_type_error_naming_it(client: aiodots.Client) -> None:
    with pytest.raises(TypeError, match="frist_name"):
        await client.users.create(frist_name="Ada", **USER)  # type: ignore[call-arg]


async def test_nested_objects_take_a_model_or_a_mapping(
    client: aiodots.Client, emulator: DotsEmulator
) -> None:
    user = await client.users.create(**USER)
    assert user.id is not None
    address: dict[str, Any] = {
        "line_1": "12 St James's Square", "city": "London", "state": "London",
        "postcode": "SW1Y 4LB", "country": "GB",
    }
    await client.users.add_address(user.id, **address)
    assert json.loads(emulator.stats.last_request.body) == address
    with pytest.raises(aiodots.ValidationError, match="unknown"):
        aiodots.CreatePayoutLink(amount=100, payee={"email": "a@b.co", "bogus": 1})


async def test_one_of_two_identities_is_required_where_the_spec_says_so(
    client: aiodots.Client, emulator: DotsEmulator
) -> None:
    with pytest.raises(aiodots.ValidationError, match="exactly one of"):
        await client.payment_customers.create(first_name="A", last_name="B", business_name="C")
    with pytest.raises(aiodots.ValidationError, match="exactly one of"):
        await client.payment_customers.create(email="x@example.com")
    assert emulator.stats.requests == 0


async def test_users_list_pages_lazily_and_filters_by_status(
    client: aiodots.Client, emulator: DotsEmulator
) -> None:
    for n in range(5):
        await client.users.create(**{**USER, "email": f"u{n}@example.com"})
    emails = [u.email async for u in client.users.list(limit=2)]
    assert emails == [f"u{n}@example.com" for n in reversed(range(5))]
    assert emulator.stats.by_route["GET /api/v2/users"] == 3
    assert [u async for u in client.users.list(status="verified")] == []
    with pytest.raises(aiodots.ValidationError, match="status"):
        client.users.list(status="sleeping")  # type: ignore[arg-type]


async def test_path_parameters_are_quoted_and_checked(
    client: aiodots.Client, emulator: DotsEmulator
) -> None:
    with pytest.raises(aiodots.ValidationError, match="user_id"):
        await client.users.retrieve("")
    with pytest.raises(aiodots.NotFoundError):
        await client.users.retrieve(uuid.uuid4())
    with pytest.raises(aiodots.APIError):
        await client.users.retrieve("../flows")
    # One segment, quoted: it reached the user route, not /v2/flows.
    assert emulator.stats.by_route["GET /api/v2/users/{user_id}"] == 2
    assert emulator.stats.by_route["GET /api/v2/flows"] == 0


async def test_an_answer_without_a_body_schema_returns_none(
    client: aiodots.Client, emulator: DotsEmulator
) -> None:
    user = await client.users.create(**USER)
    assert user.id is not None
    await client.users.send_verification_token(user.id, use_voice=False)
    assert emulator.stats.by_status[202] == 1


def test_responses_keep_unknown_enum_values_and_ignore_unknown_fields() -> None:
    transfer = converter.structure(
        {"id": "t", "status": "teleported", "amount": 100, "brand_new": {"x": 1}},
        aiodots.Transfer,
    )
    assert transfer.status == "teleported"
    assert transfer.amount == 100


@pytest.mark.parametrize(
    ("field", "value"),
    [("amount", "100"), ("amount", 1.5), ("id", 17), ("created", "yesterday")],
)
def test_a_response_of_the_wrong_type_is_an_invalid_response(field: str, value: Any) -> None:
    op = Operation("GET", "/v2/transfers/{transfer_id}", returns=aiodots.Transfer)
    with pytest.raises(aiodots.InvalidResponseError, match=field):
        op.decode({"id": "t", field: value}, 200, "/v2/transfers/t")


def test_money_is_integer_cents_in_every_model() -> None:
    floats = []
    for name in aiodots.models.__all__:
        cls = getattr(aiodots.models, name)
        if attrs.has(cls):
            for field in attrs.fields(cls):
                if "amount" in field.name and "float" in str(field.type):
                    floats.append(f"{name}.{field.name}")
    assert not floats


def test_every_clash_between_a_spec_argument_and_a_call_option_is_decided() -> None:
    import inspect

    client = aiodots.Client("id", "key")
    options = {"timeout", "max_retries", "deadline", "extra_headers", "api_app_id", "user_ip"}
    clashes = set()
    for name in aiodots.OPERATIONS.values():
        method: Any = client
        for part in name.split("."):
            method = getattr(method, part)
        params = set(inspect.signature(method).parameters) - {"overrides"}
        clashes |= {f"{name}({p})" for p in params & options}
    assert clashes == {
        "organization_transfers.create(api_app_id)",
        "organizations.copy_compliance_to_app(api_app_id)",
    }


_SPEC = load_api_spec()
_DECODED = [
    (key, op) for key, op in sorted(_SPEC.operations.items())
    if op.response_schema is not None and not key.endswith(("/v2/flows", "{flow_id}"))
]


def _operation_of(key: str) -> Operation:
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("aiodots.resources."):
            for value in vars(module).values():
                if isinstance(value, Operation) and value.key == key:
                    return value
    raise LookupError(key)


def _variants(value: Any, schema: Any) -> list[Any]:
    """Shapes of one answer the spec allows, and what a newer API may add: every field
    filled, only the required ones, nullable ones null, unknown fields and enum values."""
    schema = _SPEC.resolve(schema)
    if not isinstance(value, dict) or not isinstance(schema, dict):
        return [value]
    parts = [schema] + [_SPEC.resolve(part) for part in schema.get("allOf", [])]
    properties = {k: v for part in parts for k, v in (part.get("properties") or {}).items()}
    required = {name for part in parts for name in part.get("required", [])}
    minimal = {k: v for k, v in value.items() if k in required}
    nulls = {
        k: (None if "null" in str(_SPEC.resolve(properties.get(k, {})).get("type")) else v)
        for k, v in value.items()
    }
    newer = {**value, "field_from_the_future": {"x": [1, 2]}}
    for name, sub in properties.items():
        if _SPEC.resolve(sub).get("enum") and name in newer:
            newer[name] = "value-from-the-future"
    nested = {
        k: _variants(v, properties[k])[-1] if isinstance(v, dict) and k in properties else v
        for k, v in newer.items()
    }
    return [value, minimal, nulls, newer, nested]


@pytest.mark.parametrize(("key", "op"), _DECODED, ids=[k for k, _ in _DECODED])
def test_every_response_the_spec_allows_decodes_into_its_model(key: str, op: Any) -> None:
    operation = _operation_of(key)
    body = _SPEC.example(op)
    if isinstance(body, dict) and isinstance(body.get("data"), list):
        item_schema = _SPEC.resolve(op.response_schema)["properties"]["data"]["items"]
        shapes: list[Any] = [{**body, "data": _variants(body["data"][0], item_schema)}]
    elif isinstance(body, list):
        shapes = [_variants(body[0], _SPEC.resolve(op.response_schema)["items"])]
    else:
        shapes = _variants(body, op.response_schema)
    for shape in shapes:
        operation.decode(shape, op.status, op.path)


async def test_users_create_many_creates_each_user_once_and_reports_bad_rows(
    client: aiodots.Client, emulator: DotsEmulator
) -> None:
    rows: list[Any] = [{**USER, "email": f"bulk{n}@example.com"} for n in range(20)]
    rows[7] = {**USER, "email": "broken"}
    rows[11] = aiodots.CreateUser(**{**USER, "email": "model@example.com"})
    items = [item async for item in client.users.create_many(rows, concurrency=5, ordered=True)]
    assert [item.index for item in items] == list(range(20))
    assert [item.ok for item in items].count(False) == 1
    assert isinstance(items[7].error, aiodots.ValidationError)
    assert items[11].result is not None
    assert items[11].result.email == "model@example.com"
    assert emulator.stats.created_by_resource["users"] == 19
