"""All wire-format knowledge: the one cattrs `Converter` and its hooks.

- Request bodies leave out every field that was not set (None), at any depth.
- Datetimes are ISO 8601; a value with no offset is taken as UTC, so `Flow.created`
  is always aware.
- Step names the enum does not know stay plain strings, and unknown response fields
  are ignored: a field or step the API adds later must not break an old client.
- A response that cannot be structured raises `InvalidResponseError`, never a stray
  `KeyError` or a cattrs exception. A value of the wrong JSON kind where a nested object
  or an array belongs is such a response, not an object of defaults or a string's letters.
- Responses are structured by cattrs' fast mode first and only a payload it refuses by
  the detailed converter, which explains the failure: the same answers, at the cost of
  the fast path for every model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.cols import homogenous_tuple_structure_factory
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from . import model_builder
from .errors import InvalidResponseError
from .models import CreateFlow, FlowStep, Page, RedirectStep, Step
from .models.flows import STEP_BY_NAME, PayoutLinkStep

__all__ = [
    "converter",
    "structure_list",
    "structure_page",
    "structure_response",
    "unstructure_request",
]

T = TypeVar("T")

#: The converter that explains: with cattrs' detailed validation it names every bad field
#: of a response. Requests are unstructured by it too.
converter = cattrs.Converter(forbid_extra_keys=False)
# The same structure hooks without detailed validation (cattrs' fast mode): the generated
# functions skip the per-field try/except and error bookkeeping, which measured about a
# third of the cost of structuring a flow. Every response goes through it first; one that
# fails is structured again by `converter`, so the error names every bad field, and the two
# accept exactly the same payloads (tests/test_converter_paths.py checks every model).
_fast = cattrs.Converter(forbid_extra_keys=False, detailed_validation=False)


def _structure_datetime(value: Any, _: Any) -> datetime:
    if isinstance(value, str):  # the wire's form first
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            # RFC 3339, the document's `date-time`, allows a lower-case "z" (its section
            # 5.6), which fromisoformat refuses (a lower-case "t" it takes).
            if value[-1:] != "z":
                raise
            parsed = datetime.fromisoformat(value[:-1] + "Z")
    elif isinstance(value, datetime):
        parsed = value
    else:
        raise TypeError(f"expected an ISO 8601 date-time string, not {type(value).__name__}")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


#: Step lists already read, by their names: an answer's flows mostly repeat a few lists,
#: and a hit (one tuple and one dict lookup) measured 1.2k instructions where reading the
#: names again measured 6k (callgrind, four names). Bounded, for a server that sends many.
_STEP_LISTS: dict[tuple[Any, ...], tuple[Step | str, ...]] = {}
_STEP_LISTS_MAX = 512


def _structure_step_names(value: Any, _: Any) -> tuple[Step | str, ...]:
    if type(value) is list:
        try:
            return _STEP_LISTS[tuple(value)]
        except (KeyError, TypeError):  # not seen yet, or an unhashable (bad) item
            pass
    if value is None:
        # Not in the document, but a server may write an empty list so (Go's nil slice);
        # optional fields take null in every other model, and a flow must not fail on it.
        return ()
    if not isinstance(value, list | tuple):
        raise TypeError(f"expected an array of step names, not {type(value).__name__}")
    steps: list[Step | str] = []
    for name in value:
        if not isinstance(name, str):
            raise TypeError(f"expected a step name string, not {type(name).__name__}")
        # A dict lookup, not `Step(name)`: enum construction costs a microsecond a step.
        steps.append(STEP_BY_NAME.get(name, name))
    result = tuple(steps)
    if len(_STEP_LISTS) < _STEP_LISTS_MAX:
        _STEP_LISTS[tuple(value)] = result
    return result


def _unstructure_request_steps(steps: tuple[Step | FlowStep, ...]) -> list[Any]:
    # A `Step` is a str (StrEnum), which orjson and the stdlib json both write as its
    # value: it goes out as it is. Reading `.value` (a Python-level property) measured
    # about a thousand instructions per step (callgrind).
    return [step if type(step) is Step else converter.unstructure(step) for step in steps]


# `type(...) is` before `isinstance`: the ABC check against Mapping measured 1.8k
# instructions per call (callgrind), a plain type test a few dozen; decoded JSON is dicts.


def _structure_metadata(value: Any, _: Any) -> Mapping[str, Any] | str | None:
    if value is None or type(value) is dict or isinstance(value, str | Mapping):
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


#: Every integer below this in magnitude is a float exactly, and no float there stands for
#: two of them.
_EXACT_FLOAT_INTEGERS = 2**53


def _structure_int(value: Any, _: Any) -> int:
    # Money is integer cents. A whole float (100.0, as some encoders write it) is the
    # same amount; a fraction of a cent, a string or a bool is a bad response. So is a
    # float past 2**53: it may be an integer rounded on the way (orjson reads one past 64
    # bits as a float), and the amount it was is lost.
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        if abs(value) < _EXACT_FLOAT_INTEGERS:
            return int(value)
        raise TypeError(f"expected an integer, not {value!r}: too large to be exact")
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
    if value is None or type(value) is dict or isinstance(value, Mapping):
        return value
    raise TypeError(f"expected an object, not {type(value).__name__}")


def _is_array(t: Any) -> bool:
    """`tuple[X, ...]`: how a model holds a JSON array of X. `Page`'s `tuple[T, ...]` (a
    type variable, no hook: pages are never read by a converter) is left to cattrs."""
    args = get_args(t)
    return (
        get_origin(t) is tuple
        and len(args) == 2
        and args[1] is Ellipsis
        and not isinstance(args[0], TypeVar)
    )


def _array_hook(tp: Any, conv: cattrs.Converter) -> Callable[[Any, Any], tuple[Any, ...]]:
    """A `tuple[X, ...]` field's hook: cattrs' own takes any iterable, which makes a string
    its letters and an object its keys. Only a JSON array (a list, or a tuple) is one."""
    if conv.detailed_validation:
        # cattrs' own here, for its errors, which name the index of each bad item.
        structure_items = homogenous_tuple_structure_factory(tp, conv)

        def structure_detailed(value: Any, _: Any) -> tuple[Any, ...]:
            if not isinstance(value, list | tuple):
                raise TypeError(f"expected an array, not {type(value).__name__}")
            items: tuple[Any, ...] = structure_items(value, tp)
            return items

        return structure_detailed
    # The fast path: the check and the loop in one function, no call more than cattrs'.
    item_type = get_args(tp)[0]
    try:
        item_hook = conv.get_structure_hook(item_type)
    except RecursionError:  # a model that holds itself: looked up on each call, as cattrs'
        item_hook = conv.structure

    def structure(value: Any, _: Any) -> tuple[Any, ...]:
        if type(value) is not list and not isinstance(value, list | tuple):
            raise TypeError(f"expected an array, not {type(value).__name__}")
        return tuple([item_hook(item, item_type) for item in value])

    return structure


def _objects_only(structure: Callable[[Any, Any], T]) -> Callable[[Any, Any], T]:
    """A model's cattrs-generated function, refusing a value that is no JSON object: it
    reads each optional field after a `'key' in o` test, which a string or a list answers
    too (`"id" in "junk"`), and would make a model of defaults of either."""

    def structure_object(value: Any, cls: Any) -> T:
        if type(value) is not dict and not isinstance(value, Mapping):
            raise TypeError(f"expected an object, not {type(value).__name__}")
        return structure(value, cls)

    return structure_object


def _wire_names(cls: type[Any]) -> dict[str, Any]:
    # A field whose wire name is no Python identifier ("1099_adjustment") keeps the wire
    # name in its metadata; both directions rename it.
    return {
        a.name: override(rename=a.metadata["wire"])
        for a in attrs.fields(cls)
        if "wire" in a.metadata
    }


def _register_structure_hooks(conv: cattrs.Converter) -> None:
    """The reading rules, the same for both converters."""
    conv.register_structure_hook(datetime, _structure_datetime)
    conv.register_structure_hook(date, _structure_date)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook(Any, lambda value, _: value)
    # Every array field. Registered before the step names': the later hook is tried first.
    conv.register_structure_hook_factory(_is_array, _array_hook)
    # Free-form JSON objects are kept as given.
    conv.register_structure_hook_func(
        lambda t: t in (Mapping[str, Any], Mapping[str, Any] | None), _structure_json_object
    )
    # Parameterised types are matched by predicate (singledispatch takes only classes).
    conv.register_structure_hook_func(
        lambda t: t == tuple[Step | str, ...], _structure_step_names
    )
    conv.register_structure_hook(Mapping[str, Any] | str | None, _structure_metadata)
    conv.register_structure_hook(str | None, _structure_optional_str)
    conv.register_structure_hook(str, _structure_str)


_register_structure_hooks(converter)
_register_structure_hooks(_fast)
# Every model (one per resource schema) gets a function made on first use from the class
# itself, never a hand-written one: cattrs' detailed one here, for `_fast` the one below.
converter.register_structure_hook_factory(
    attrs.has,
    lambda cls: _objects_only(make_dict_structure_fn(cls, converter, **_wire_names(cls))),
)

#: For each field type, the exact value types its hook above returns unchanged: the fast
#: path keeps such a value without calling the hook (None: the hook keeps anything).
_PASSTHROUGH: dict[Any, tuple[type, ...] | None] = {
    Any: None,
    str: (str,),
    str | None: (str, type(None)),
    int: (int,),
    int | None: (int, type(None)),
    bool: (bool,),
    bool | None: (bool, type(None)),
    float: (float,),
    float | None: (float, type(None)),
    Mapping[str, Any]: (dict,),
    Mapping[str, Any] | None: (dict, type(None)),
    Mapping[str, Any] | str | None: (dict, str, type(None)),
}


#: The two field types of every flow in every answer, read in the generated function
#: itself: a call to their hook measured about 1.2k instructions, these lines a few
#: hundred (callgrind), and a page has ten flows with three such fields each. What they
#: do not take goes to the hook; what they raise on, the detailed converter explains.
_INLINE: dict[Any, tuple[str, dict[str, Any]]] = {
    datetime: (
        # What fromisoformat refuses goes to the hook, which reads a few more forms (a
        # lower-case "z"); the `try` costs nothing until it raises (Python 3.11).
        "if type({v}) is str:\n"
        "    try:\n"
        "        {v} = _fromisoformat({v})\n"
        "    except ValueError:\n"
        "        {v} = {hook}\n"
        "    if {v}.tzinfo is None:\n"
        "        {v} = {v}.replace(tzinfo=_UTC)\n"
        "else:\n"
        "    {v} = {hook}",
        {"_fromisoformat": datetime.fromisoformat, "_UTC": UTC},
    ),
    tuple[Step | str, ...]: (
        # An empty list is (); a list equal to the one this field read last is what it
        # made of it (a page's flows mostly repeat their steps). Names fresh from the
        # decoder have no hash yet: the memo's lookup hashes them, a list comparison
        # does not. Both measured 0.5 us less per page of ten flows, 2 us in the
        # running client (benchmarks/throughput.py).
        "if type({v}) is not list:\n"
        "    {v} = {hook}\n"
        "elif not {v}:\n"
        "    {v} = ()\n"
        "else:\n"
        "    _last = {recent}[0]\n"
        "    if {v} == _last[0]:\n"
        "        {v} = _last[1]\n"
        "    else:\n"
        "        _names = {v}[:]  # a copy: the payload is not ours to keep\n"
        "        _seen = _step_lists.get(tuple({v}))\n"
        "        {v} = {hook} if _seen is None else _seen\n"
        "        {recent}[0] = (_names, {v})",
        {"_step_lists": _STEP_LISTS},
    ),
}


_built_fns: dict[Any, model_builder.StructureFns] = {}


def _built(cls: Any) -> model_builder.StructureFns:
    """`cls`'s generated functions, made once: one answer's (the cattrs hook), its items'."""
    fns = _built_fns.get(cls)
    if fns is None:
        fns = _built_fns[cls] = model_builder.make_structure_fns(
            cls, _fast.get_structure_hook, _PASSTHROUGH, _INLINE
        )
    return fns


