"""The README's examples run as written, against the emulator."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

import aiodots
from aiodots.testing import DotsEmulator

README = Path(__file__).resolve().parents[1] / "README.md"


def block_after(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index(heading):]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None
    return match.group(1)


async def test_the_whole_v2_api_example_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "invoice.pdf").write_bytes(b"%PDF-1.4 invoice")
    code = block_after("### The whole v2 API")
    body = textwrap.indent(code.replace("...", "pass"), "    ")
    namespace: dict[str, Any] = {}
    exec(f"async def example(dots, rows):\n{body}", namespace)
    async with DotsEmulator() as emulator, aiodots.Client(
        **emulator.credentials, base_url=emulator.base_url
    ) as dots:
        user = await dots.users.create(
            first_name="A", last_name="B", email="a@example.com", country_code="1",
            phone_number="4155550100",
        )
        rows = [{"user_id": user.id, "amount": 100, "platform": "paypal"}]
        await namespace["example"](dots, rows)
    assert emulator.stats.by_status[400] == 0
    assert emulator.stats.created_by_resource["payouts"] == 2
    assert emulator.stats.created_by_resource["payout_links"] == 1
