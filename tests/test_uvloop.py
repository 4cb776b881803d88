"""uvloop is the command line's choice, never the library's."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from aiodots import cli


def test_the_command_runs_on_uvloop_where_it_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uvloop = pytest.importorskip("uvloop")
    loops: list[type[asyncio.AbstractEventLoop]] = []

    async def which_loop() -> None:
        loops.append(type(asyncio.get_running_loop()))

    def command(prog_name: str) -> None:  # stands for click's `main`, which runs asyncio.run
        asyncio.run(which_loop())

    monkeypatch.setattr(cli, "main", command)
    try:
        cli.run()
    finally:
        asyncio.set_event_loop_policy(None)
    assert loops == [uvloop.Loop]


def test_the_library_installs_no_loop_policy() -> None:
    script = (
        "import asyncio, aiodots\n"
        "async def go():\n"
        "    async with aiodots.Client('id', 'key') as dots:\n"
        "        return type(asyncio.get_running_loop()).__module__\n"
        "print(type(asyncio.get_event_loop_policy()).__module__, asyncio.run(go()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=60
    ).stdout.split()
    assert [module.split(".")[0] for module in out] == ["asyncio", "asyncio"]
