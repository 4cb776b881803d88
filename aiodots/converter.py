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
from datetime import UTC, datetime
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_unstructure_fn, override

from .errors import InvalidResponseError
from .models import CreateFlow, FlowStep, Page, RedirectStep, Step

__all__ = ["converter", "structure_response", "unstructure_request"]

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


def _structure_step_name(value: Any, _: Any) -> Step | str:
    if not isinstance(value, str):
        raise TypeError(f"expected a step name string, not {type(value).__name__}")
    try:
        return Step(value)
    except ValueError:
        return value


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


converter.register_structure_hook(datetime, _structure_datetime)
converter.register_unstructure_hook(datetime, lambda d: d.isoformat())
converter.register_structure_hook(Step | str, _structure_step_name)
converter.register_structure_hook(Mapping[str, Any] | str | None, _structure_metadata)
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


def unstructure_request(model: Any) -> Any:
    """The JSON-ready body for a request model."""
    return converter.unstructure(model)


def structure_response(data: Any, cls: type[T], *, method: str, path: str) -> T:
    """Structure a decoded response body, or raise `InvalidResponseError` saying why."""
    if not isinstance(data, Mapping):
        raise InvalidResponseError(
            f"expected a JSON object, got {type(data).__name__}",
            status=200, method=method, path=path, body=data,
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
            status=200, method=method, path=path, body=data,
        ) from exc


def structure_page(data: Any, cls: type[T], *, method: str, path: str) -> Page[T]:
    """A list response: `{"data": [...], "has_more": bool}`, or a bare array (some Dots
    list endpoints answer that way)."""
    if isinstance(data, list):
        items, has_more = data, False
    elif isinstance(data, Mapping) and isinstance(data.get("data"), list):
        items, has_more = data["data"], bool(data.get("has_more", False))
    else:
        raise InvalidResponseError(
            "expected a list page ({'data': [...], 'has_more': ...}) or a JSON array",
            status=200, method=method, path=path, body=data,
        )
    return Page(
        data=tuple(structure_response(item, cls, method=method, path=path) for item in items),
        has_more=has_more,
    )