def _fast_model_hook(cls: type[Any]) -> Callable[[Any, Any], Any]:
    # Response models are built by `aiodots.model_builder` (measured there), whose
    # functions refuse a value that is no mapping themselves; the rest (request models,
    # with validators) by cattrs.
    if model_builder.can_build(cls):
        return _built(cls).one
    return _objects_only(make_dict_structure_fn(cls, _fast, **_wire_names(cls)))


_fast.register_structure_hook_factory(attrs.has, _fast_model_hook)

converter.register_unstructure_hook(datetime, lambda d: d.isoformat())
converter.register_unstructure_hook(date, lambda d: d.isoformat())
# Free-form JSON objects are sent as given.
converter.register_unstructure_hook_func(
    lambda t: t in (Mapping[str, Any], Mapping[str, Any] | None), lambda value: value
)
converter.register_unstructure_hook_func(
    lambda t: t == tuple[Step | FlowStep, ...], _unstructure_request_steps
)
# Request metadata was checked to be plain JSON on construction: sent as given, uncopied.
converter.register_unstructure_hook(Mapping[str, Any] | str | None, lambda value: value)
converter.register_unstructure_hook(Step, lambda s: s.value)
for _cls in (FlowStep, RedirectStep, PayoutLinkStep, CreateFlow):
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


