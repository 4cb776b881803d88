"""The command line through its real entry point (`python -m aiodots`), against the
emulator running in the test's own loop (so subprocesses are awaited, never blocking)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trustme

from aiodots.testing import DotsEmulator, FaultPlan

from .network_fixtures import ConnectProxy, basic, serve_tls

pytestmark = pytest.mark.slow


async def run_cli(
    emulator: DotsEmulator | None, *args: str, stdin: bytes | None = None,
    env: dict[str, str] | None = None,
) -> tuple[int, str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DOTS_")}
    if emulator is not None:
        environment.update(
            DOTS_CLIENT_ID=emulator.client_id, DOTS_API_KEY=emulator.api_key,
            DOTS_BASE_URL=emulator.base_url,
        )
    environment.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiodots", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=environment,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def records(path: Path) -> list[dict[str, Any]]:
    """The row lines of an output (job lines, which record each run's start, left out)."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [line for line in lines if "job" not in line]


def final_outcomes(path: Path) -> dict[int, dict[str, Any]]:
    outcome: dict[int, dict[str, Any]] = {}
    for record in records(path):
        outcome[record["row"]] = record
    return outcome


async def test_flows_create_and_get_print_the_flow_as_json(dots_emulator: DotsEmulator) -> None:
    code, out, _ = await run_cli(
        dots_emulator, "flows", "create", "--steps", "compliance,id-verification",
        "--metadata", '{"campaign": "spring"}', "--require-auth",
    )
    assert code == 0
    flow = json.loads(out)
    assert flow["steps"] == ["compliance", "id-verification"]
    assert flow["metadata"] == {"campaign": "spring"}
    assert dots_emulator.stats.last_request.json()["require_auth"] is True
    code, out, _ = await run_cli(dots_emulator, "flows", "get", flow["id"])
    assert code == 0
    assert json.loads(out) == flow


async def test_a_missing_flow_exits_1_with_the_error(dots_emulator: DotsEmulator) -> None:
    code, out, err = await run_cli(dots_emulator, "flows", "get", "no-such-flow")
    assert code == 1
    assert out == ""
    assert "404 flow not found" in err


async def test_a_failed_create_says_what_reconciliation_knows_of_it(
    dots_emulator: DotsEmulator,
) -> None:
    """A create answered 502, then not looked up (the list answered 502 too), may have
    created the user: the CLI printed the 502 alone, and an operator who ran it again
    could make a second user."""
    dots_emulator.set_faults(FaultPlan(error_rate=1.0, error_status=502))
    code, out, err = await run_cli(
        dots_emulator, "users", "create", "--first-name", "Ada", "--last-name", "Lovelace",
        "--email", "ada@example.com", "--country-code", "1", "--phone-number", "5555550100",
        "--reconcile",
    )
    assert code == 1
    assert out == ""
    error, note = err.splitlines()
    assert error.startswith("error: 502")
    assert note.startswith("note: reconciliation could not look call ")
    # Sent once (a 502 may have created it), then looked up: a request and its retries.
    routes = {route.replace("/api", "", 1): n for route, n in dots_emulator.stats.by_route.items()}
    assert routes == {"POST /v2/users": 1, "GET /v2/users": 4}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("flows", "create", "--steps", "complience"), "unknown step 'complience'"),
        (("flows", "get", " "), "flow_id must be a non-empty string"),
        (("users", "get", ".."), "cannot be an id"),
    ],
)
async def test_input_refused_before_sending_is_a_usage_error(
    dots_emulator: DotsEmulator, args: tuple[str, ...], says: str
) -> None:
    # Exit status 2, as for any other mistake on the command line; 1 is for calls the
    # API (or the network) failed, which a script may want to retry.
    code, out, err = await run_cli(dots_emulator, *args)
    assert code == 2, err
    assert out == ""
    assert says in err
    assert "Traceback" not in err
    assert dots_emulator.stats.requests == 0


async def test_missing_credentials_are_a_usage_error_and_nothing_is_sent(
    dots_emulator: DotsEmulator,
) -> None:
    code, _, err = await run_cli(
        None, "--base-url", dots_emulator.base_url, "flows", "get", "x"
    )
    assert code == 2
    assert "DOTS_CLIENT_ID and DOTS_API_KEY" in err
    assert dots_emulator.stats.requests == 0


