"""`aiodots payouts bulk`: one payout per row, keys that survive any crash, and a resume
after SIGKILL that pays nobody twice."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

import aiodots
from aiodots.jobs import RowError, read_rows, run_job
from aiodots.payout_jobs import (
    batch_identity,
    payout_request,
    read_payout_rows,
    row_key,
    run_payout_job,
)
from aiodots.testing import DotsEmulator, FaultPlan

from .test_cli import records, run_cli


async def make_users(emulator: DotsEmulator, count: int) -> list[str]:
    async with aiodots.Client(**emulator.credentials, base_url=emulator.base_url) as dots:
        ids = []
        for n in range(count):
            user = await dots.users.create(
                first_name="Pay", last_name=f"Ee{n}", email=f"p{n}@example.com",
                country_code="1", phone_number="4155550100",
            )
            assert user.id is not None
            ids.append(user.id)
    return ids


def test_a_rows_key_depends_on_the_files_bytes_and_the_row(tmp_path: Path) -> None:
    a = tmp_path / "a.csv"
    a.write_text("user_id,amount\n")
    b = tmp_path / "b.csv"
    b.write_text("user_id,amount\n")
    c = tmp_path / "c.csv"
    c.write_text("user_id,amount\nx,1\n")
    assert batch_identity(str(a)) == batch_identity(str(b))  # same bytes, same batch
    assert batch_identity(str(a)) != batch_identity(str(c))
    identity = batch_identity(str(a))
    assert row_key(identity, 1) == row_key(identity, 1)
    assert row_key(identity, 1) != row_key(identity, 2)
    assert uuid.UUID(row_key(identity, 1)).version == 5


def test_standard_input_needs_a_batch_id() -> None:
    with pytest.raises(aiodots.ValidationError, match="batch-id"):
        batch_identity("-")
    assert batch_identity("-", "march-payroll") != batch_identity("-", "april-payroll")


def test_rows_become_payouts_or_payout_links() -> None:
    text = (
        '{"user_id": "3c90c3cc-0d44-4b50-8888-8dd25736052a", "amount": 1250}\n'
        '{"country_code": "1", "phone_number": "4155550100", "amount": 300, "memo": "hi"}\n'
        '{"amount": 5}\n'
        '{"user_id": "3c90c3cc-0d44-4b50-8888-8dd25736052a", "amount": 12.5}\n'
    )
    rows = list(read_payout_rows("-", stdin=io.StringIO(text)))
    k1, k2 = str(uuid.uuid4()), str(uuid.uuid4())
    payout = payout_request(rows[0][1], k1, default_platform="paypal")  # type: ignore[arg-type]
    assert isinstance(payout, aiodots.CreatePayout)
    assert (payout.amount, payout.platform, payout.idempotency_key) == (1250, "paypal", k1)
    link = payout_request(rows[1][1], k2)  # type: ignore[arg-type]
    assert isinstance(link, aiodots.PayoutSendRequest)
    assert link.payee == aiodots.PayoutSendRequestPayee(
        country_code="1", phone_number="4155550100"
    )
    with pytest.raises(RowError, match="user_id"):
        payout_request(rows[2][1], str(uuid.uuid4()))  # type: ignore[arg-type]
    assert isinstance(rows[3][1], RowError)
    assert "cents" in str(rows[3][1])


@pytest.mark.parametrize("cell", ["--5", "²", "5-", "1 000", "0x10", "+-3"])
def test_an_amount_that_is_not_whole_cents_is_that_rows_error_alone(
    tmp_path: Path, cell: str
) -> None:
    """One bad cell must not stop the job: each of these passed the old digit test, then
    int() raised outside the row and ended the whole run."""
    user = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
    source = tmp_path / "payouts.csv"
    source.write_text(f"user_id,amount\n{user},100\n{user},{cell}\n{user},-300\n")
    rows = list(read_payout_rows(str(source)))
    assert [number for number, _ in rows] == [1, 2, 3]
    assert rows[0][1]["amount"] == 100  # type: ignore[index]
    assert isinstance(rows[1][1], RowError)
    assert f"amount must be a whole number of cents, not {cell!r}" in str(rows[1][1])
    assert rows[2][1]["amount"] == -300  # type: ignore[index]




@pytest.mark.slow
async def test_payouts_bulk_pays_each_row_once_and_writes_one_line_per_row(
    dots_emulator: DotsEmulator, tmp_path: Path
) -> None:
    users = await make_users(dots_emulator, 3)
    source = tmp_path / "pay.csv"
    source.write_text(
        "user_id,amount,platform,metadata,country_code,phone_number\n"
        f"{users[0]},1000,paypal,\"{{\"\"run\"\": 1}}\",,\n"
        f"{users[1]},2000,,,,\n"
        f"{users[2]},-5,venmo,,,\n"
        ",700,,,1,4155550100\n"
    )
    output = tmp_path / "out.jsonl"
    code, _, err = await run_cli(
        dots_emulator, "payouts", "bulk", str(source), "-o", str(output), "--platform", "ach"
    )
    assert code == 1, err  # row 3 has a negative amount
    outcome = {r["row"]: r for r in records(output)}
    assert outcome[1]["ok"]
    assert outcome[1]["payout"]["amount"] == 1000
    assert outcome[2]["ok"]
    assert not outcome[3]["ok"]
    assert outcome[3]["error"]["type"] == "ValidationError"
    assert outcome[4]["ok"]
    assert outcome[4]["payout_link"]["amount"] == 700
    identity = batch_identity(str(source))
    assert [outcome[n]["idempotency_key"] for n in range(1, 5)] == [
        row_key(identity, n) for n in range(1, 5)
    ]
    assert dots_emulator.stats.created_by_resource["payouts"] == 2
    assert dots_emulator.stats.created_by_resource["payout_links"] == 1
    platforms = [t["type"] for t in dots_emulator.api.transfers.values()]
    assert platforms == ["payout", "payout"]

    # Running the same file again with a fresh output pays nobody again: same keys.
    again = tmp_path / "again.jsonl"
    code, _, _ = await run_cli(
        dots_emulator, "payouts", "bulk", str(source), "-o", str(again), "--platform", "ach"
    )
    assert code == 1
    assert dots_emulator.stats.created_by_resource["payouts"] == 2
    assert dots_emulator.stats.created_by_resource["payout_links"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("idempotency", ["replay", "reject"])
async def test_a_resume_after_sigkill_pays_every_row_exactly_once(
    tmp_path: Path, idempotency: str
) -> None:
    async with DotsEmulator(idempotency=idempotency) as emulator:  # type: ignore[arg-type]
        users = await make_users(emulator, 60)
        source = tmp_path / "pay.csv"
        source.write_text(
            "user_id,amount,platform\n"
            + "".join(f"{u},{100 + n},paypal\n" for n, u in enumerate(users))
        )
        output = tmp_path / "out.jsonl"
        # Answers lost after the payout was made (cut short, so the client waits and
        # retries with the same key): the kill lands while payouts exist that no line
        # records.
        emulator.set_faults(FaultPlan(latency=0.01))
        emulator.truncate_next(40)
        environment = {k: v for k, v in os.environ.items() if not k.startswith("DOTS_")}
        environment.update(
            DOTS_CLIENT_ID=emulator.client_id, DOTS_API_KEY=emulator.api_key,
            DOTS_BASE_URL=emulator.base_url,
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aiodots", "payouts", "bulk", str(source), "-o", str(output),
            "--concurrency", "8", stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, env=environment,
        )
        for _ in range(1500):  # at most 30 s
            if emulator.stats.created_by_resource["payouts"] >= 20:
                break
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), timeout=30)
        recorded = len(records(output)) if output.exists() else 0
        made = emulator.stats.created_by_resource["payouts"]
        assert made > recorded, "the kill should leave payouts made but not recorded"

        emulator.set_faults(FaultPlan())
        code, _, _ = await run_cli(emulator, "payouts", "bulk", str(source), "-o", str(output))
        assert code == 0, [r for r in records(output) if not r["ok"]][:3]

    ok_rows = Counter(r["row"] for r in records(output) if r["ok"])
    assert sorted(ok_rows) == list(range(1, 61))
    assert set(ok_rows.values()) == {1}
    assert emulator.stats.created_by_resource["payouts"] == 60
    paid = Counter(t["user_id"] for t in emulator.api.transfers.values())
    assert set(paid.values()) == {1}
    assert set(paid) == set(users)
    outcome = {r["row"]: r for r in records(output) if r["ok"]}
    for n, user in enumerate(users, start=1):
        assert outcome[n]["payout"]["user_id"] == user
        assert outcome[n]["payout"]["amount"] == 99 + n
    assert json.loads(json.dumps(outcome[1]))  # plain JSON lines


@pytest.mark.slow
async def test_users_create_get_and_list_print_json(dots_emulator: DotsEmulator) -> None:
    code, out, err = await run_cli(
        dots_emulator, "users", "create", "--first-name", "Ada", "--last-name", "L",
        "--email", "ada@example.com", "--country-code", "1", "--phone-number", "4155550100",
        "--metadata", '{"crm": 7}',
    )
    assert code == 0, err
    user = json.loads(out)
    assert user["metadata"] == {"crm": 7}
    code, out, _ = await run_cli(dots_emulator, "users", "get", user["id"])
    assert json.loads(out)["email"] == "ada@example.com"
    code, out, _ = await run_cli(dots_emulator, "users", "list")
    assert [json.loads(line)["id"] for line in out.splitlines()] == [user["id"]]
    code, _, err = await run_cli(dots_emulator, "users", "get", str(uuid.uuid4()))
    assert code == 1
    assert "404" in err


def payout_csv(*rows: tuple[str, str]) -> str:
    lines = [f"{user},{amount},paypal\n" for user, amount in rows]
    return "user_id,amount,platform\n" + "".join(lines)


async def test_an_output_written_for_another_batch_is_not_resumed(
    dots_emulator: DotsEmulator, tmp_path: Path
) -> None:
    # The first run pays rows 1 and 2 and records row 3 as bad. Then the file is edited
    # (row 3 fixed): its identity, and so every row's key, changes. Resuming that output
    # would send the unfinished rows with keys nothing deduplicates against (a row lost
    # to a crash mid-flight paid twice), and a row inserted above would shift the row
    # numbers the output records. Refused before anything is sent.
    users = await make_users(dots_emulator, 3)
    source = tmp_path / "pay.csv"
    source.write_text(payout_csv((users[0], "100"), (users[1], "200"), (users[2], "x")))
    output = tmp_path / "out.jsonl"
    async with aiodots.Client(**dots_emulator.credentials, base_url=dots_emulator.base_url) as dots:
        first = await run_payout_job(
            dots, read_payout_rows(str(source)), output, identity=batch_identity(str(source))
        )
        assert (first.ok, first.failed) == (2, 1)
        lines_before = output.read_text()

        source.write_text(payout_csv((users[0], "100"), (users[1], "200"), (users[2], "300")))
        with pytest.raises(aiodots.ValidationError, match="another batch"):
            await run_payout_job(
                dots, read_payout_rows(str(source)), output,
                identity=batch_identity(str(source)),
            )
        assert output.read_text() == lines_before
        assert dots_emulator.stats.created_by_resource["payouts"] == 2

        # The same batch named by --batch-id may change its rows: its keys go by row number.
        named = tmp_path / "named.jsonl"
        source.write_text(payout_csv((users[0], "100"), (users[1], "200"), (users[2], "x")))
        await run_payout_job(dots, read_payout_rows(str(source)), named, identity="batch:may")
        source.write_text(payout_csv((users[0], "100"), (users[1], "200"), (users[2], "300")))
        again = await run_payout_job(
            dots, read_payout_rows(str(source)), named, identity="batch:may"
        )
        assert (again.ok, again.skipped) == (1, 2)


@pytest.mark.slow
async def test_the_cli_refuses_to_resume_an_edited_file_as_a_usage_error(
    dots_emulator: DotsEmulator, tmp_path: Path
) -> None:
    users = await make_users(dots_emulator, 1)
    source = tmp_path / "pay.csv"
    source.write_text(payout_csv((users[0], "100")))
    output = tmp_path / "out.jsonl"
    code, _, err = await run_cli(dots_emulator, "payouts", "bulk", str(source), "-o", str(output))
    assert code == 0, err
    source.write_text(payout_csv((users[0], "100"), (users[0], "5")))
    code, _, err = await run_cli(dots_emulator, "payouts", "bulk", str(source), "-o", str(output))
    assert code == 2
    assert "another batch" in err
    assert "Traceback" not in err
    assert dots_emulator.stats.created_by_resource["payouts"] == 1


async def test_an_output_of_the_other_kind_of_job_is_not_resumed(
    dots_emulator: DotsEmulator, tmp_path: Path
) -> None:
    # A payouts run pointed at a flows job's output (or the reverse) took every row that
    # output recorded ok as paid: nobody was paid, and the run said "3 already ok" and
    # exited 0. Refused before anything is sent, as an output of another batch is.
    users = await make_users(dots_emulator, 3)
    flows_in, pay_in = tmp_path / "people.csv", tmp_path / "pay.csv"
    flows_in.write_text("user_id,steps\n" + "".join(f"{u},payout\n" for u in users))
    pay_in.write_text(payout_csv(*((u, "100") for u in users)))
    flows_out, pay_out = tmp_path / "flows.jsonl", tmp_path / "paid.jsonl"
    async with aiodots.Client(**dots_emulator.credentials, base_url=dots_emulator.base_url) as dots:
        assert (await run_job(dots, read_rows(str(flows_in)), flows_out)).ok == 3
        paid = await run_payout_job(
            dots, read_payout_rows(str(pay_in)), pay_out, identity=batch_identity(str(pay_in))
        )
        assert paid.ok == 3
        before = (flows_out.read_text(), pay_out.read_text())
        with pytest.raises(aiodots.ValidationError, match="another kind of job"):
            await run_payout_job(
                dots, read_payout_rows(str(pay_in)), flows_out,
                identity=batch_identity(str(pay_in)),
            )
        with pytest.raises(aiodots.ValidationError, match="another kind of job"):
            await run_job(dots, read_rows(str(flows_in)), pay_out)
        assert (flows_out.read_text(), pay_out.read_text()) == before
    assert dots_emulator.stats.created_by_resource["flows"] == 3
    assert dots_emulator.stats.created_by_resource["payouts"] == 3


def test_a_header_naming_a_column_twice_is_refused(tmp_path: Path) -> None:
    # Which `amount` was paid? The last one, silently: 10 cents, not 1000.
    source = tmp_path / "pay.csv"
    source.write_text("user_id,amount,platform,amount\nu,1000,paypal,10\n")
    with pytest.raises(aiodots.ValidationError, match="'amount' twice"):
        list(read_payout_rows(str(source)))


def test_a_row_with_more_cells_than_the_header_is_that_rows_error(tmp_path: Path) -> None:
    # An unquoted "1,000" made amount 1 and the "000" was dropped: 1 cent paid, exit 0.
    source = tmp_path / "pay.csv"
    source.write_text("user_id,platform,amount\nu,paypal,1,000\nv,paypal,5,,\n")
    rows = list(read_payout_rows(str(source)))
    assert isinstance(rows[0][1], RowError)
    assert "more cells than the header" in str(rows[0][1])
    assert rows[1][1]["amount"] == 5  # type: ignore[index]  # empty cells past it are harmless
