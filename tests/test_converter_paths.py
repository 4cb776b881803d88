"""The fast structuring path and the detailed one agree on every model.

Every response is structured first by a converter without cattrs' detailed validation;
only a payload it refuses goes to the detailed converter, which names every bad field.
These tests hold the two to the same answers: for every attrs model of
`aiodots.models.__all__`, on good payloads (from the spec's own response examples and
made from each model's field types) and on bad ones (each field missing, or of each
wrong type), both paths give the same object or both fail, with the same
`InvalidResponseError` message.
"""

from __future__ import annotations

import enum
import pickle
import sys
import types
import typing
import weakref
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from functools import partial
from typing import Any

import attrs
import pytest

import aiodots
import aiodots.models
import aiodots.resources
from aiodots import _json, model_builder
from aiodots.converter import (
    _fast_hook,
    _fast_items,
    _structure_explained,
    converter,
    structure_page,
    structure_response,
)
from aiodots.resources._base import Operation
from aiodots.testing.spec import load_spec

MODELS = [
    getattr(aiodots.models, name) for name in aiodots.models.__all__
    if attrs.has(getattr(aiodots.models, name))
]
WRONG_VALUES: list[Any] = [None, 12345, 1.5, "text", True, [], {}, ["x"], {"id": 1}, "2024-13-45"]


def _structure_fast(data: Any, cls: Any) -> Any:
    """The fast path alone, as `structure_response` takes it first."""
    return _fast_hook(cls)(data, cls)


def _outcome(call: typing.Callable[[], Any]) -> tuple[Any, ...]:
    try:
        return ("ok", call())
    except Exception as exc:
        return ("error", type(exc).__name__, str(exc))


