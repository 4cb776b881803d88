"""Structure functions generated from a response model's own attrs fields.

The converter's fast path (see `aiodots.converter`) is made here, for every response model
alike: functions written from `attrs.fields(cls)` on first use, never by hand, one for an
answer and one for a list answer's items. They read each field's wire key, keep a value
whose exact type its hook would return unchanged (a `str` for a `str` field, a `dict` for
a JSON object, ...) without calling the hook, hand every other value to the hook, and
fill a missing optional field with its default. A payload with every key (nearly every
answer) has them all read in one call; one without some key, or not a mapping, goes
field by field, as the cattrs-generated functions do, and that path refuses a value that
is no mapping (a string or an array would answer its `'key' in o` tests). What they
accept and return is what those functions would: the hooks decide every value that is
not plainly right, and tests/test_converter_paths.py holds the paths to the same answers
on every model.

Why not attrs' own `__init__`: the models are frozen classes with slots, whose `__init__`
sets each field through `object.__setattr__`, because their `__setattr__` refuses. That
measured 0.62 us for a 7-field `Flow`, a third of the cost of structuring one. The
function here builds the object as a private subclass that adds no slots and keeps the
plain `__setattr__` (one specialised store per field), then gives it the model's class:
0.14 us, and the object is the model's own, frozen like any other. A model that needs its
`__init__` (validators, converters, `__attrs_post_init__`, a cached hash, fields outside
`__init__`) is not built this way: `can_build` says so and cattrs' function is used.
"""

from __future__ import annotations

import linecache
import operator
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import attrs

__all__ = ["StructureFns", "can_build", "make_constructor", "make_structure_fns"]

#: For a field type: the exact value types its hook returns unchanged (no call needed), or
#: None where the hook takes anything as it is (`Any`).
Passthrough = Mapping[Any, tuple[type, ...] | None]

#: For a field type: lines of code that read the value `{v}` in place of a call to its
#: hook, calling the hook (`{hook}`, an expression) for any value they do not take, and
#: the names they use. They must give what the hook gives, or raise. `{recent}` is the
#: field's own one-item list, `[(None, None)]` at first, where they may keep the last
#: (value, result) pair they made.
Inline = Mapping[Any, tuple[str, Mapping[str, Any]]]


def can_build(cls: type[Any]) -> bool:
    """Whether instances of `cls` may be built without its `__init__`: an attrs class
    with slots whose `__init__` only stores its arguments."""
    if not attrs.has(cls) or "__slots__" not in cls.__dict__:
        return False
    if any(hasattr(cls, hook) for hook in ("__attrs_pre_init__", "__attrs_post_init__")):
        return False
    if "_attrs_cached_hash" in cls.__dict__["__slots__"]:  # cache_hash=True: set by __init__
        return False
    return all(a.init and a.validator is None and a.converter is None for a in attrs.fields(cls))


def _builder_of(cls: type[Any]) -> type[Any]:
    """A subclass of `cls` that adds no slots and stores fields as any plain class does;
    an object made as one and given `cls` as its class is a `cls` like any other."""
    if not can_build(cls):
        raise TypeError(f"{cls.__name__} needs its __init__ (see can_build)")
    # Both of object's own methods: only then does CPython give the class the generic C
    # setattr, whose stores the interpreter specialises (one of them alone goes through
    # a Python-level slot call: 1.1k instructions per field instead of about 60).
    return type(
        f"_{cls.__name__}Builder",
        (cls,),
        {
            "__slots__": (),
            "__setattr__": object.__setattr__,
            "__delattr__": object.__delattr__,
            # `_builder()` measured 300 instructions under `object.__new__(_builder)`.
            "__init__": object.__init__,
            "__module__": cls.__module__,
        },
    )


