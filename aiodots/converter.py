"""All wire-format knowledge: the one cattrs `Converter` and its hooks.

- Request bodies leave out every field that was not set (None), at any depth.
- Datetimes are ISO 8601; a value with no offset is taken as UTC, so `Flow.created`
  is always aware.
- Step names the enum does not know stay plain strings, and unknown response fields
  are ignored: a field or step the API adds later must not break an old client.
- A response that cannot be structured raises `InvalidResponseError`, never a stray
  `KeyError` or a cattrs exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from .errors import InvalidResponseError
from .models import CreateFlow, Flow, FlowStep, Page, RedirectStep, Step
from .models.flows import STEP_BY_NAME

__all__ = [
    "converter",
    "structure_list",
    "structure_page",
    "structure_response",
    "unstructure_request",
]

T = TypeVar("T")

converter = cattrs.Converter(forbid_extra_keys=False)


def _structure_datetime(value: Any, _: Any) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        parsed = datetime.fromisoformat(value)
    else:
        raise TypeError(f"expected an ISO 8601 date-time string, not {type(value).__name__}")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _structure_step_names(value: Any, _: Any) -> tuple[Step | str, ...]:
    # A dict lookup, not `Step(name)`: enum construction costs a microsecond per step,
    # and this runs for every flow of every response.
    if not isinstance(value, list | tuple):
        raise TypeError(f"expected an array of step names, not {type(value).__name__}")
    steps: list[Step | str] = []
    for name in value:
        if not isinstance(name, str):
            raise TypeError(f"expected a step name string, not {type(name).__name__}")
        steps.append(STEP_BY_NAME.get(name, name))
    return tuple(steps)


def _unstructure_request_steps(steps: tuple[Step | FlowStep, ...]) -> list[Any]:
    return [step.value if type(step) is Step else converter.unstructure(step) for step in steps]


def _structure_metadata(value: Any, _: Any) -> Mapping[str, Any] | str | None:
    if value is None or isinstance(value, str | Mapping):
        return value
    raise TypeError(f"expected metadata as an object or a string, not {type(value).__name__}")


def _structure_optional_str(value: Any, _: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"expected a string or null, not {type(value).__name__}")


def _structure_str(value: Any, _: Any) -> str:
    # cattrs' default would turn 123 into "123"; an id of the wrong type is a bad response.
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a string, not {type(value).__name__}")


def _structure_date(value: Any, _: Any) -> date:
    if isinstance(value, str):
        return date.fromisoformat(value[:10])
    raise TypeError(f"expected an ISO 8601 date string, not {type(value).__name__}")


def _structure_int(value: Any, _: Any) -> int:
    # Money is integer cents. A whole float (100.0, as some encoders write it) is the
    # same amount; a fraction of a cent, a string or a bool is a bad response.
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    raise TypeError(f"expected an integer, not {value!r}")


def _structure_float(value: Any, _: Any) -> float:
    if type(value) is int or type(value) is float:
        return float(value)
    raise TypeError(f"expected a number, not {value!r}")


def _structure_bool(value: Any, _: Any) -> bool:
    if type(value) is bool:
        return value
    raise TypeError(f"expected true or false, not {value!r}")


def _structure_json_object(value: Any, _: Any) -> Mapping[str, Any] | None:
    if value is None or isinstance(value, Mapping):
        return value
    raise TypeError(f"expected an object, not {type(value).__name__}")


converter.register_structure_hook(datetime, _structure_datetime)
converter.register_unstructure_hook(datetime, lambda d: d.isoformat())
converter.register_structure_hook(date, _structure_date)
converter.register_unstructure_hook(date, lambda d: d.isoformat())
converter.register_structure_hook(int, _structure_int)
converter.register_structure_hook(float, _structure_float)
converter.register_structure_hook(bool, _structure_bool)
converter.register_structure_hook(Any, lambda value, _: value)
# Free-form JSON objects are kept and sent as given.
converter.register_structure_hook_func(
    lambda t: t in (Mapping[str, Any], Mapping[str, Any] | None), _structure_json_object
)
converter.register_unstructure_hook_func(
    lambda t: t in (Mapping[str, Any], Mapping[str, Any] | None), lambda value: value
)
# Parameterised types are matched by predicate (singledispatch takes only classes).
converter.register_structure_hook_func(
    lambda t: t == tuple[Step | str, ...], _structure_step_names
)
converter.register_unstructure_hook_func(
    lambda t: t == tuple[Step | FlowStep, ...], _unstructure_request_steps
)
converter.register_structure_hook(Mapping[str, Any] | str | None, _structure_metadata)
# Request metadata was checked to be plain JSON on construction: sent as given, uncopied.
converter.register_unstructure_hook(Mapping[str, Any] | str | None, lambda value: value)
converter.register_structure_hook(str | None, _structure_optional_str)
converter.register_structure_hook(str, _structure_str)
converter.register_unstructure_hook(Step, lambda s: s.value)
for _cls in (FlowStep, RedirectStep, CreateFlow):
    converter.register_unstructure_hook(
        _cls,
        make_dict_unstructure_fn(
            _cls,
            converter,
            _cattrs_omit_if_default=True,
            _cattrs_include_init_false=True,  # RedirectStep's fixed `name`
            # `name` is never optional on the wire, even where it has a default
            # (RedirectStep), and `steps` is required.
            **{  # type: ignore[arg-type]  # field overrides go in **kwargs
                field: override(omit_if_default=False)
                for field in ("name", "steps")
                if field in attrs.fields_dict(_cls)
            },
        ),
    )


def _wire_names(cls: type[Any]) -> dict[str, Any]:
    # A field whose wire name is no Python identifier ("1099_adjustment") keeps the wire
    # name in its metadata; both directions rename it.
    return {
        a.name: override(rename=a.metadata["wire"])
        for a in attrs.fields(cls)
        if "wire" in a.metadata
    }


# Every other model (one per resource schema) gets cattrs-generated functions, made on
# first use from the class itself: no hand-written function per model.
converter.register_structure_hook_factory(
    attrs.has, lambda cls: make_dict_structure_fn(cls, converter, **_wire_names(cls))
)
def _is_request_model(cls: type[Any]) -> bool:
    # Request models check their fields (validators, converters); response models take
    # what comes and have neither.
    return any(a.validator is not None or a.converter is not None for a in attrs.fields(cls))


# A request body leaves unset fields out; a response model written back out (a bulk
# job's output line) keeps every field, None included, as the API answered it.
converter.register_unstructure_hook_factory(
    attrs.has,
    lambda cls: make_dict_unstructure_fn(
        cls, converter, _cattrs_omit_if_default=_is_request_model(cls), **_wire_names(cls)
    ),
)


# The cattrs-generated structure function for Flow, with detailed validation: it names
# every bad field. Responses of the documented shape take a direct path instead (every
# flow of a bulk job goes through here); anything else falls back to it, so the errors
# and the tolerance of the two are the same.
# tests/test_models.py checks that both paths agree and that Flow's fields are the ones
# the direct path knows.
_structure_flow_checked = make_dict_structure_fn(Flow, converter)


def _structure_flow_fast(data: Any, cls: Any) -> Flow:
    try:
        flow_id, created, link = data["id"], data["created"], data["link"]
        user_id = data.get("user_id")
        steps = data.get("steps", ())
        completed = data.get("completed_steps", ())
        metadata = data.get("metadata")
        if (
            type(flow_id) is str
            and type(created) is str
            and type(link) is str
            and (user_id is None or type(user_id) is str)
            and type(steps) is list
            and type(completed) is list
            and (metadata is None or type(metadata) is dict or type(metadata) is str)
        ):
            return Flow(
                id=flow_id,
                created=_structure_datetime(created, None),
                link=link,
                user_id=user_id,
                steps=_structure_step_names(steps, None),
                completed_steps=_structure_step_names(completed, None),
                metadata=metadata,
            )
    except (KeyError, TypeError, ValueError):
        pass
    return _structure_flow_checked(data, cls)


converter.register_structure_hook(Flow, _structure_flow_fast)


def unstructure_request(model: Any) -> Any:
    """The JSON-ready body for a request model."""
    return converter.unstructure(model)


def structure_response(
    data: Any, cls: type[T], *, method: str, path: str, status: int = 200
) -> T:
    """Structure a decoded response body, or raise `InvalidResponseError` saying why."""
    if not isinstance(data, Mapping):
        raise InvalidResponseError(
            f"expected a JSON object, got {type(data).__name__}",
            status=status, method=method, path=path, body=data,
        )
    try:
        return converter.structure(data, cls)
    except (cattrs.BaseValidationError, KeyError, TypeError, ValueError) as exc:
        problems = (
            "; ".join(cattrs.transform_error(exc))
            if isinstance(exc, cattrs.BaseValidationError)
            else str(exc)
        )
        raise InvalidResponseError(
            f"the response does not match {cls.__name__}: {problems}",
            status=status, method=method, path=path, body=data,
        ) from exc


def structure_list(
    data: Any, cls: type[T], *, method: str, path: str, status: int = 200
) -> tuple[T, ...]:
    """A list answer with no pagination: a JSON array, or `{"data": [...]}`."""
    return structure_page(data, cls, method=method, path=path, status=status).data


def structure_page(
    data: Any, cls: type[T], *, method: str, path: str, status: int = 200
) -> Page[T]:
    """A list response: `{"data": [...], "has_more": bool}`, or a bare array (some Dots
    list endpoints answer that way)."""
    if isinstance(data, list):
        items, has_more = data, False
    elif isinstance(data, Mapping) and isinstance(data.get("data"), list):
        items, has_more = data["data"], bool(data.get("has_more", False))
    else:
        raise InvalidResponseError(
            "expected a list page ({'data': [...], 'has_more': ...}) or a JSON array",
            status=status, method=method, path=path, body=data,
        )
    return Page(
        data=tuple(
            structure_response(item, cls, method=method, path=path, status=status)
            for item in items
        ),
        has_more=has_more,
    )