def _example(tp: Any, depth: int = 0) -> Any:
    """A JSON value of type `tp`, as the API would send it."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _example(next(a for a in typing.get_args(tp) if a is not type(None)), depth)
    if origin is typing.Literal:
        return typing.get_args(tp)[0]
    if origin is tuple:
        return [_example(typing.get_args(tp)[0], depth)]
    if tp is Any or origin in (Mapping, dict):
        return {"key": "value"}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return next(iter(tp)).value
    if attrs.has(tp):
        return _payload(tp, depth + 1) if depth < 3 else {}
    return {
        str: "text", int: 7, float: 1.5, bool: True,
        datetime: "2024-01-02T03:04:05.678Z", date: "2024-01-02",
    }.get(tp, "text")


def _payload(cls: type[Any], depth: int = 0) -> dict[str, Any]:
    attrs.resolve_types(cls)
    return {
        field.metadata.get("wire", field.name): _example(field.type, depth)
        for field in attrs.fields(cls)
        if field.init
    }


def _operations() -> Iterator[Operation]:
    # dots.flows is written by hand, without `Operation`s: its answers are these.
    yield Operation("POST", "/v2/flows", returns=aiodots.Flow)
    yield Operation("GET", "/v2/flows/{flow_id}", returns=aiodots.Flow)
    yield Operation("GET", "/v2/flows", page_of=aiodots.Flow)
    for module_name, module in list(sys.modules.items()):
        # `import aiodots.resources` above imported every resource module.
        if module_name.startswith(aiodots.resources.__name__ + "."):
            for value in vars(module).values():
                if isinstance(value, Operation):
                    yield value


def _spec_payloads() -> dict[type[Any], list[dict[str, Any]]]:
    """Each model's payloads from the spec's example answers, nested models included."""
    spec = load_spec()
    found: dict[type[Any], list[dict[str, Any]]] = {}

    def add(cls: type[Any], value: Any) -> None:
        if not isinstance(value, dict) or not attrs.has(cls):
            return
        found.setdefault(cls, []).append(value)
        attrs.resolve_types(cls)
        for field in attrs.fields(cls):
            inner = field.metadata.get("wire", field.name)
            for arg in typing.get_args(field.type) or (field.type,):
                items = typing.get_args(arg) if typing.get_origin(arg) is tuple else (arg,)
                for item_type in items:
                    sub = value.get(inner)
                    for element in sub if isinstance(sub, list) else [sub]:
                        add(item_type, element)

    for op in _operations():
        spec_op = spec.operations.get(op.key)
        if spec_op is None or spec_op.response_schema is None:
            continue
        body = spec.example(spec_op)
        if op.returns is not None:
            add(op.returns, body)
        for cls in (op.page_of, op.list_of):
            if cls is not None:
                items = body if isinstance(body, list) else (body or {}).get("data", [])
                for item in items:
                    add(cls, item)
    return found


SPEC_PAYLOADS = _spec_payloads()


def _bad_payloads(good: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key in good:
        yield {k: v for k, v in good.items() if k != key}
        for wrong in WRONG_VALUES:
            yield {**good, key: wrong}


def _assert_paths_agree(cls: type[Any], payload: dict[str, Any]) -> tuple[Any, ...]:
    detailed = _outcome(lambda: converter.structure(payload, cls))
    fast = _outcome(lambda: _structure_fast(payload, cls))
    # A list answer's items in one loop, this payload between two of the spec's own.
    good = SPEC_PAYLOADS.get(cls, [payload])[0]
    items = _outcome(lambda: _fast_items(cls)([good, payload, good]))
    if detailed[0] == "ok":
        assert fast == detailed, f"{cls.__name__}: the fast path differs on {payload!r}"
        around = converter.structure(good, cls)
        assert items == ("ok", (around, detailed[1], around)), f"{cls.__name__}: {payload!r}"
    else:
        assert fast[0] == "error", f"{cls.__name__}: only the fast path accepts {payload!r}"
        assert items[0] == "error", f"{cls.__name__}: only the items path takes {payload!r}"
    answered = _outcome(lambda: structure_response(payload, cls, method="GET", path="/x"))
    explained = _outcome(
        lambda: _structure_explained(payload, cls, method="GET", path="/x", status=200)
    )
    assert answered == explained, f"{cls.__name__}: the answers differ on {payload!r}"
    return answered


def test_the_spec_examples_reach_most_models() -> None:
    # A guard for the test below: the spec's examples must reach the response models.
    assert len(SPEC_PAYLOADS) >= 50
    assert aiodots.models.Flow in SPEC_PAYLOADS
    assert aiodots.models.Transfer in SPEC_PAYLOADS


@pytest.mark.parametrize("cls", list(SPEC_PAYLOADS), ids=lambda c: c.__name__)
def test_spec_examples_take_the_fast_path_and_agree(cls: type[Any]) -> None:
    for payload in SPEC_PAYLOADS[cls]:
        # An answer the API documents never needs the detailed converter.
        fast = _structure_fast(payload, cls)
        assert isinstance(fast, cls)
        assert _assert_paths_agree(cls, payload) == ("ok", fast)
        for bad in _bad_payloads(payload):
            _assert_paths_agree(cls, bad)


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_both_paths_agree_on_every_model(cls: type[Any]) -> None:
    good = _payload(cls)
    _assert_paths_agree(cls, good)
    for bad in _bad_payloads(good):
        _assert_paths_agree(cls, bad)


def test_a_bad_answer_names_the_field_on_either_path() -> None:
    payload = {"id": 5, "created": "yesterday", "link": "https://x.io/f"}
    with pytest.raises(aiodots.InvalidResponseError) as caught:
        structure_response(payload, aiodots.Flow, method="GET", path="/v2/flows/f")
    message = str(caught.value)
    assert "expected str @ $.id" in message
    assert "$.created" in message


def test_a_page_takes_the_fast_path_whole_and_explains_a_bad_item() -> None:
    flows = SPEC_PAYLOADS[aiodots.Flow]
    good = [flows[0], {**flows[0], "id": "second"}]
    page = structure_page({"data": good, "has_more": True}, aiodots.Flow, method="GET", path="/")
    assert page.data == tuple(
        structure_response(item, aiodots.Flow, method="GET", path="/") for item in good
    )
    assert page.has_more
    bad_items: list[Any] = [{**flows[0], "created": 5}, "not an object", [flows[0]]]
    for bad in bad_items:
        expected = _outcome(partial(structure_response, bad, aiodots.Flow, method="GET", path="/"))
        assert expected[0] == "error"
        answered = _outcome(
            partial(structure_page, {"data": [*good, bad]}, aiodots.Flow, method="GET", path="/")
        )
        assert answered == expected


def _answer_models() -> set[type[Any]]:
    """Every model an operation's answer is made of, nested ones included."""
    found: set[type[Any]] = set()

    def add(tp: Any) -> None:
        for arg in typing.get_args(tp) or (tp,):
            if typing.get_args(arg):
                add(arg)
            elif attrs.has(arg) and arg not in found:
                found.add(arg)
                attrs.resolve_types(arg)
                for field in attrs.fields(arg):
                    add(field.type)

    for op in _operations():
        for cls in (op.returns, op.page_of, op.list_of):
            if cls is not None:
                add(cls)
    return found