class StructureFns(NamedTuple):
    """The functions generated for one model."""

    #: `one(payload, cls) -> cls`: what a cattrs structure hook is.
    one: Callable[[Any, Any], Any]
    #: `items(payloads) -> tuple[cls, ...]`, or None if some payload is not a dict: a
    #: list answer's items in one loop, without a call per item (a page of ten flows
    #: measured 0.6 us less than ten calls of `one`).
    items: Callable[[Any], tuple[Any, ...] | None]


def make_structure_fns(
    cls: type[Any],
    hook_for: Callable[[Any], Callable[[Any, Any], Any]],
    passthrough: Passthrough,
    inline: Inline,
) -> StructureFns:
    """The structure functions for `cls` (see `can_build`).

    `hook_for(type)` gives the structure hook of a field's type; `passthrough` says which
    values each field type's hook would return unchanged; `inline` gives the code that
    reads a field of its type in place of a call to the hook.
    """
    namespace: dict[str, Any] = {"_builder": _builder_of(cls), "_cls": cls}
    attrs.resolve_types(cls)
    fields = attrs.fields(cls)
    keys = [field.metadata.get("wire", field.name) for field in fields]
    names = [f"v{i}" for i in range(len(fields))]
    # Each field: how a value that is there becomes the field's value, and the line that
    # fills the field when the payload leaves it out (None: the field is required).
    converts = [
        _convert_lines(i, field.type, hook_for, passthrough, inline, namespace)
        for i, field in enumerate(fields)
    ]
    defaults = [_default_of(i, field, namespace) for i, field in enumerate(fields)]
    stores = [f"    obj.{field.name} = {v}" for field, v in zip(fields, names, strict=True)]
    build = ["    obj = _builder()", *stores, "    obj.__class__ = _cls", "    return obj"]

    # Field by field: what a payload without every key takes, and what a value that is
    # no JSON object reaches (every key at once fails on it with a TypeError). Refused
    # here, not left to the `in` tests below: `"id" in "junk"` and `"id" in ["id"]` are
    # True, and a string or a list without the keys would make a model of defaults.
    namespace["_Mapping"] = Mapping
    by_field: list[str] = [
        "    if type(o) is not dict and not isinstance(o, _Mapping):",
        "        raise TypeError(f'expected an object, not {type(o).__name__}')",
    ]
    for key, v, convert, default in zip(keys, names, converts, defaults, strict=True):
        if default is None:
            by_field.append(f"    {v} = o[{key!r}]")
            by_field.extend(f"    {line}" for line in convert)
        else:
            # `in` and a subscript, not `o.get(key, sentinel)`: a method call measured
            # more than the two specialised operations together.
            by_field.append(f"    if {key!r} in o:")
            by_field.append(f"        {v} = o[{key!r}]")
            by_field.extend(f"        {line}" for line in convert)
            by_field.append("    else:")
            by_field.append(f"        {default}")
    name = f"structure_{cls.__name__}"
    # The body of the items loop, one payload `o` (`build`'s lines are a function's).
    if len(fields) < 2:
        source = "\n".join([f"def {name}(o, _):", *by_field, *build, ""])
        each = [f"        append({name}(o, _cls))"]
    else:
        source = _with_every_key_at_once(name, names, converts, by_field, build)
        namespace["_every_key"] = operator.itemgetter(*keys)
        each = [
            *_every_key_lines(name, names, converts, "        ", "append({by_field}); continue"),
            *(f"    {line}" for line in build[:-1]),
            "        append(obj)",
        ]
    source += "\n".join(
        [
            f"def {name}_items(payloads):",
            "    out = []",
            "    append = out.append",
            "    for o in payloads:",
            "        if type(o) is not dict:",
            "            return None",
            *each,
            "    return tuple(out)",
            "",
        ]
    )
    return StructureFns(_compile(source, name, cls, namespace), namespace[f"{name}_items"])


