"""The emulator's own behaviour, seen through raw aiohttp (not the client under test)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import aiohttp
import pytest

import aiodots
from aiodots.testing import DotsEmulator, FaultPlan, ServerRateLimit
from aiodots.testing.faults import TokenBucket
from aiodots.testing.spec import InvalidInput, load_spec

from .test_idempotency import make_user

pytest_plugins = ["pytester"]

USER = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
ACCOUNT = "5e2b7c1a-9d40-4f3e-8a61-0c7d2e9b4f18"  # a bank account paid to


class Raw:
    """A bare aiohttp caller with the emulator's credentials."""

    def __init__(self, emulator: DotsEmulator, session: aiohttp.ClientSession) -> None:
        token = base64.b64encode(f"{emulator.client_id}:{emulator.api_key}".encode()).decode()
        self.auth = f"Basic {token}"
        self.base = emulator.base_url
        self.session = session

    async def call(
        self, method: str, path: str, body: Any = None, *, auth: str | None = None,
        raw_body: bytes | None = None, params: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        headers = {"Authorization": auth if auth is not None else self.auth}
        data = raw_body if raw_body is not None else (
            None if body is None else json.dumps(body).encode()
        )
        async with self.session.request(
            method, self.base + path, data=data, headers=headers, params=params
        ) as response:
            text = await response.text()
            try:
                decoded = json.loads(text)
            except ValueError:
                decoded = text
            return response.status, decoded, dict(response.headers)


@pytest.fixture
async def raw(dots_emulator: DotsEmulator) -> AsyncIterator[Raw]:
    async with aiohttp.ClientSession() as session:
        yield Raw(dots_emulator, session)


async def test_create_then_retrieve_a_flow(raw: Raw, dots_emulator: DotsEmulator) -> None:
    status, flow, _ = await raw.call(
        "POST", "/v2/flows",
        {"steps": ["compliance", {"name": "redirect", "redirect_url": "https://a.io/x"}],
         "user_id": USER, "metadata": {"k": "v"}},
    )
    assert status == 200
    assert flow["steps"] == ["compliance", "redirect"]
    assert flow["user_id"] == USER
    assert flow["link"].endswith(flow["id"])
    assert flow["created"].endswith("Z")
    status, again, _ = await raw.call("GET", f"/v2/flows/{flow['id']}")
    assert (status, again) == (200, flow)
    assert dots_emulator.stats.created == 1
    assert dots_emulator.stats.created_per_user[USER] == 1


async def test_unknown_flow_is_404_in_json(raw: Raw) -> None:
    status, body, _ = await raw.call("GET", "/v2/flows/nope")
    assert status == 404
    assert body == {"error_code": "not-found", "message": "flow not found"}


@pytest.mark.parametrize(
    ("auth", "problem"),
    [
        ("", "missing Authorization header"),
        ("Bearer abc", "Basic scheme"),
        ("Basic !!!", "malformed"),
        ("Basic " + base64.b64encode(b"emulator-client-id:wrong").decode(), "invalid client id"),
    ],
)
async def test_bad_credentials_are_401(raw: Raw, dots_emulator: DotsEmulator, auth: str,
                                       problem: str) -> None:
    status, body, _ = await raw.call("POST", "/v2/flows", {"steps": ["payout"]}, auth=auth)
    assert status == 401
    assert problem in body["message"]
    assert dots_emulator.stats.created == 0


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({}, "'steps' is required"),
        ({"steps": []}, "'steps' is required"),
        ({"steps": ["bogus"]}, "'bogus' is not a valid step"),
        ({"steps": ["redirect"]}, "redirect_url"),
        ({"steps": [{"name": "redirect"}]}, "redirect_url"),
        ({"steps": [{"name": "redirect", "redirect_url": "nope"}]}, "redirect_url"),
        ({"steps": ["payout", "payout"]}, "must not repeat"),
        ({"steps": ["payout"], "user_id": "x"}, "UUID"),
        ({"steps": ["payout"], "require_auth": "yes"}, "boolean"),
        ({"steps": ["payout"], "metadata": 3}, "'metadata'"),
        ({"steps": ["payout"], "colour": "red"}, "unknown field"),
        ([1, 2], "JSON object"),
    ],
)
async def test_invalid_bodies_are_400_with_the_reason(
    raw: Raw, dots_emulator: DotsEmulator, body: Any, problem: str
) -> None:
    status, answer, _ = await raw.call("POST", "/v2/flows", body)
    assert status == 400
    assert answer["error_code"] == "invalid-input"
    assert problem in answer["message"]
    assert dots_emulator.stats.created == 0


