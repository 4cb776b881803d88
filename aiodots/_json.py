"""JSON encoding for the wire: orjson (a core dependency), or the stdlib `json` where
orjson cannot be imported (a platform without its wheels)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["dumps", "loads"]

dumps: Callable[[Any], bytes]
loads: Callable[[bytes], Any]

try:
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    _encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    def dumps(value: Any) -> bytes:
        return _encoder.encode(value).encode()

    def loads(raw: bytes) -> Any:
        # Decoding first skips json.loads' encoding sniffing; the API sends UTF-8.
        return json.loads(raw.decode("utf-8"))

else:
    dumps = orjson.dumps
    loads = orjson.loads