def _every_key_lines(
    name: str, names: list[str], converts: list[list[str]], indent: str, fallback: str
) -> list[str]:
    # Every key at once, in C, when the payload has them all (the API's answers nearly
    # always do): one `itemgetter` call in place of an `in` test and a subscript per
    # field measured 0.5k instructions less for a `Flow`, 5k for a page of ten (callgrind).
    # A payload without some key goes field by field (`fallback` ends that path).
    return [
        f"{indent}try:",
        f"{indent}    {', '.join(names)} = _every_key(o)",
        f"{indent}except (KeyError, TypeError):  # what it answers, field by field",
        f"{indent}    {fallback.format(by_field=f'{name}_by_field(o)')}",
        *(f"{indent}{line}" for convert in converts for line in convert),
    ]


def _with_every_key_at_once(
    name: str,
    names: list[str],
    converts: list[list[str]],
    by_field: list[str],
    build: list[str],
) -> str:
    return "\n".join(
        [
            f"def {name}(o, _):",
            *_every_key_lines(name, names, converts, "    ", "return {by_field}"),
            *build,
            "",
            f"def {name}_by_field(o):",
            *by_field,
            *build,
            "",
        ]
    )


def _convert_lines(
    i: int,
    field_type: Any,
    hook_for: Callable[[Any], Callable[[Any, Any], Any]],
    passthrough: Passthrough,
    inline: Inline,
    namespace: dict[str, Any],
) -> list[str]:
    """The lines that make field `i`'s value `v{i}` what its hook would: nothing, type
    tests, inline code, or the hook."""
    v = f"v{i}"
    if field_type in passthrough and passthrough[field_type] is None:
        return []
    namespace[f"hook{i}"], namespace[f"type{i}"] = hook_for(field_type), field_type
    kept = passthrough.get(field_type)
    if field_type in inline:
        code, names = inline[field_type]
        namespace.update(names)
        namespace[f"recent{i}"] = [(None, None)]
        return code.format(v=v, hook=f"hook{i}({v}, type{i})", recent=f"recent{i}").splitlines()
    if kept:
        # `is` tests, not `type(v) not in a_set`: measured half the instructions.
        tests = [f"{v} is not None"] if type(None) in kept else []
        for j, kept_type in enumerate(t for t in kept if t is not type(None)):
            namespace[f"kept{i}_{j}"] = kept_type
            tests.append(f"type({v}) is not kept{i}_{j}")
        return [f"if {' and '.join(tests)}:", f"    {v} = hook{i}({v}, type{i})"]
    return [f"{v} = hook{i}({v}, type{i})"]


def _default_of(i: int, field: Any, namespace: dict[str, Any]) -> str | None:
    """The line that fills field `i` when the payload leaves it out; None if required."""
    if field.default is attrs.NOTHING:
        return None
    if isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
        namespace[f"default{i}"] = field.default.factory
        return f"v{i} = default{i}()"
    namespace[f"default{i}"] = field.default
    return f"v{i} = default{i}"


def _compile(source: str, name: str, cls: type[Any], namespace: dict[str, Any]) -> Any:
    filename = f"<aiodots generated structure {cls.__module__}.{cls.__qualname__}>"
    exec(compile(source, filename, "exec"), namespace)  # code made from the fields
    # Keep the source where tracebacks and inspect look for it, as attrs and cattrs do.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return namespace[name]


def make_constructor(cls: type[Any]) -> Callable[..., Any]:
    """`cls`'s fields in, a `cls` out, without its `__init__` (see `can_build`): for
    objects the client makes itself on every call, such as a `Page`, whose `__init__`
    measured 5.5k instructions for two fields, this 2k."""
    names = [a.name for a in attrs.fields(cls)]
    source = "\n".join(
        [
            f"def new_{cls.__name__}({', '.join(names)}):",
            "    obj = _builder()",
            *(f"    obj.{name} = {name}" for name in names),
            "    obj.__class__ = _cls",
            "    return obj",
            "",
        ]
    )
    namespace = {"_builder": _builder_of(cls), "_cls": cls}
    fn: Callable[..., Any] = _compile(source, f"new_{cls.__name__}", cls, namespace)
    return fn