async def test_a_body_that_is_not_json_is_400(raw: Raw) -> None:
    status, answer, _ = await raw.call("POST", "/v2/flows", raw_body=b"{nope")
    assert status == 400
    assert "not valid JSON" in answer["message"]


async def test_list_pages_newest_first_with_both_cursors(raw: Raw) -> None:
    ids = []
    for _ in range(5):
        ids.append((await raw.call("POST", "/v2/flows", {"steps": ["payout"]}))[1]["id"])
    newest_first = ids[::-1]
    _, page, _ = await raw.call("GET", "/v2/flows", params={"limit": "2"})
    assert [f["id"] for f in page["data"]] == newest_first[:2]
    assert page["has_more"] is True
    _, page, _ = await raw.call(
        "GET", "/v2/flows", params={"limit": "2", "starting_after": newest_first[3]}
    )
    assert [f["id"] for f in page["data"]] == newest_first[4:]
    assert page["has_more"] is False
    _, page, _ = await raw.call(
        "GET", "/v2/flows", params={"limit": "2", "ending_before": newest_first[3]}
    )
    assert [f["id"] for f in page["data"]] == newest_first[1:3]
    assert page["has_more"] is True
    status, _, _ = await raw.call("GET", "/v2/flows", params={"limit": "101"})
    assert status == 400


async def test_a_list_over_integer_ids_takes_them_as_cursors(raw: Raw) -> None:
    # Dots' document types the transactions list's cursors as UUIDs while a transaction's
    # id is an integer; a client paging by the ids it was given must not meet a 400.
    for cursor in ("17", "3c90c3cc-0d44-4b50-8888-8dd25736052a"):
        status, page, _ = await raw.call(
            "GET", "/v2/transactions", params={"limit": "2", "starting_after": cursor}
        )
        assert status == 200, page
    status, _, _ = await raw.call(
        "GET", "/v2/transactions", params={"ending_before": "seventeen"}
    )
    assert status == 400
    status, _, _ = await raw.call("GET", "/v2/flows", params={"starting_after": "17"})
    assert status == 400  # flows have UUIDs: the document's type stands


def test_a_null_the_document_allows_validates_and_a_wrong_type_is_refused() -> None:
    # The document writes some nullable types as `type: [object, null]` with YAML's bare
    # null, a type jsonschema does not know (`UnknownType`); read as the "null" type.
    spec = load_spec()
    op = spec.operations["GET /v2/users/{user_id}"]
    user = spec.example(op)
    user["compliance"]["w9"] = None
    spec.check_response(op, user)
    user["compliance"]["w9"] = 5
    with pytest.raises(InvalidInput, match="w9"):
        spec.check_response(op, user)


async def test_every_answer_announces_the_limit_a_cut_one_and_an_unknown_route_too(
    raw: Raw, dots_emulator: DotsEmulator
) -> None:
    dots_emulator.set_faults(
        FaultPlan(rate_limit=ServerRateLimit(rate=1000, burst=100, headers="x-ratelimit"))
    )
    dots_emulator.truncate_next(1)
    answers = [
        await raw.call("POST", "/v2/flows", {"steps": ["payout"]}),  # cut short
        await raw.call("GET", "/v2/no-such-thing"),
        await raw.call("DELETE", "/v2/flows"),
    ]
    assert [status for status, _, _ in answers] == [200, 404, 405]
    for _, _, headers in answers:
        assert headers.get("X-RateLimit-Limit") == "1000", headers


async def test_fail_next_answers_the_status_without_processing(
    raw: Raw, dots_emulator: DotsEmulator
) -> None:
    dots_emulator.fail_next(2, status=503, retry_after="3")
    for _ in range(2):
        status, body, headers = await raw.call("POST", "/v2/flows", {"steps": ["payout"]})
        assert status == 503
        assert headers["Retry-After"] == "3"
        assert body["error_code"] == "service-unavailable"
    status, _, _ = await raw.call("POST", "/v2/flows", {"steps": ["payout"]})
    assert status == 200
    assert dots_emulator.stats.created == 1
    assert dots_emulator.stats.by_status == {503: 2, 200: 1}


