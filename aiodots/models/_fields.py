"""Field checks for request models, built from the rules Dots' OpenAPI document states.

Each factory returns an attrs validator or converter. Request models are checked on
construction, so bad input raises `ValidationError` before anything is sent; response
models use none of this and accept what the API returns.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime
from typing import Any, TypeVar

import attrs

from aiodots.errors import ValidationError
from aiodots.models.reserved import check_reserved_keys

__all__ = [
    "boolean",
    "check_json",
    "enum",
    "integer",
    "json_value",
    "number",
    "object_value",
    "string",
    "to_date",
    "to_datetime",
    "to_integer_id",
    "to_integer_id_or_uuid",
    "optional_model",
    "optional_models",
    "to_strings",
    "to_uuid",
    "unique_items",
    "each",
    "build",
    "coerce",
    "exactly_one_group",
    "Param",
    "to_uuids",
]

T = TypeVar("T")
Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]

_METADATA_MAX_DEPTH = 32
# Deliberately loose: one "@", no spaces, a dot in the domain. The server has the last
# word; this only catches the typos that would certainly be refused.
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+\Z")
_URI = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+\Z")
_INTEGER = re.compile(r"-?[0-9]+\Z")


def _name(attribute: attrs.Attribute[Any]) -> str:
    wire: str = attribute.metadata.get("wire", attribute.name)
    return wire


def string(
    *,
    min_length: int | None = None,
    max_length: int | None = None,
    pattern: str | None = None,
    fmt: str | None = None,
) -> Validator:
    """A string, checked for length, pattern and the formats `email` and `uri`."""
    compiled = re.compile(pattern) if pattern else None

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        name = _name(attribute)
        if not isinstance(value, str):
            raise ValidationError(f"{name} must be a string, not {type(value).__name__}")
        if min_length is not None and len(value) < min_length:
            raise ValidationError(f"{name} must have at least {min_length} character(s)")
        if max_length is not None and len(value) > max_length:
            raise ValidationError(f"{name} must have at most {max_length} characters")
        if compiled is not None and not compiled.search(value):
            raise ValidationError(f"{name} must match {pattern}, not {value!r}")
        if fmt == "email" and not _EMAIL.match(value):
            raise ValidationError(f"{name} must be an email address, not {value!r}")
        if fmt == "uri" and not _URI.match(value):
            raise ValidationError(f"{name} must be a URL, not {value!r}")

    return check


def integer(
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    exclusive_minimum: int | None = None,
) -> Validator:
    """An integer (money is integer cents: a float is refused, never rounded)."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        name = _name(attribute)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValidationError(f"{name} must be an integer, not {value!r}")
        if minimum is not None and value < minimum:
            raise ValidationError(f"{name} must be at least {minimum}, not {value}")
        if exclusive_minimum is not None and value <= exclusive_minimum:
            raise ValidationError(f"{name} must be greater than {exclusive_minimum}, not {value}")
        if maximum is not None and value > maximum:
            raise ValidationError(f"{name} must be at most {maximum}, not {value}")

    return check


def number() -> Validator:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise ValidationError(f"{_name(attribute)} must be a finite number, not {value!r}")

    return check


def boolean() -> Validator:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and not isinstance(value, bool):
            raise ValidationError(f"{_name(attribute)} must be true or false, not {value!r}")

    return check


def enum(*values: str) -> Validator:
    """One of the documented values. Requests are strict (a typo fails here, not at the
    server); responses keep values this version does not know."""
    allowed = frozenset(values)
    listed = ", ".join(values)

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and value not in allowed:
            raise ValidationError(f"{_name(attribute)} must be one of {listed}, not {value!r}")

    return check


#: Values that are JSON as they are. An item of one of these exact types is passed over
#: without a call, and an item's path (`metadata.key`) is written only for an item that
#: is looked into: for flat metadata that measured a third of the check (cProfile).
_JSON_SCALARS = frozenset({str, bool, int, type(None)})


def check_json(value: object, where: str, depth: int = 0) -> None:
    if depth > _METADATA_MAX_DEPTH:
        raise ValidationError(f"{where} is nested too deeply")
    if type(value) in _JSON_SCALARS or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"{where} is not a finite number: {value!r}")
        return
    if type(value) is dict or isinstance(value, Mapping):
        for key, item in value.items():
            if type(key) is not str and not isinstance(key, str):
                raise ValidationError(f"keys must be strings; got {key!r} in {where}")
            if type(item) not in _JSON_SCALARS:
                check_json(item, f"{where}.{key}", depth + 1)
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if type(item) not in _JSON_SCALARS:
                check_json(item, f"{where}[{i}]", depth + 1)
        return
    raise ValidationError(f"{where} is not JSON-serialisable: {type(value).__name__}")


def json_value(*, allow_string: bool = True, reserved: bool = False) -> Validator:
    """Free-form JSON such as `metadata`: a mapping of plain JSON values, or (where the
    spec allows it) a string, sent as given. `reserved`: the metadata of a create that
    reconciliation can tag, where only aiodots may write the call-id key."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        name = _name(attribute)
        if isinstance(value, str):
            if allow_string:
                return
            raise ValidationError(f"{name} must be an object, not a string")
        # `type(...) is dict` first: the ABC check against Mapping measured 1.8k
        # instructions per call (callgrind), and request metadata is nearly always a dict.
        if type(value) is not dict and not isinstance(value, Mapping):
            kinds = "a mapping or a string" if allow_string else "a mapping"
            raise ValidationError(f"{name} must be {kinds}, not {type(value).__name__}")
        if reserved:
            check_reserved_keys(value)
        check_json(value, name)

    return check


def object_value() -> Validator:
    return json_value(allow_string=False)


def to_uuid(value: Any) -> Any:
    """A UUID given as `uuid.UUID` or text; sent as text. Anything else fails here."""
    if value is None:
        return None
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        try:
            uuid.UUID(value)
        except ValueError:
            pass
        else:
            return value
    raise ValidationError(f"expected a UUID, not {value!r}")


def to_integer_id(value: Any) -> Any:
    """The id of an object whose ids are integers (a transaction), given as an `int` or
    its decimal text; sent as text. Anything else fails here."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and _INTEGER.match(value):
        return value
    raise ValidationError(f"expected an integer id, not {value!r}")


