"""JSON encoding for the wire: orjson (a core dependency), or the stdlib `json` where
orjson cannot be imported (a platform without its wheels)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["dumps", "dumps_mappings", "loads", "loads_lenient"]

dumps: Callable[[Any], bytes]
loads: Callable[[bytes], Any]


def _as_dict(value: object) -> dict[Any, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


try:
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    _encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    def dumps(value: Any) -> bytes:
        return _encoder.encode(value).encode()

    def loads(raw: bytes) -> Any:
        # Decoding first skips json.loads' encoding sniffing; the API sends UTF-8.
        return json.loads(raw.decode("utf-8"))

    _mappings_encoder = json.JSONEncoder(
        ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_as_dict
    )

    def dumps_mappings(value: Any) -> bytes:
        return _mappings_encoder.encode(value).encode()

else:
    dumps = orjson.dumps
    loads = orjson.loads

    def dumps_mappings(value: Any) -> bytes:
        return orjson.dumps(value, default=_as_dict)


dumps_mappings.__doc__ = """`dumps` for a value holding mappings that are not dicts (a
`MappingProxyType` in metadata, say), which neither encoder writes itself: written as
JSON objects. For the rare body `dumps` refused, so that every other body pays nothing;
still a `TypeError` for what no mapping explains (an integer past 64 bits for orjson)."""


#: Half of a surrogate pair. The stdlib decoder joins an escaped pair into its character,
#: so one left in a decoded string was escaped alone.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse(value: str) -> Any:
    raise ValueError(f"{value} is not JSON")


def _finite(text: str) -> float:
    number = float(text)
    if number in (math.inf, -math.inf):
        raise ValueError(f"{text} is too large for a float")
    return number


def _replace_surrogates(value: Any) -> Any:
    if type(value) is str:
        return _SURROGATE.sub("\ufffd", value)
    if type(value) is list:
        return [_replace_surrogates(item) for item in value]
    if type(value) is dict:
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    return value


def loads_lenient(raw: bytes) -> Any:
    """`loads` again for a body it refused, for what JSON's grammar allows and orjson does
    not: a `\\uXXXX` escape of half a surrogate pair (RFC 8259 section 8.2), which a server
    that cuts a string between the halves of an emoji writes (JavaScript's
    `JSON.stringify` does). Each such half becomes U+FFFD, as a broken UTF-8 sequence
    would: a string holding it could be neither printed as UTF-8 nor written by orjson.
    Only on that rare path, so that every other answer pays nothing. A `ValueError` still
    for what is no JSON, NaN and numbers past a float's range included, as orjson."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_refuse, parse_float=_finite)
        return _replace_surrogates(value)
    except RecursionError:  # the stdlib's nesting limit, where orjson's is a ValueError
        raise ValueError("the JSON is nested too deeply") from None
