"""`python -m benchmarks profile` charges each function's time to the right layer."""

from __future__ import annotations

import cProfile
import pstats

import aiodots
from aiodots import _json
from aiodots.converter import structure_response
from benchmarks.profile import by_layer, layer_of

from .conftest import flow_json


def test_functions_are_charged_to_their_layers() -> None:
    assert layer_of(("/x/aiodots/transport.py", 1, "request")) == "aiodots.transport"
    assert layer_of(("<cattrs generated structure x>", 1, "f")) == "cattrs (generated and library)"
    assert layer_of(("<aiodots generated structure x>", 1, "f")) == (
        "aiodots.model_builder (generated)"
    )
    assert layer_of(("/venv/site-packages/aiohttp/client.py", 1, "f")) == "aiohttp client"
    assert layer_of(("~", 0, "<orjson.loads>")) == "json"
    assert layer_of(("~", 0, "<built-in method builtins.isinstance>")) is None  # to callers


def test_a_profile_is_split_by_layer() -> None:
    raw = _json.dumps(flow_json())
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(200):
        structure_response(_json.loads(raw), aiodots.Flow, method="GET", path="/v2/flows/f")
    profiler.disable()
    totals = by_layer(pstats.Stats(profiler))
    assert totals["aiodots.converter"] > 0
    assert totals["aiodots.model_builder (generated)"] > 0
    assert totals["json"] > 0
    assert "other C" not in totals or totals["other C"] < totals["aiodots.converter"]


def test_attrs_generated_methods_go_to_their_class_layer() -> None:
    batch_item = ("<attrs generated methods aiodots.batch.BatchItem>", 1, "__init__")
    flow = ("<attrs generated methods aiodots.models.flows.Flow>", 1, "__init__")
    assert layer_of(batch_item) == "aiodots.batch"
    assert layer_of(flow) == "aiodots.models"
