"""JSON encoding for the wire: orjson (a core dependency), or the stdlib `json` where
orjson cannot be imported (a platform without its wheels)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["dumps", "dumps_mappings", "loads"]

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