def _is_request_model(cls: type[Any]) -> bool:
    # Request models check their fields (validators, converters); response models take
    # what comes and have neither.
    return any(a.validator is not None or a.converter is not None for a in attrs.fields(cls))


# Every other model's body, cattrs-generated: a request body leaves unset fields out; a
# response model written back out (a bulk job's output line) keeps every field, None
# included, as the API answered it.
converter.register_unstructure_hook_factory(
    attrs.has,
    lambda cls: make_dict_unstructure_fn(
        cls, converter, _cattrs_omit_if_default=_is_request_model(cls), **_wire_names(cls)
    ),
)


# Each model's fast structure function, looked up once: `Converter.structure` dispatches
# on every call, which measured 1.9k instructions per response (callgrind).
_fast_hooks: dict[Any, Callable[[Any, Any], Any]] = {}


def _fast_hook(cls: Any) -> Callable[[Any, Any], Any]:
    hook = _fast_hooks.get(cls)
    if hook is None:
        hook = _fast_hooks[cls] = _fast.get_structure_hook(cls)
    return hook


_fast_items_fns: dict[Any, Callable[[Any], tuple[Any, ...] | None]] = {}


def _fast_items(cls: Any) -> Callable[[Any], tuple[Any, ...] | None]:
    """The fast path for a list of `cls` payloads, looked up once as `_fast_hook`: a
    tuple of models, or None if some payload is not a JSON object."""
    items = _fast_items_fns.get(cls)
    if items is None:
        if model_builder.can_build(cls):
            items = _built(cls).items
        else:
            hook = _fast_hook(cls)

            def items(payloads: Any) -> tuple[Any, ...] | None:
                if any(type(item) is not dict for item in payloads):
                    return None
                return tuple([hook(item, cls) for item in payloads])

        _fast_items_fns[cls] = items
    return items