async def test_html_502_and_truncated_bodies(raw: Raw, dots_emulator: DotsEmulator) -> None:
    dots_emulator.fail_next(status=502, body="html")
    status, body, headers = await raw.call("GET", "/v2/flows")
    assert status == 502
    assert headers["Content-Type"].startswith("text/html")
    assert "<title>502 Bad Gateway</title>" in body
    dots_emulator.truncate_next()
    status, body, _ = await raw.call("POST", "/v2/flows", {"steps": ["payout"]})
    assert status == 200
    assert isinstance(body, str)
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)
    assert dots_emulator.stats.created == 1  # processed, then cut: the dangerous case


async def test_reset_next_drops_the_connection_before_processing(
    raw: Raw, dots_emulator: DotsEmulator
) -> None:
    dots_emulator.reset_next()
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await raw.call("POST", "/v2/flows", {"steps": ["payout"]})
    assert dots_emulator.stats.resets == 1
    assert dots_emulator.stats.created == 0
    status, _, _ = await raw.call("POST", "/v2/flows", {"steps": ["payout"]})
    assert status == 200


@pytest.mark.parametrize("form", ["seconds", "http-date", "none"])
async def test_server_rate_limit_answers_429_after_the_burst(
    raw: Raw, dots_emulator: DotsEmulator, form: str
) -> None:
    dots_emulator.set_faults(
        FaultPlan(rate_limit=ServerRateLimit(rate=1, burst=3, retry_after=form))  # type: ignore[arg-type]
    )
    statuses = []
    for _ in range(5):
        status, _, headers = await raw.call("GET", "/v2/flows")
        statuses.append(status)
    assert statuses == [200, 200, 200, 429, 429]
    if form == "seconds":
        assert headers["Retry-After"] == "1"
    elif form == "http-date":
        assert parsedate_to_datetime(headers["Retry-After"]).tzinfo is not None
    else:
        assert "Retry-After" not in headers


async def test_a_server_quota_announces_its_window_and_refuses_once_spent(
    raw: Raw, dots_emulator: DotsEmulator
) -> None:
    dots_emulator.set_faults(FaultPlan(rate_limit=ServerRateLimit(
        rate=100, burst=100, headers="ietf", quota=3, quota_window=86400,
    )))
    answers = [await raw.call("GET", "/v2/flows") for _ in range(4)]
    assert [status for status, _, _ in answers] == [200, 200, 200, 429]
    _, _, first = answers[0]
    assert first["RateLimit-Policy"] == '"default";q=100;w=1, "quota";q=3;w=86400'
    assert first["RateLimit"].endswith(', "quota";r=2;t=86400')
    _, _, refused = answers[3]
    assert refused["RateLimit"].endswith(', "quota";r=0;t=86400')
    assert 86398 <= int(refused["Retry-After"]) <= 86400  # the rest of the window


def test_a_quota_window_ends_and_the_next_one_starts_whole() -> None:
    clock = [0.0]
    bucket = TokenBucket(
        ServerRateLimit(rate=10, burst=10, quota=2, quota_window=100.0), clock=lambda: clock[0]
    )
    assert [bucket.take(), bucket.take()] == [None, None]
    assert bucket.take() == pytest.approx(100.0)
    clock[0] = 250.0  # two windows on: the third began at 200
    assert bucket.take() is None
    assert bucket.take() is None
    assert bucket.take() == pytest.approx(50.0)


def test_a_standalone_quota_needs_a_rate_limit(capsys: pytest.CaptureFixture[str]) -> None:
    from aiodots.testing.__main__ import parse_args, plan_from

    limit = plan_from(parse_args(["--rate-limit", "5", "--quota", "7"])).rate_limit
    assert limit is not None
    assert (limit.quota, limit.quota_window) == (7, 86400)
    with pytest.raises(SystemExit) as exited:
        parse_args(["--quota", "7"])
    assert exited.value.code == 2
    assert "--rate-limit" in capsys.readouterr().err


async def test_random_errors_follow_the_rate_and_the_seed(
    raw: Raw, dots_emulator: DotsEmulator
) -> None:
    dots_emulator.set_faults(FaultPlan(error_rate=0.5, error_status=500, seed=7))
    statuses = [(await raw.call("GET", "/v2/flows"))[0] for _ in range(200)]
    assert 60 < statuses.count(500) < 140
    assert set(statuses) == {200, 500}


async def test_latency_is_added_before_answering(raw: Raw, dots_emulator: DotsEmulator) -> None:
    dots_emulator.set_faults(FaultPlan(latency=0.2))
    started = time.monotonic()
    await raw.call("GET", "/v2/flows")
    assert time.monotonic() - started >= 0.2