def test_every_answer_model_is_built_from_its_fields() -> None:
    # Models with validators (requests) go through their __init__; every model an answer
    # is made of, through the generated builder. One that silently fell back to cattrs'
    # function would lose the fast path.
    answers = _answer_models()
    assert len(answers) >= 60
    for cls in answers:
        assert model_builder.can_build(cls), cls
        filename = _fast_hook(cls).__code__.co_filename
        assert filename.startswith("<aiodots generated structure"), cls


def test_a_built_model_is_the_model_itself() -> None:
    # (metadata left out: a dict in a field makes any model unhashable)
    payload = {**SPEC_PAYLOADS[aiodots.Flow][0], "metadata": None}
    built = _structure_fast(payload, aiodots.Flow)
    by_init = aiodots.Flow(**{
        field.name: getattr(built, field.name) for field in attrs.fields(aiodots.Flow)
    })
    assert type(built) is aiodots.Flow
    assert built == by_init
    assert hash(built) == hash(by_init)
    assert repr(built) == repr(by_init)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        built.id = "other"  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        del built.link
    assert weakref.ref(built)() is built
    assert pickle.loads(pickle.dumps(built)) == built
    assert attrs.evolve(built, id="other").id == "other"


def test_step_lists_read_once_are_not_changed_by_their_source() -> None:
    names = ["compliance", "a-step-this-version-does-not-know"]
    first = _structure_fast({**SPEC_PAYLOADS[aiodots.Flow][0], "steps": names}, aiodots.Flow)
    names.append("payout")
    again = _structure_fast({**SPEC_PAYLOADS[aiodots.Flow][0], "steps": names}, aiodots.Flow)
    assert first.steps == (aiodots.Step.COMPLIANCE, "a-step-this-version-does-not-know")
    assert again.steps == (*first.steps, aiodots.Step.PAYOUT)
    for bad in ([{"name": "compliance"}], ["compliance", 5]):
        with pytest.raises(aiodots.InvalidResponseError, match="steps"):
            structure_response(
                {**SPEC_PAYLOADS[aiodots.Flow][0], "steps": bad}, aiodots.Flow,
                method="GET", path="/",
            )


def test_each_step_field_reads_a_page_of_varied_lists_as_the_hook_does() -> None:
    # The inline code keeps the last list each field read: flows whose lists alternate,
    # repeat, empty out or share a value across the two fields must each get their own.
    lists = [
        ["compliance"], ["compliance"], [], ["compliance", "payout"], ["compliance"],
        ["payout"], ["a-new-step"], ["a-new-step"], [], ["compliance", "payout"],
    ]
    items = [
        {**SPEC_PAYLOADS[aiodots.Flow][0], "steps": steps, "completed_steps": lists[-1 - i]}
        for i, steps in enumerate(lists)
    ]
    page = structure_page({"data": items}, aiodots.Flow, method="GET", path="/")
    for flow, item in zip(page.data, items, strict=True):
        assert flow.steps == converter.structure(item, aiodots.Flow).steps
        assert flow.completed_steps == converter.structure(item, aiodots.Flow).completed_steps
    assert [flow.steps for flow in page.data][:3] == [(aiodots.Step.COMPLIANCE,)] * 2 + [()]
    assert page.data[6].steps == ("a-new-step",)