_unstructure_hooks: dict[Any, Callable[[Any], Any]] = {}


def unstructure_request(model: Any) -> Any:
    """The JSON-ready body for a request model."""
    cls = type(model)
    hook = _unstructure_hooks.get(cls)  # looked up once per class, as `_fast_hooks`
    if hook is None:
        hook = _unstructure_hooks[cls] = converter.get_unstructure_hook(cls)
    return hook(model)


def structure_response(
    data: Any, cls: type[T], *, method: str, path: str, status: int = 200
) -> T:
    """Structure a decoded response body, or raise `InvalidResponseError` saying why."""
    if type(data) is not dict and not isinstance(data, Mapping):
        raise InvalidResponseError(
            f"expected a JSON object, got {type(data).__name__}",
            status=status, method=method, path=path, body=data,
        )
    hook = _fast_hooks.get(cls) or _fast_hook(cls)  # every answer: two calls less inline
    try:
        result: T = hook(data, cls)
    except Exception:
        pass  # the detailed converter explains it (or accepts it: it has the last word)
    else:
        return result
    return _structure_explained(data, cls, method=method, path=path, status=status)


def _structure_explained(
    data: Mapping[str, Any], cls: type[T], *, method: str, path: str, status: int
) -> T:
    """The detailed converter's answer: what the fast path gives for a payload it accepts
    (tests/test_converter_paths.py checks that), else `InvalidResponseError` naming every
    bad field."""
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


_new_page = model_builder.make_constructor(Page)  # every list call makes one


def structure_list(
    data: Any, cls: type[T], *, method: str, path: str, status: int = 200
) -> tuple[T, ...]:
    """A list answer with no pagination: a JSON array, or `{"data": [...]}`."""
    return structure_page(data, cls, method=method, path=path, status=status).data


def structure_page(
    data: Any, cls: type[T], *, method: str, path: str, status: int = 200
) -> Page[T]:
    """A list response: `{"data": [...], "has_more": bool}`, or a bare array (some Dots
    list endpoints answer that way). `has_more` absent or null means no more pages."""
    if type(data) is dict and type(data.get("data")) is list:  # every answer: no ABC test
        items, has_more = data["data"], data.get("has_more")
    elif isinstance(data, list):
        items, has_more = data, False
    elif isinstance(data, Mapping) and isinstance(data.get("data"), list):
        items, has_more = data["data"], data.get("has_more")
    else:
        raise InvalidResponseError(
            "expected a list page ({'data': [...], 'has_more': ...}) or a JSON array",
            status=status, method=method, path=path, body=data,
        )
    # A JSON boolean only: bool() would read "false" (or any non-empty string) as true,
    # and a list would then ask for pages the server never said it had.
    if has_more is None:
        has_more = False
    elif has_more is not True and has_more is not False:
        raise InvalidResponseError(
            f"has_more must be true, false or absent, not {has_more!r}",
            status=status, method=method, path=path, body=data,
        )
    # The fast path for the whole page at once (no call per item through
    # `structure_response`: 2.5k instructions less per item); a page with any item it
    # refuses goes item by item, so the error names that item's bad fields.
    structured: tuple[T, ...] | None
    try:
        structured = _fast_items(cls)(items)
    except Exception:
        structured = None
    if structured is None:
        structured = tuple(
            structure_response(item, cls, method=method, path=path, status=status)
            for item in items
        )
    page: Page[T] = _new_page(structured, has_more)
    return page