async def test_proxy_sends_the_command_through_an_egress_proxy(
    ca: trustme.CA, tmp_path: Path
) -> None:
    """`--proxy` (or DOTS_PROXY) reaches the client: the command's call goes through the
    proxy's tunnel to the API over TLS, trusted through SSL_CERT_FILE as a user behind a
    corporate CA would."""
    emulator = DotsEmulator()
    runner, port = await serve_tls(emulator, ca)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    try:
        async with ConnectProxy("egress:s3cret") as proxy:
            code, out, err = await run_cli(
                emulator, "--proxy", f"http://egress:s3cret@127.0.0.1:{proxy.port}",
                "flows", "create", "--steps", "payout",
                env={"DOTS_BASE_URL": f"https://127.0.0.1:{port}/api",
                     "SSL_CERT_FILE": str(bundle)},
            )
            code_bad, _, err_bad = await run_cli(
                emulator, "flows", "get", "f-1",
                env={"DOTS_BASE_URL": f"https://127.0.0.1:{port}/api",
                     "DOTS_PROXY": f"http://egress:hunter2@127.0.0.1:{proxy.port}",
                     "SSL_CERT_FILE": str(bundle)},
            )
    finally:
        await runner.cleanup()
    assert (code, err) == (0, "")
    assert emulator.flows[json.loads(out)["id"]]["steps"] == ["payout"]
    assert proxy.asked[0] == ("CONNECT", f"127.0.0.1:{port}", basic("egress:s3cret"))
    assert emulator.stats.requests == 1  # the second command's tunnel was refused
    assert code_bad == 1
    assert "the proxy refused to connect: 407" in err_bad
    assert "hunter2" not in err_bad


async def test_bulk_csv_writes_one_line_per_row_and_reports_bad_rows(
    dots_emulator: DotsEmulator, tmp_path: Path
) -> None:
    users = [str(uuid.uuid4()) for _ in range(4)]
    source = tmp_path / "people.csv"
    source.write_text(
        "user_id,steps,metadata,require_auth,hide_go_to_dashboard_on_complete,email\n"
        f"{users[0]},compliance;id-verification,\"{{\"\"team\"\": \"\"a\"\"}}\",true,,a@x.io\n"
        f"{users[1]},,plain note,,yes,b@x.io\n"
        f"{users[2]},bogus-step,,,,c@x.io\n"
        f"{users[3]},payout,,maybe,,d@x.io\n"
        "not-a-uuid,payout,,,,e@x.io\n"
    )
    output = tmp_path / "out.jsonl"
    code, _, err = await run_cli(
        dots_emulator, "flows", "bulk", str(source), "--output", str(output),
        "--steps", "compliance", "--no-reconcile",  # row 2's text metadata cannot be tagged
    )
    assert code == 1
    lines = records(output)
    assert sorted(r["row"] for r in lines) == [1, 2, 3, 4, 5]
    by_row = {r["row"]: r for r in lines}
    assert by_row[1]["ok"]
    assert by_row[1]["flow"]["metadata"] == {"team": "a"}
    assert by_row[2]["ok"]
    assert by_row[2]["flow"]["metadata"] == "plain note"
    assert by_row[2]["flow"]["steps"] == ["compliance"]  # --steps filled the empty cell
    for row in (3, 4, 5):
        assert by_row[row]["ok"] is False
        assert by_row[row]["error"]["type"] in ("ValidationError", "RowError")
    assert "unknown step 'bogus-step'" in by_row[3]["error"]["message"]
    assert "require_auth must be true or false" in by_row[4]["error"]["message"]
    assert dots_emulator.stats.created == 2
    sent = [json.loads(r.body) for r in dots_emulator.stats.last_requests]
    assert {"steps": ["compliance", "id-verification"], "user_id": users[0],
            "metadata": {"team": "a"}, "require_auth": True} in sent
    assert "done: 2 ok, 3 failed" in err


async def test_bulk_jsonl_from_stdin_is_not_a_terminal_so_it_prints_plain_lines(
    dots_emulator: DotsEmulator, tmp_path: Path
) -> None:
    lines = [json.dumps({"steps": ["payout"], "user_id": str(uuid.uuid4())}) for _ in range(30)]
    lines.insert(5, "{not json")
    output = tmp_path / "out.jsonl"
    code, out, err = await run_cli(
        dots_emulator, "flows", "bulk", "-", "--output", str(output), "--concurrency", "4",
        stdin=("\n".join(lines) + "\n").encode(),
    )
    assert code == 1
    outcomes = final_outcomes(output)
    assert len(outcomes) == 31
    assert outcomes[6]["ok"] is False
    assert "not valid JSON" in outcomes[6]["error"]["message"]
    assert dots_emulator.stats.created == 30
    assert out == ""
    assert "progress: " in err
    assert "\x1b[" not in err  # no terminal escapes when not on a terminal


