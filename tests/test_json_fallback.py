"""Without orjson, the stdlib `json` writes the same request bytes."""

from __future__ import annotations

import importlib
import sys
from types import MappingProxyType

import pytest

import aiodots
from aiodots import _json
from aiodots.converter import unstructure_request


def test_the_stdlib_fallback_writes_what_orjson_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    body = unstructure_request(
        aiodots.CreateFlow(
            steps=["compliance", aiodots.FlowStep("payout", auto_payout_enabled=True)],
            metadata={"name": "Zoë", "n": [1, 2.5, None]},
        )
    )
    with_orjson = _json.dumps(body)
    monkeypatch.setitem(sys.modules, "orjson", None)  # import orjson now fails
    try:
        fallback = importlib.reload(_json)
        assert fallback.dumps.__module__ == "aiodots._json"  # the stdlib path, not orjson
        assert fallback.dumps(body) == with_orjson
        assert fallback.loads(with_orjson) == body
        odd = {"metadata": MappingProxyType({"a": MappingProxyType({"b": 1})})}
        assert fallback.dumps_mappings(odd) == b'{"metadata":{"a":{"b":1}}}'
        with pytest.raises(TypeError):
            fallback.dumps_mappings({"x": object()})
    finally:
        monkeypatch.undo()
        importlib.reload(_json)
    assert with_orjson == (
        b'{"steps":["compliance",{"name":"payout","auto_payout_enabled":true}],'
        b'"metadata":{"name":"Zo\xc3\xab","n":[1,2.5,null]}}'
    )