def to_integer_id_or_uuid(value: Any) -> Any:
    """A cursor the document types as a UUID over objects whose `id` is an integer (the
    transactions list): either reading, an integer id (`int` or its text) or a UUID
    (`uuid.UUID` or its text), sent as text. Anything else fails here."""
    for reading in (to_integer_id, to_uuid):
        try:
            return reading(value)
        except ValidationError:
            pass
    raise ValidationError(f"expected an integer id or a UUID, not {value!r}")


def to_date(value: Any) -> Any:
    """A calendar date, given as `date` or `"YYYY-MM-DD"`; kept as `date`."""
    if value is None or (isinstance(value, date) and not isinstance(value, datetime)):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValidationError(f"expected a date (YYYY-MM-DD), not {value!r}")


def to_datetime(value: Any) -> Any:
    """A point in time, given as an aware `datetime` or ISO 8601 text with an offset."""
    if value is None:
        return None
    parsed = value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError(f"expected an ISO 8601 date-time, not {value!r}") from None
    if not isinstance(parsed, datetime):
        raise ValidationError(f"expected a date-time, not {value!r}")
    if parsed.tzinfo is None:
        raise ValidationError(f"a date-time needs a UTC offset (naive: {value!r})")
    return parsed


def to_strings(value: Any) -> Any:
    """An array of strings (checked item by item by the field's validator)."""
    if value is None:
        return None
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise ValidationError(f"expected a list, not {type(value).__name__}")
    return tuple(value)


def build(cls: type[T], fields: Mapping[str, Any]) -> T:
    """`cls(**fields)` for a request model, where unknown and missing keys are a
    `ValidationError` naming them rather than a `TypeError` from deep inside attrs."""
    known = attrs.fields_dict(cls)  # type: ignore[arg-type]
    by_wire = {a.metadata.get("wire", name): name for name, a in known.items()}
    kwargs: dict[str, Any] = {}
    unknown = []
    for key, value in fields.items():
        name = key if key in known else by_wire.get(key)
        if name is None:
            unknown.append(str(key))
        else:
            kwargs[name] = value
    if unknown:
        raise ValidationError(f"unknown {cls.__name__} field(s): {', '.join(sorted(unknown))}")
    missing = [
        name for name, a in known.items()
        if a.default is attrs.NOTHING and a.init and name not in kwargs
    ]
    if missing:
        raise ValidationError(f"{cls.__name__} needs {', '.join(missing)}")
    return cls(**kwargs)


def coerce(cls: type[T], value: object) -> T:
    """A request model as given, or one built from a mapping of its fields."""
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return build(cls, value)
    raise ValidationError(
        f"expected a {cls.__name__} or a mapping of its fields, not {type(value).__name__}"
    )


def optional_model(cls: type[T], value: Any) -> T | None:
    """A nested object: its model, or a plain mapping with the same keys (None: unset)."""
    return None if value is None else coerce(cls, value)


def optional_models(cls: type[T], value: Any) -> tuple[T, ...] | None:
    """An array of nested objects, each a model or a mapping (None: unset)."""
    if value is None:
        return None
    return tuple(coerce(cls, item) for item in to_strings(value))


def unique_items(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and len(set(map(repr, value))) != len(value):
        raise ValidationError(f"{_name(attribute)} must not repeat an item")


def each(check: Validator) -> Validator:
    """Apply a scalar check to every item of an array field."""

    def check_all(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        for item in value:
            check(instance, attribute, item)

    return check_all


def to_uuids(value: Any) -> Any:
    """An array of UUIDs, each given as `uuid.UUID` or text."""
    items = to_strings(value)
    return None if items is None else tuple(to_uuid(item) for item in items)


def exactly_one_group(instance: Any, groups: tuple[tuple[str, ...], ...]) -> None:
    """The spec's `oneOf` of `required` lists: exactly one group of fields is given
    (`payments.create` takes `user_id` or `customer_id`, not both)."""
    given = [g for g in groups if all(getattr(instance, name) is not None for name in g)]
    if len(given) != 1:
        options = " or ".join(" + ".join(g) for g in groups)
        raise ValidationError(f"{type(instance).__name__} needs exactly one of: {options}")


class _Named:
    """What a field check reads of an attrs attribute, for checking query parameters."""

    __slots__ = ("metadata", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.metadata: dict[str, Any] = {}


@attrs.frozen
class Param:
    """The checks of one query parameter: a converter, then validators."""

    converter: Callable[[Any], Any] | None = None
    checks: tuple[Validator, ...] = ()

    def __call__(self, name: str, value: Any) -> Any:
        if value is None:
            return None
        if self.converter is not None:
            value = self.converter(value)
        for check in self.checks:
            check(None, _Named(name), value)  # type: ignore[arg-type]
        return value