async def test_bulk_exits_0_when_every_row_is_ok(
    dots_emulator: DotsEmulator, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"steps": "compliance;payout"}) + "\n" for _ in range(10)))
    output = tmp_path / "out.jsonl"
    code, _, err = await run_cli(
        dots_emulator, "flows", "bulk", str(source), "-o", str(output), "--rate", "50"
    )
    assert code == 0, err
    assert all(r["ok"] for r in records(output))


async def test_an_interrupted_bulk_run_resumes_and_every_row_ends_ok_exactly_once(
    dots_emulator: DotsEmulator, tmp_path: Path
) -> None:
    dots_emulator.set_faults(FaultPlan(latency=0.02))
    users = [str(uuid.uuid4()) for _ in range(300)]
    source = tmp_path / "in.csv"
    source.write_text("user_id,steps\n" + "".join(f"{u},payout\n" for u in users))
    output = tmp_path / "out.jsonl"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DOTS_")}
    environment.update(
        DOTS_CLIENT_ID=dots_emulator.client_id, DOTS_API_KEY=dots_emulator.api_key,
        DOTS_BASE_URL=dots_emulator.base_url,
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiodots", "flows", "bulk", str(source), "-o", str(output),
        "--concurrency", "8", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=environment,
    )
    while dots_emulator.stats.created < 60:  # noqa: ASYNC110 - polling a counter
        await asyncio.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 1
    assert "interrupted" in err.decode()
    first = records(output)
    assert 60 <= len(first) < 300
    assert dots_emulator.stats.created == len(first)  # in-flight rows finished and recorded

    dots_emulator.set_faults(FaultPlan())
    code, _, err2 = await run_cli(dots_emulator, "flows", "bulk", str(source), "-o", str(output))
    assert code == 0, err2
    assert f"{len(first)} already ok from an earlier run" in err2
    ok_lines = Counter(r["row"] for r in records(output) if r["ok"])
    assert sorted(ok_lines) == list(range(1, 301))
    assert set(ok_lines.values()) == {1}
    assert dots_emulator.stats.created == 300
    assert dots_emulator.stats.duplicates == 0
    assert set(dots_emulator.stats.created_per_user) == set(users)


async def test_resume_ignores_a_line_cut_short_by_a_crash(
    dots_emulator: DotsEmulator, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"steps": ["payout"]}) + "\n" for _ in range(3)))
    output = tmp_path / "out.jsonl"
    output.write_text('{"row": 1, "ok": true, "flow": {}}\n{"row": 2, "ok": tr')
    code, _, err = await run_cli(dots_emulator, "flows", "bulk", str(source), "-o", str(output))
    assert code == 0, err
    assert dots_emulator.stats.created == 2
    valid = []
    for line in output.read_text().splitlines():
        try:
            valid.append(json.loads(line))
        except ValueError:
            continue
    assert sorted(r["row"] for r in valid if r.get("ok")) == [1, 2, 3]


async def test_an_unknown_input_format_is_a_usage_error(tmp_path: Path) -> None:
    source = tmp_path / "in.xlsx"
    source.write_text("x")
    code, _, err = await run_cli(
        None, "flows", "bulk", str(source), "-o", str(tmp_path / "o.jsonl"),
        env={"DOTS_CLIENT_ID": "i", "DOTS_API_KEY": "k"},
    )
    assert code == 2
    assert ".csv or .jsonl" in err