async def test_counters_and_the_last_request_are_recorded(
    raw: Raw, dots_emulator: DotsEmulator
) -> None:
    await asyncio.gather(*(raw.call("POST", "/v2/flows", {"steps": ["payout"]}) for _ in range(5)))
    await raw.call("GET", "/v2/flows/unknown")
    stats = dots_emulator.stats
    assert stats.requests == 6
    assert stats.by_route == {"POST /api/v2/flows": 5, "GET /api/v2/flows/{flow_id}": 1}
    assert stats.by_status == {200: 5, 404: 1}
    assert stats.last_request.method == "GET"
    assert stats.last_requests[0].json() == {"steps": ["payout"]}
    assert stats.max_in_flight >= 1
    assert stats.in_flight == 0


async def test_the_plugin_client_is_wired_to_the_plugin_emulator(
    dots_client: Any, dots_emulator: DotsEmulator
) -> None:
    flow = await dots_client.flows.create(steps=["compliance"])
    assert dots_emulator.flows[flow.id]["steps"] == ["compliance"]


def test_standalone_emulator_prints_its_url_and_serves(tmp_path: Any) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiodots.testing", "--port", "0", "--rate-limit", "50"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("DOTS_BASE_URL=http://127.0.0.1:")
        base_url = line.split("=", 1)[1]

        async def one_call() -> int:
            token = base64.b64encode(b"emulator-client-id:emulator-api-key").decode()
            async with aiohttp.ClientSession() as session, session.post(
                f"{base_url}/v2/flows", json={"steps": ["payout"]},
                headers={"Authorization": f"Basic {token}"},
            ) as response:
                return response.status

        assert asyncio.run(one_call()) == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "created 1 flows" in err
    assert proc.returncode == 0