@attrs.frozen(cache_hash=True)
class _CachedHash:
    x: int


@attrs.frozen
class _PostInit:
    x: int

    def __attrs_post_init__(self) -> None:
        pass


@attrs.frozen(slots=False)
class _NoSlots:
    x: int


@attrs.frozen
class _Plain:
    x: int
    y: str | None = None


def test_only_a_model_whose_init_just_stores_is_built_without_it() -> None:
    assert model_builder.can_build(_Plain)
    for cls in (_CachedHash, _PostInit, _NoSlots, aiodots.CreateFlow):
        assert not model_builder.can_build(cls), cls
        with pytest.raises(TypeError, match="needs its __init__"):
            model_builder.make_constructor(cls)


def test_a_constructed_page_is_a_page() -> None:
    new_page = model_builder.make_constructor(aiodots.models.Page)
    page = new_page((1, 2), True)
    assert type(page) is aiodots.models.Page
    assert page == aiodots.models.Page(data=(1, 2), has_more=True)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        page.has_more = False  # type: ignore[misc]


def _wrong_kinds(tp: Any) -> list[Any]:
    """JSON values of the wrong kind for a field of type `tp` that holds a nested model
    or an array: what a broken server might send there. Empty for any other field."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        # `X | None`: None is right for it; the wrong kinds are X's.
        inner = [arg for arg in args if arg is not type(None)]
        return _wrong_kinds(inner[0]) if len(inner) == 1 else []
    if attrs.has(tp):
        # A string or an array is no object, whatever keys `in` finds in it.
        return ["text", "id", [], ["id"], [{"id": "x"}], 12345, 1.5, True]
    if typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis:
        # A string is no array of strings, nor an object an array of its keys.
        wrong: list[Any] = ["text", "", {}, {"id": "x"}, 12345, 1.5, True]
        if attrs.has(args[0]):
            wrong += [["text"], [12345], [["id"]]]  # items that are no objects
        return wrong
    return []


def _nested_fields() -> list[tuple[type[Any], attrs.Attribute[Any], Any]]:
    """(model, field, field type) for every field of an answer model that holds a nested
    model or an array: derived from the models, so a new one is covered too."""
    found = []
    for cls in sorted(_answer_models(), key=lambda c: c.__qualname__):
        hints = typing.get_type_hints(cls)
        for field in attrs.fields(cls):
            if _wrong_kinds(hints[field.name]):
                found.append((cls, field, hints[field.name]))
    return found


NESTED_FIELDS = _nested_fields()


def test_the_nested_fields_include_the_known_ones() -> None:
    # A guard for the test below: it must reach models, lists of models and of strings.
    names = {(cls.__name__, field.name) for cls, field, _ in NESTED_FIELDS}
    assert {
        ("User", "phone_number"),
        ("UserCompliance", "flags"),
        ("User", "payout_options_exclude_list"),
        ("Transfer", "transactions"),
        ("Flow", "steps"),
    } <= names
    assert len(NESTED_FIELDS) >= 30


@pytest.mark.parametrize(
    ("cls", "field", "tp"),
    [pytest.param(*p, id=f"{p[0].__name__}.{p[1].name}") for p in NESTED_FIELDS],
)
def test_a_nested_value_of_the_wrong_kind_is_refused(
    cls: type[Any], field: attrs.Attribute[Any], tp: Any
) -> None:
    good = SPEC_PAYLOADS[cls][0] if cls in SPEC_PAYLOADS else _payload(cls)
    for wrong in _wrong_kinds(tp):
        payload = {**good, field.metadata.get("wire", field.name): wrong}
        # Both paths refuse it (and agree), and the answer names the field (cattrs names
        # it by its attribute, not its wire name).
        answered = _assert_paths_agree(cls, payload)
        assert answered[:2] == ("error", "InvalidResponseError"), f"{cls.__name__}: {payload!r}"
        assert f"$.{field.name}" in answered[2], answered


def test_any_mapping_or_array_is_still_taken_where_one_is_expected() -> None:
    # The refusal is of the wrong kind of value, not of another mapping or sequence type.
    user = SPEC_PAYLOADS[aiodots.models.User][0]
    payload = {
        **user,
        "phone_number": types.MappingProxyType({"country_code": "1"}),
        "payout_options_exclude_list": ("ach",),
    }
    assert _assert_paths_agree(aiodots.models.User, payload)[0] == "ok"
    structured = structure_response(payload, aiodots.models.User, method="GET", path="/")
    assert structured.phone_number == aiodots.models.UserPhoneNumber(country_code="1")
    assert structured.payout_options_exclude_list == ("ach",)


#: Date-times as a server may write them, and the instant each one is. RFC 3339 (the
#: document's `format: date-time`) allows a lower-case "t" and "z" (its section 5.6).
DATE_TIMES: dict[str, datetime] = {
    "2024-01-02T03:04:05Z": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    "2024-01-02T03:04:05+00:00": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    "2024-01-02T03:04:05-05:00": datetime(
        2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5))
    ),
    "2024-01-02T03:04:05": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    "2024-01-02 03:04:05": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    "2024-01-02": datetime(2024, 1, 2, tzinfo=UTC),
    "2024-01-02T03:04:05.1Z": datetime(2024, 1, 2, 3, 4, 5, 100000, tzinfo=UTC),
    "2024-01-02T03:04:05.123Z": datetime(2024, 1, 2, 3, 4, 5, 123000, tzinfo=UTC),
    "2024-01-02T03:04:05.123456789Z": datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
    "2024-01-02t03:04:05z": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    "2024-01-02T03:04:05.5z": datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=UTC),
}


@pytest.mark.parametrize("text", list(DATE_TIMES))
def test_every_date_time_form_a_server_may_write_is_read_on_either_path(text: str) -> None:
    # `Flow.created` is read by inline code, `Transfer.created` (optional) by its hook.
    cases: list[tuple[type[Any], dict[str, Any], str]] = [
        (aiodots.Flow, SPEC_PAYLOADS[aiodots.Flow][0], "created"),
        (aiodots.models.Transfer, SPEC_PAYLOADS[aiodots.models.Transfer][0], "created"),
    ]
    for cls, good, key in cases:
        answered = _assert_paths_agree(cls, {**good, key: text})
        assert answered[0] == "ok", answered
        assert getattr(answered[1], key) == DATE_TIMES[text]
        assert getattr(answered[1], key).utcoffset() == DATE_TIMES[text].utcoffset()
        page = structure_page({"data": [good, {**good, key: text}]}, cls, method="GET", path="/")
        assert getattr(page.data[1], key) == DATE_TIMES[text]


@pytest.mark.parametrize(
    "number",
    [
        b"18446744073709551616",  # 2**64: past 64 bits, orjson reads a float
        b"123456789012345678901234567890",
        b"-9223372036854775809",
        b"9007199254740993.0",  # 2**53 + 1 as a float: rounded to 2**53 on reading
        b"1e20",
    ],
)
def test_an_integer_a_float_cannot_hold_exactly_is_refused_not_rounded(number: bytes) -> None:
    # Money is integer cents: an amount read as a float past 2**53 may no longer be the
    # amount sent, and nothing after the decoder could tell.
    good = SPEC_PAYLOADS[aiodots.models.Transfer][0]
    raw = _json.dumps(good).replace(
        b'"amount":' + str(good["amount"]).encode(), b'"amount":' + number
    )
    payload = _json.loads(raw)
    answered = _assert_paths_agree(aiodots.models.Transfer, payload)
    assert answered[0] == "error", answered
    with pytest.raises(aiodots.InvalidResponseError, match=r"expected int.*@ \$\.amount"):
        structure_response(payload, aiodots.models.Transfer, method="GET", path="/x")


def test_a_whole_float_within_a_floats_exact_range_is_still_its_integer() -> None:
    good = SPEC_PAYLOADS[aiodots.models.Transfer][0]
    for amount in (100.0, -250.0, float(2**53 - 1)):
        answered = _assert_paths_agree(aiodots.models.Transfer, {**good, "amount": amount})
        assert answered[0] == "ok", answered
        assert answered[1].amount == int(amount)
        assert type(answered[1].amount) is int