async def test_demo_creates_every_flow_once_through_faults() -> None:
    code, out, err = await run_cli(
        None, "demo", "--flows", "400", "--rate-limit", "400", "--reset-rate", "0.01"
    )
    assert code == 0, err
    assert "result: 400/400 rows ok; the emulator created 400 flows for 400 users" in out
    assert "nothing lost: yes; nothing duplicated: yes" in out


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["flows", "bulk", "{src}", "-o", "{out}", "--rate", "nan"], "is not a finite number"),
        (["flows", "bulk", "{src}", "-o", "/nonexistent/dir/out.jsonl"], "no such directory"),
        (["payouts", "bulk", "{src}", "-o", "/nonexistent/dir/out.jsonl"], "no such directory"),
        (["flows", "bulk", "{src}", "-o", "{out}", "--steps", "complaince"],
         "--steps: unknown step 'complaince'"),
        (["flows", "bulk", "{src}", "-o", "{out}", "--redis", "redis://:s3cr#t@127.0.0.1:1/0"],
         "--redis: not a Redis URL that can be used: '***@127.0.0.1:1/0'"),
        (["demo", "--flows", "5", "--error-rate", "2"], "is not in the range 0<=x<=1"),
        (["demo", "--flows", "5", "--redis", "redis://:s3cr#t@127.0.0.1:1/0"],
         "--redis: not a Redis URL"),
    ],
    ids=["rate-nan", "flows-output-dir", "payouts-output-dir", "steps-typo", "redis-url",
         "demo-share", "demo-redis-url"],
)
async def test_a_bad_argument_is_a_usage_error_before_anything_runs(
    dots_emulator: DotsEmulator, tmp_path: Path, args: list[str], says: str
) -> None:
    """Each of these ended in a traceback, or ran first and failed every row."""
    source = tmp_path / "in.jsonl"
    source.write_text("{}\n")
    filled = [a.format(src=source, out=tmp_path / "out.jsonl") for a in args]
    code, out, err = await run_cli(dots_emulator, *filled)
    assert code == 2
    assert says in err
    assert "Traceback" not in err
    assert "s3cr" not in err + out
    assert dots_emulator.stats.requests == 0
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize(
    ("command", "content", "says"),
    [
        ("flows", b"user_id,steps,metadata\n,payout,caf\xe9\n", "cannot read"),
        ("payouts", b"user_id,amount,memo\nu,5,caf\xe9\n", "cannot read"),
        ("flows", b"steps,metadata\npayout," + b"x" * 200_000 + b"\n", "field larger"),
    ],
    ids=["flows-latin-1", "payouts-latin-1", "flows-long-cell"],
)
async def test_an_input_that_cannot_be_read_is_a_usage_error_before_anything_is_sent(
    dots_emulator: DotsEmulator, tmp_path: Path, command: str, content: bytes, says: str
) -> None:
    """A file saved as Latin-1, or a cell past the csv module's limit, ended in a traceback."""
    source = tmp_path / "in.csv"
    source.write_bytes(content)
    code, _, err = await run_cli(
        dots_emulator, command, "bulk", str(source), "-o", str(tmp_path / "out.jsonl")
    )
    assert code == 2
    assert says in err
    assert "Traceback" not in err
    assert dots_emulator.stats.requests == 0


@pytest.mark.slow
async def test_an_output_is_not_resumed_with_another_input(
    dots_emulator: DotsEmulator, tmp_path: Path
) -> None:
    # Rows are recorded by number: resumed with another file, the output's ok rows would
    # be skipped as done though this file's rows were never sent (and a resume's
    # look-up would file flows made for other rows under them). Refused, nothing sent.
    output = tmp_path / "out.jsonl"
    first = tmp_path / "march.csv"
    first.write_text("user_id,steps\n" + "".join(f"{uuid.uuid4()},payout\n" for _ in range(3)))
    code, _, err = await run_cli(dots_emulator, "flows", "bulk", str(first), "-o", str(output))
    assert code == 0, err
    served = dots_emulator.stats.requests
    april = [str(uuid.uuid4()) for _ in range(4)]
    second = tmp_path / "april.csv"
    second.write_text("user_id,steps\n" + "".join(f"{user},payout\n" for user in april))
    code, _, err = await run_cli(dots_emulator, "flows", "bulk", str(second), "-o", str(output))
    assert code == 2
    assert "another input" in err
    assert "row 1" in err
    assert dots_emulator.stats.requests == served
    # From standard input the check is made as rows are read: it stops there.
    jsonl = "".join(json.dumps({"user_id": user, "steps": ["payout"]}) + "\n" for user in april)
    code, _, err = await run_cli(
        dots_emulator, "flows", "bulk", "-", "-o", str(output), stdin=jsonl.encode()
    )
    assert code == 2, err
    assert "another input" in err
    assert dots_emulator.stats.created == 3


@pytest.mark.slow
async def test_a_row_that_failed_may_be_fixed_and_resumed(
    dots_emulator: DotsEmulator, tmp_path: Path
) -> None:
    users = [str(uuid.uuid4()) for _ in range(3)]
    source = tmp_path / "people.csv"
    source.write_text(f"user_id,steps\n{users[0]},payout\n{users[1]},payout\n{users[2]},bogus\n")
    output = tmp_path / "out.jsonl"
    code, _, _ = await run_cli(dots_emulator, "flows", "bulk", str(source), "-o", str(output))
    assert code == 1
    source.write_text(f"user_id,steps\n{users[0]},payout\n{users[1]},payout\n{users[2]},payout\n")
    code, _, err = await run_cli(dots_emulator, "flows", "bulk", str(source), "-o", str(output))
    assert code == 0, err
    assert "1 ok" in err
    assert "2 already ok" in err
    assert dots_emulator.stats.created == 3