def test_a_users_suite_gets_the_fixtures_from_the_installed_plugin(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import aiodots
        async def test_user(dots_client, dots_emulator):
            flow = await dots_client.flows.create(steps=["compliance"])
            assert dots_emulator.stats.created == 1
            dots_emulator.fail_next(1, status=503)
            await dots_client.flows.retrieve(flow.id)
            assert dots_emulator.stats.by_status[503] == 1
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", "asyncio_mode=auto")
    result.assert_outcomes(passed=1)


async def test_faults_after_processing_create_the_flow_and_lose_or_spoil_the_answer(
    raw: Raw, dots_emulator: DotsEmulator
) -> None:
    dots_emulator.reset_after_next()
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await raw.call("POST", "/v2/flows", {"steps": ["payout"]})
    assert dots_emulator.stats.created == 1  # processed, then dropped
    assert dots_emulator.stats.resets == 1
    dots_emulator.fail_after_next(status=502)
    status, _, _ = await raw.call("POST", "/v2/flows", {"steps": ["payout"]})
    assert status == 502
    assert dots_emulator.stats.created == 2
    status, _, _ = await raw.call("POST", "/v2/flows", {"steps": ["payout"]})
    assert status == 200
    assert dots_emulator.stats.created == 3


async def test_reset_after_rate_strikes_creates_only(
    raw: Raw, dots_emulator: DotsEmulator
) -> None:
    dots_emulator.set_faults(FaultPlan(reset_after_rate=1.0))
    status, _, _ = await raw.call("GET", "/v2/flows")
    assert status == 200  # a read is never struck
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await raw.call("POST", "/v2/flows", {"steps": ["payout"]})
    assert dots_emulator.stats.created == 1


def test_the_standalone_emulator_takes_resets_after_processing() -> None:
    from aiodots.testing.__main__ import parse_args, plan_from

    plan = plan_from(parse_args(["--reset-after-rate", "0.1", "--reset-rate", "0.02"]))
    assert plan.reset_after_rate == 0.1
    assert plan.reset_rate == 0.02


async def test_truncate_next_waits_for_a_successful_answer_with_a_body(
    raw: Raw, dots_emulator: DotsEmulator
) -> None:
    # "the next successful requests": an error answer in between is neither cut nor
    # allowed to use the fault up, or the create the test aims at arrives whole.
    dots_emulator.truncate_next()
    status, body, _ = await raw.call("GET", "/v2/flows/nope")
    assert (status, body) == (404, {"error_code": "not-found", "message": "flow not found"})
    status, body, _ = await raw.call("POST", "/v2/flows", {"steps": ["payout"]})
    assert status == 200
    assert isinstance(body, str)  # cut short: not JSON
    assert dots_emulator.stats.created == 1


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_pad_next_pads_a_successful_answer_to_the_size_asked(
    raw: Raw, dots_emulator: DotsEmulator, chunked: bool
) -> None:
    dots_emulator.pad_next(size=200_000, chunked=chunked)
    status, _, _ = await raw.call("GET", "/v2/flows/nope")  # an error does not spend it
    assert status == 404
    status, flow, headers = await raw.call("POST", "/v2/flows", {"steps": ["payout"]})
    assert status == 200
    assert flow["steps"] == ["payout"]  # still the answer, as JSON
    if chunked:
        assert "Content-Length" not in headers
        assert headers["Transfer-Encoding"] == "chunked"
    else:
        assert headers["Content-Length"] == "200000"
    stats = dots_emulator.stats
    assert (stats.padded_bytes_sent, stats.padded_cut_off, stats.created) == (200_000, 0, 1)
    status, _, headers = await raw.call("GET", f"/v2/flows/{flow['id']}")
    assert int(headers["Content-Length"]) < 1000  # once only


async def test_pad_next_stops_writing_when_the_client_hangs_up(
    raw: Raw, dots_emulator: DotsEmulator
) -> None:
    endless = 1024**4  # a TiB: never sent, only as much as the client reads
    dots_emulator.pad_next(size=endless, chunked=True)
    async with raw.session.get(
        raw.base + "/v2/flows", headers={"Authorization": raw.auth}
    ) as response:
        assert response.status == 200
        await response.content.readexactly(1024**2)
        response.close()
    stats = dots_emulator.stats
    async with asyncio.timeout(10):
        while not stats.padded_cut_off:  # noqa: ASYNC110 - polling a counter
            await asyncio.sleep(0.01)
    assert 1024**2 <= stats.padded_bytes_sent < 64 * 1024**2
    assert (stats.in_flight, stats.by_status) == (0, {200: 1})


async def test_an_oversized_body_is_a_counted_json_413(
    raw: Raw, dots_emulator: DotsEmulator
) -> None:
    big = io.BytesIO(b" " * (1024**2 + 1))  # over the 1 MiB the emulator reads
    async with raw.session.post(
        raw.base + "/v2/flows", data=big, headers={"Authorization": raw.auth}
    ) as response:
        assert response.status == 413
        assert (await response.json())["error_code"] == "payload-too-large"
    stats = dots_emulator.stats
    assert (stats.requests, stats.by_status, stats.in_flight) == (1, {413: 1}, 0)


async def test_a_repeated_key_gets_the_first_answer_even_after_the_transfer_moved_on(
    raw: Raw, dots_emulator: DotsEmulator
) -> None:
    _, user, _ = await raw.call("POST", "/v2/users", {
        "first_name": "Ada", "last_name": "L", "email": "ada@example.com",
        "country_code": "1", "phone_number": "4155550100",
    })
    body = {"user_id": user["id"], "amount": 500, "platform": "paypal",
            "idempotency_key": "6f1c0a4e-3b7d-4c51-9a8e-2d4b5f6a7c80"}
    status, first, _ = await raw.call("POST", "/v2/payouts", body)
    assert (status, first["status"]) == (201, "pending")
    dots_emulator.set_transfer_status(first["id"], "completed")
    status, again, _ = await raw.call("POST", "/v2/payouts", body)
    assert (status, again) == (201, first)
    _, now, _ = await raw.call("GET", f"/v2/transfers/{first['id']}")
    assert now["status"] == "completed"


@pytest.mark.parametrize("platform", ["paypal", "venmo", "ach", "cash_app"])
async def test_a_payout_answers_the_platform_it_was_sent_through(
    raw: Raw, dots_emulator: DotsEmulator, dots_client: aiodots.Client,
    platform: Literal["paypal", "venmo", "ach", "cash_app"],
) -> None:
    """The transfer a payout answers says in `external_data.platform` where the money
    went: each of these is a value the document allows there. It used to say nothing,
    and the model read None."""
    dots_emulator.api.check_responses = True  # the answers fit the document too
    user_id = await make_user(dots_client)
    account = {"account_id": ACCOUNT} if platform == "ach" else {}
    transfer = await dots_client.payouts.create(
        user_id=user_id, amount=500, platform=platform, account_id=account.get("account_id")
    )
    assert transfer.external_data is not None
    assert transfer.external_data.platform == platform
    assert transfer.external_data.account_id == account.get("account_id")
    retrieved = await dots_client.transfers.retrieve(transfer.id or "")
    assert retrieved.external_data == transfer.external_data

    status, answered, _ = await raw.call(
        "POST", "/v2/payouts", {"user_id": user_id, "amount": 500, "platform": platform, **account}
    )
    assert status == 201
    assert answered["external_data"] == {"platform": platform, **account}
    _, stored, _ = await raw.call("GET", f"/v2/transfers/{answered['id']}")
    assert stored["external_data"] == answered["external_data"]


async def test_a_payout_to_the_default_method_answers_the_users_default_platform(
    raw: Raw, dots_emulator: DotsEmulator, dots_client: aiodots.Client
) -> None:
    """`default` is no platform of a transfer's: the payout goes through the user's
    default payout method, and says which."""
    dots_emulator.api.check_responses = True
    user_id = await make_user(dots_client)
    user = await dots_client.users.update(user_id, default_payout_method="venmo")
    assert user.default_payout_method == "venmo"
    transfer = await dots_client.payouts.create(user_id=user_id, amount=500, platform="default")
    assert transfer.external_data is not None
    assert transfer.external_data.platform == "venmo"
    status, answered, _ = await raw.call(
        "POST", "/v2/payouts", {"user_id": user_id, "amount": 500, "platform": "default"}
    )
    assert (status, answered["external_data"]) == (201, {"platform": "venmo"})


async def test_a_bank_transfer_payout_names_no_platform_the_document_does_not_give(
    raw: Raw, dots_emulator: DotsEmulator, dots_client: aiodots.Client
) -> None:
    """A transfer's platforms do not include `bank_transfer`, and the document does not
    say which of them (ach, intl_bank, wire?) such a payout answers: none is made up."""
    dots_emulator.api.check_responses = True
    user_id = await make_user(dots_client)
    transfer = await dots_client.payouts.create(
        user_id=user_id, amount=500, platform="bank_transfer", account_id=ACCOUNT
    )
    assert transfer.external_data is not None
    assert transfer.external_data.platform is None
    assert transfer.external_data.account_id == ACCOUNT
    _, answered, _ = await raw.call("GET", f"/v2/transfers/{transfer.id}")
    assert answered["external_data"] == {"account_id": ACCOUNT}


async def test_a_payout_without_a_platform_is_refused(
    raw: Raw, dots_emulator: DotsEmulator, dots_client: aiodots.Client
) -> None:
    user_id = await make_user(dots_client)
    status, body, _ = await raw.call("POST", "/v2/payouts", {"user_id": user_id, "amount": 500})
    assert status == 400
    assert "'platform' is a required property" in body["message"]
    assert dots_emulator.api.transfers == {}


def test_the_standalone_emulator_takes_both_idempotency_readings_and_failures_after() -> None:
    from aiodots.testing.__main__ import emulator_from, parse_args

    assert emulator_from(parse_args([])).api.idempotency == "replay"
    args = parse_args(["--idempotency", "reject", "--fail-after-rate", "0.1",
                       "--fail-after-status", "504"])
    emulator = emulator_from(args)
    assert emulator.api.idempotency == "reject"
    assert (emulator.faults.fail_after_rate, emulator.faults.fail_after_status) == (0.1, 504)


def test_standalone_settings_out_of_range_are_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from aiodots.testing.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(["--error-rate", "2"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "error_rate" in err
    assert "Traceback" not in err


def test_a_standalone_rate_limit_of_zero_is_a_usage_error_not_no_limit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `--rate-limit 0` used to start a server with no limit at all, as if the flag had
    # been left out, while -1 was refused: a limit is above 0, or not given.
    from aiodots.testing.__main__ import parse_args

    with pytest.raises(SystemExit) as exited:
        parse_args(["--rate-limit", "0"])
    assert exited.value.code == 2
    assert "'rate' must be > 0" in capsys.readouterr().err


def test_standalone_port_in_use_says_so_without_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import socket

    from aiodots.testing.__main__ import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exited:
            main(["--port", str(port)])
    said = exited.value.code  # a message: printed to stderr, exit status 1
    assert isinstance(said, str)
    assert said.startswith(f"python -m aiodots.testing: cannot listen on 127.0.0.1:{port}: ")
    assert "address already in use" in said
    assert "Traceback" not in capsys.readouterr().err


def test_the_emulators_argument_types_are_importable_from_the_package() -> None:
    # A suite that passes DotsEmulator(idempotency=mode, ...) with a typed variable
    # names these types; they come from where DotsEmulator does.
    import typing

    import aiodots.testing as testing

    assert typing.get_args(testing.IdempotencyMode) == ("replay", "reject")
    assert {"IdempotencyMode", "ListOrder"} <= set(testing.__all__)
