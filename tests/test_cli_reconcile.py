"""`flows bulk` with reconciliation (the default), through the real entry point: one pass
completes every row through lost answers, and a resume after SIGKILL finds the rows the
killed run created instead of creating them again."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import aiodots
from aiodots.jobs import read_rows, run_job
from aiodots.reconcile import CALL_ID_KEY, Reconcile
from aiodots.testing import DotsEmulator, FaultPlan

from .test_cli import final_outcomes, records, run_cli

pytestmark = pytest.mark.slow


def people(tmp_path: Path, count: int) -> tuple[Path, list[str]]:
    users = [str(uuid.uuid4()) for _ in range(count)]
    source = tmp_path / "people.csv"
    source.write_text("user_id,steps\n" + "".join(f"{u},payout\n" for u in users))
    return source, users


def ok_rows(output: Path) -> Counter[int]:
    return Counter(r["row"] for r in records(output) if r["ok"])


async def test_one_pass_completes_every_row_through_lost_answers(
    dots_emulator: DotsEmulator, tmp_path: Path
) -> None:
    dots_emulator.set_faults(FaultPlan(reset_after_rate=0.08, reset_rate=0.03, seed=5))
    source, users = people(tmp_path, 150)
    output = tmp_path / "out.jsonl"
    code, _, err = await run_cli(
        dots_emulator, "flows", "bulk", str(source), "-o", str(output), "--concurrency", "8"
    )
    assert code == 0, err
    assert ok_rows(output) == Counter(range(1, 151))
    stats = dots_emulator.stats
    assert stats.created == 150
    assert stats.duplicates == 0
    assert set(stats.created_per_user) == set(users)
    reconciled = [r for r in records(output) if "reconciled" in r]
    assert {r["reconciled"] for r in reconciled} == {"found", "sent again"}
    assert f"{len(reconciled)} rows reconciled" in err
    # Each row's flow carries the row's call id: the job id from the job line, the row.
    job = json.loads(output.read_text().splitlines()[0])["job"]
    for record in records(output):
        assert record["flow"]["metadata"][CALL_ID_KEY] == f"{job['id']}:{record['row']}"


async def test_a_resume_after_sigkill_finds_the_rows_the_killed_run_created(
    dots_emulator: DotsEmulator, tmp_path: Path
) -> None:
    dots_emulator.set_faults(FaultPlan(latency=0.02, reset_after_rate=0.05, seed=3))
    source, users = people(tmp_path, 300)
    output = tmp_path / "out.jsonl"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DOTS_")}
    environment.update(
        DOTS_CLIENT_ID=dots_emulator.client_id, DOTS_API_KEY=dots_emulator.api_key,
        DOTS_BASE_URL=dots_emulator.base_url,
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiodots", "flows", "bulk", str(source), "-o", str(output),
        "--concurrency", "8", stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, env=environment,
    )
    async with asyncio.timeout(60):
        while dots_emulator.stats.created < 80:  # noqa: ASYNC110 - polling a counter
            await asyncio.sleep(0.01)
    proc.kill()  # SIGKILL: no handler runs, nothing more is recorded
    await asyncio.wait_for(proc.wait(), timeout=30)
    await asyncio.sleep(0.2)  # let the emulator finish what it had in hand
    recorded = ok_rows(output)
    assert len(recorded) < 300
    # The case this is about: flows the killed run created but never recorded.
    assert dots_emulator.stats.created > len(recorded)

    code, _, err = await run_cli(dots_emulator, "flows", "bulk", str(source), "-o", str(output))
    assert code == 0, err
    found = [r for r in records(output) if r.get("reconciled") == "found on resume"]
    assert found
    assert f"{len(found)} found created by an earlier run" in err
    assert ok_rows(output) == Counter(range(1, 301))  # every row ok, once
    stats = dots_emulator.stats
    assert stats.created == 300
    assert stats.duplicates == 0
    assert set(stats.created_per_user) == set(users)
    jobs = [json.loads(line)["job"] for line in output.read_text().splitlines()
            if line.startswith('{"job"')]
    assert len(jobs) == 2
    assert jobs[0]["id"] == jobs[1]["id"]  # the resume kept the job's id


async def test_text_metadata_fails_its_row_clearly_under_reconciliation(
    dots_emulator: DotsEmulator, tmp_path: Path
) -> None:
    source = tmp_path / "in.csv"
    source.write_text('steps,metadata\npayout,plain note\npayout,"{""a"": 1}"\n')
    output = tmp_path / "out.jsonl"
    code, _, _ = await run_cli(dots_emulator, "flows", "bulk", str(source), "-o", str(output))
    assert code == 1
    outcome = final_outcomes(output)
    assert outcome[1]["ok"] is False
    assert "metadata given as a string" in outcome[1]["error"]["message"]
    assert outcome[2]["ok"] is True
    assert dots_emulator.stats.created == 1


async def test_a_resume_whose_look_up_fails_sends_nothing(
    dots_emulator: DotsEmulator, tmp_path: Path
) -> None:
    source, _ = people(tmp_path, 3)
    output = tmp_path / "out.jsonl"
    output.write_text('{"job":{"id":"0123abcd","started":"2026-01-01T00:00:00+00:00"}}\n')
    dots_emulator.fail_next(status=403)
    code, _, err = await run_cli(dots_emulator, "flows", "bulk", str(source), "-o", str(output))
    assert code == 1
    assert "could not look up the rows an earlier run may have created" in err
    assert dots_emulator.stats.created == 0
    assert dots_emulator.stats.by_route["POST /api/v2/flows"] == 0


def start_resume(
    dots_emulator: DotsEmulator, tmp_path: Path, settle: float
) -> tuple[aiodots.Client, asyncio.Task[Any], Path]:
    """A job of 3 rows resumed (its output holds an earlier run's job line and no row),
    running in a task on a client of its own; and that output."""
    source, _ = people(tmp_path, 3)
    output = tmp_path / "out.jsonl"
    output.write_text('{"job":{"id":"0123abcd","started":"2026-01-01T00:00:00+00:00"}}\n')
    dots = aiodots.Client(**dots_emulator.credentials, base_url=dots_emulator.base_url)
    task = asyncio.create_task(run_job(
        dots, read_rows(str(source)), output, total=3, reconcile=Reconcile(settle=settle)
    ))
    return dots, task, output


async def close_ends_it_at_once(
    dots: aiodots.Client, task: asyncio.Task[Any], when: Callable[[], bool], within: float
) -> None:
    """Once `when()` holds, `close()` ends the job with ClientClosedError within `within`
    seconds."""
    try:
        async with asyncio.timeout(5):
            while not when():  # noqa: ASYNC110 - polling what the job has done
                await asyncio.sleep(0.01)
        async with asyncio.timeout(within):
            await dots.close()
            with pytest.raises(aiodots.ClientClosedError, match="nothing was sent"):
                await task
    finally:
        task.cancel()
        await dots.close()


async def test_closing_the_client_ends_a_resume_waiting_to_look_up_at_once(
    dots_emulator: DotsEmulator, tmp_path: Path
) -> None:
    """A resume waits `settle` before it looks up the rows a killed run may have created;
    `close()` left it waiting the whole settle, where every other wait of the client ends
    at once with ClientClosedError."""
    dots, task, output = start_resume(dots_emulator, tmp_path, settle=30.0)
    await close_ends_it_at_once(
        # This run's job line is written just before the settle begins.
        dots, task, lambda: output.read_text().count('"job"') >= 2,
        within=2,  # not the 30 s settle
    )
    assert dots_emulator.stats.requests == 0  # no look-up, no create, after the close
    assert records(output) == []


async def test_closing_the_client_during_a_resume_s_look_up_is_a_closed_client(
    dots_emulator: DotsEmulator, tmp_path: Path
) -> None:
    """Closed while the resume's scan waited for a page, the job ended as `LookupFailed`
    ("could not look up ... run again"), as if the API had failed, not as the close the
    caller made."""
    dots_emulator.set_faults(FaultPlan(latency=30.0))
    dots, task, output = start_resume(dots_emulator, tmp_path, settle=0.0)
    await close_ends_it_at_once(
        dots, task, lambda: dots_emulator.stats.in_flight >= 1,  # the scan's request
        within=5,  # not the 30 s the page takes
    )
    assert dots_emulator.stats.requests == 1  # the look-up's first page, and no create
    assert records(output) == []


async def test_no_reconcile_sends_plain_creates_and_writes_no_job_line(
    dots_emulator: DotsEmulator, tmp_path: Path
) -> None:
    source, _ = people(tmp_path, 3)
    output = tmp_path / "out.jsonl"
    code, _, err = await run_cli(
        dots_emulator, "flows", "bulk", str(source), "-o", str(output), "--no-reconcile"
    )
    assert code == 0, err
    assert all('"job"' not in line for line in output.read_text().splitlines())
    assert all(r["flow"]["metadata"] is None for r in records(output))


async def test_rerunning_a_finished_job_neither_sends_nor_looks_anything_up(
    dots_emulator: DotsEmulator, tmp_path: Path
) -> None:
    source, _ = people(tmp_path, 3)
    output = tmp_path / "out.jsonl"
    for _ in range(2):
        code, _, err = await run_cli(
            dots_emulator, "flows", "bulk", str(source), "-o", str(output)
        )
        assert code == 0, err
    assert "3 already ok from an earlier run" in err
    assert dots_emulator.stats.created == 3
    assert dots_emulator.stats.by_route["GET /api/v2/flows"] == 0
