"""Webhook verification, checked against Svix's own library as the independent reference:
what its signer signs verifies here, and what its verifier rejects is rejected here."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import svix.webhooks
from multidict import CIMultiDict
from starlette.datastructures import Headers

import aiodots
from aiodots.webhooks import (
    AppEvent,
    EventType,
    FlowEvent,
    PaymentIntentEvent,
    PayoutLinkEvent,
    TransferEvent,
    UserEvent,
    WebhookEvent,
    WebhookVerificationError,
    verify,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
MSG_ID = "msg_2bVs3gk1jQk7SSaSh0Vp1qMTrEZ"
BODY = '{"event": "flow.updated", "flow_id": "dfff6b89-6437-43be-b835-29fb4c04347c"}'


def signed_headers(
    *, msg_id: str = MSG_ID, body: str = BODY, secret: str = SECRET,
    at: datetime | None = None,
) -> dict[str, str]:
    """Headers exactly as Svix's signer makes them."""
    at = at or datetime.now(UTC)
    signature = svix.webhooks.Webhook(secret).sign(msg_id, at, body)
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(int(at.timestamp())),
        "svix-signature": signature,
    }


def svix_accepts(body: str, headers: dict[str, str], secret: str = SECRET) -> bool:
    try:
        svix.webhooks.Webhook(secret).verify(body, headers)
    except Exception:  # its verifier also fails with ValueError on some malformed headers
        return False
    return True


def we_accept(body: str, headers: dict[str, str], secret: str = SECRET) -> bool:
    try:
        verify(body.encode(), headers, secret)
    except WebhookVerificationError:
        return False
    return True


def _replace(headers: dict[str, str], **changes: str) -> dict[str, str]:
    return {**headers, **{k.replace("_", "-"): v for k, v in changes.items()}}


def _without(headers: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != name}


def _signature_only(headers: dict[str, str]) -> str:
    return headers["svix-signature"].partition(",")[2]


Tamper = Callable[[str, dict[str, str]], tuple[str, dict[str, str], str]]

TAMPERED: dict[str, Tamper] = {
    "changed body": lambda b, h: (b.replace("dfff", "eeee"), h, SECRET),
    "body with a trailing newline": lambda b, h: (b + "\n", h, SECRET),
    "changed id": lambda b, h: (b, _replace(h, svix_id="msg_other"), SECRET),
    "changed timestamp": lambda b, h: (
        b, _replace(h, svix_timestamp=str(int(h["svix-timestamp"]) + 1)), SECRET
    ),
    "timestamp six minutes old": lambda b, _: (
        b, signed_headers(at=datetime.now(UTC) - timedelta(minutes=6)), SECRET
    ),
    "timestamp six minutes ahead": lambda b, _: (
        b, signed_headers(at=datetime.now(UTC) + timedelta(minutes=6)), SECRET
    ),
    "timestamp not a number": lambda b, h: (b, _replace(h, svix_timestamp="soon"), SECRET),
    "wrong secret": lambda b, h: (b, h, OTHER_SECRET),
    "missing svix-id": lambda b, h: (b, _without(h, "svix-id"), SECRET),
    "missing svix-timestamp": lambda b, h: (b, _without(h, "svix-timestamp"), SECRET),
    "missing svix-signature": lambda b, h: (b, _without(h, "svix-signature"), SECRET),
    "no headers at all": lambda b, _: (b, {}, SECRET),
    "empty signature header": lambda b, h: (b, _replace(h, svix_signature=""), SECRET),
    "signature without a version": lambda b, h: (
        b, _replace(h, svix_signature=_signature_only(h)), SECRET
    ),
    "version without a signature": lambda b, h: (b, _replace(h, svix_signature="v1"), SECRET),
    "signature not base64": lambda b, h: (
        b, _replace(h, svix_signature="v1,!!not*base64!!"), SECRET
    ),
    "signature cut short": lambda b, h: (
        b, _replace(h, svix_signature=h["svix-signature"][:-8]), SECRET
    ),
    "the right signature under another version": lambda b, h: (
        b, _replace(h, svix_signature="v2," + _signature_only(h)), SECRET
    ),
    "several signatures, none valid": lambda b, h: (
        b,
        _replace(h, svix_signature="v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= v1,Zm9v"),
        SECRET,
    ),
    "a valid svix- signature is not read from the webhook- names when both are sent": (
        lambda b, h: (
            b,
            {
                **_replace(h, svix_signature="v1,Zm9v"),
                "webhook-signature": h["svix-signature"],
            },
            SECRET,
        )
    ),
}


@pytest.mark.parametrize("case", list(TAMPERED), ids=list(TAMPERED))
def test_what_svix_rejects_is_rejected(case: str) -> None:
    body, headers, secret = TAMPERED[case](BODY, signed_headers())
    assert not svix_accepts(body, headers, secret), "the case must be one Svix rejects"
    with pytest.raises(WebhookVerificationError):
        verify(body.encode(), headers, secret)


ACCEPTED: dict[str, Tamper] = {
    "as signed": lambda b, h: (b, h, SECRET),
    "several signatures, the valid one last": lambda b, h: (
        b, _replace(h, svix_signature="v1,Zm9vYmFy " + h["svix-signature"]), SECRET
    ),
    "several signatures, the valid one first": lambda b, h: (
        b, _replace(h, svix_signature=h["svix-signature"] + " v1,Zm9vYmFy"), SECRET
    ),
    "another version beside the valid v1": lambda b, h: (
        b, _replace(h, svix_signature="v1a,c2lnbmF0dXJl " + h["svix-signature"]), SECRET
    ),
    "Standard Webhooks header names": lambda b, h: (
        b, {k.replace("svix-", "webhook-"): v for k, v in h.items()}, SECRET
    ),
    "header names in capitals": lambda b, h: (b, {k.upper(): v for k, v in h.items()}, SECRET),
    "timestamp four minutes old": lambda b, _: (
        b, signed_headers(at=datetime.now(UTC) - timedelta(minutes=4)), SECRET
    ),
    "secret without its whsec_ prefix": lambda b, h: (b, h, SECRET.removeprefix("whsec_")),
    "a body that is not ASCII": lambda b, _: (
        '{"event": "flow.updated", "flow_id": "f", "note": "café ✓"}',
        signed_headers(body='{"event": "flow.updated", "flow_id": "f", "note": "café ✓"}'),
        SECRET,
    ),
}


@pytest.mark.parametrize("case", list(ACCEPTED), ids=list(ACCEPTED))
def test_what_svix_signs_and_accepts_is_accepted(case: str) -> None:
    body, headers, secret = ACCEPTED[case](BODY, signed_headers())
    assert svix_accepts(body, headers, secret)
    assert we_accept(body, headers, secret)


def test_a_verified_delivery_becomes_its_typed_event() -> None:
    at = datetime.now(UTC).replace(microsecond=0)
    event = verify(BODY.encode(), signed_headers(at=at), SECRET)
    assert event == FlowEvent(
        type="flow.updated",
        data={"event": "flow.updated", "flow_id": "dfff6b89-6437-43be-b835-29fb4c04347c"},
        delivery_id=MSG_ID,
        timestamp=at,
        flow_id="dfff6b89-6437-43be-b835-29fb4c04347c",
    )
    assert event.type == EventType.FLOW_UPDATED
    assert event.timestamp.tzinfo is not None


def test_a_str_payload_verifies_like_its_utf8_bytes() -> None:
    headers = signed_headers()
    assert verify(BODY, headers, SECRET) == verify(BODY.encode(), headers, SECRET)


def test_a_str_payload_utf8_cannot_encode_is_a_verification_error() -> None:
    """A lone surrogate (a body decoded with errors="surrogateescape", say) used to leak
    a UnicodeEncodeError from a function documented to raise only its own error."""
    with pytest.raises(WebhookVerificationError, match="not text UTF-8 can encode"):
        verify('{"event": "\udc80"}', signed_headers(), SECRET)


def test_every_kind_of_headers_mapping_is_read_in_any_case() -> None:
    headers = signed_headers()
    shouted = {k.upper(): v for k, v in headers.items()}
    for mapping in (
        CIMultiDict(shouted),  # aiohttp's request.headers
        Headers(headers=shouted),  # Starlette's / FastAPI's request.headers
        {"Svix-Id": MSG_ID, **{k: v for k, v in headers.items() if k != "svix-id"}},
    ):
        assert verify(BODY.encode(), mapping, SECRET).delivery_id == MSG_ID


def test_the_tolerance_is_configurable() -> None:
    headers = signed_headers(at=datetime.now(UTC) - timedelta(seconds=60))
    assert verify(BODY.encode(), headers, SECRET).delivery_id == MSG_ID
    with pytest.raises(WebhookVerificationError, match="old"):
        verify(BODY.encode(), headers, SECRET, tolerance=10)


@pytest.mark.parametrize("tolerance", [float("nan"), -1.0])
def test_a_tolerance_that_is_no_number_of_seconds_is_refused(tolerance: float) -> None:
    """A NaN tolerance compared false with every timestamp, so a delivery signed in
    1970 verified: replay protection off without a word (a tolerance parsed from a
    setting, say)."""
    ancient = signed_headers(at=datetime(1970, 1, 2, tzinfo=UTC))
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify(BODY.encode(), ancient, SECRET, tolerance=tolerance)

    async def on_event(event: WebhookEvent) -> None: ...

    with pytest.raises(WebhookVerificationError, match="tolerance"):
        aiodots.webhooks.aiohttp_handler(SECRET, on_event, tolerance=tolerance)


def test_our_signer_matches_svix() -> None:
    at = datetime.now(UTC)
    expected = svix.webhooks.Webhook(SECRET).sign(MSG_ID, at, BODY)
    assert aiodots.webhooks.sign(SECRET, MSG_ID, int(at.timestamp()), BODY.encode()) == expected


@pytest.mark.parametrize(
    "secret", ["whsec_not*base64*at*all", "whsec_", "", "whsec_QUJD!!"]
)
def test_a_malformed_secret_is_a_verification_error_that_never_shows_it(secret: str) -> None:
    with pytest.raises(WebhookVerificationError) as caught:
        verify(BODY.encode(), signed_headers(), secret)
    shown = str(caught.value) + repr(caught.value)
    assert "secret" in shown
    if secret.removeprefix("whsec_"):
        assert secret.removeprefix("whsec_") not in shown


def test_no_failure_message_shows_the_secret() -> None:
    raw = SECRET.removeprefix("whsec_")
    for case in TAMPERED.values():
        body, headers, secret = case(BODY, signed_headers())
        with pytest.raises(WebhookVerificationError) as caught:
            verify(body.encode(), headers, secret)
        assert raw not in str(caught.value)
        assert raw not in repr(caught.value)


def test_the_aiohttp_handler_refuses_a_malformed_secret_when_it_is_built() -> None:
    async def on_event(event: WebhookEvent) -> None: ...

    with pytest.raises(WebhookVerificationError, match="secret"):
        aiodots.webhooks.aiohttp_handler("whsec_***", on_event)


def test_it_is_a_dots_error_exported_from_the_package() -> None:
    assert aiodots.WebhookVerificationError is WebhookVerificationError
    assert issubclass(WebhookVerificationError, aiodots.DotsError)


@pytest.mark.parametrize("body", ["not json", "[1, 2]", '"flow.updated"', ""])
def test_a_signed_payload_that_is_not_a_json_object_is_refused(body: str) -> None:
    with pytest.raises(WebhookVerificationError, match="JSON"):
        verify(body.encode(), signed_headers(body=body), SECRET)


# -- events -----------------------------------------------------------------------------------


def _event(payload: dict[str, Any]) -> WebhookEvent:
    body = json.dumps(payload)
    return verify(body.encode(), signed_headers(body=body), SECRET)


@pytest.mark.parametrize(
    ("event_type", "cls", "id_field"),
    [
        ("flow.updated", FlowEvent, "flow_id"),
        ("flow.transaction_updated", FlowEvent, "flow_id"),
        ("transfer.updated", TransferEvent, "transfer_id"),
        ("transfer.completed", TransferEvent, "transfer_id"),
        ("transfer.failed", TransferEvent, "transfer_id"),
        ("payout_link.updated", PayoutLinkEvent, "payout_link_id"),
        ("payout_link.claimed", PayoutLinkEvent, "payout_link_id"),
        ("user.updated", UserEvent, "user_id"),
        ("user.updated.compliance", UserEvent, "user_id"),
        ("app.updated", AppEvent, "app_id"),
        ("payment_intent.updated", PaymentIntentEvent, "payment_intent_id"),
    ],
)
def test_each_documented_event_type_gets_its_class_and_id(
    event_type: str, cls: type[WebhookEvent], id_field: str
) -> None:
    event = _event({"event": event_type, id_field: "id-123"})
    assert type(event) is cls
    assert getattr(event, id_field) == "id-123"
    assert event.type == event_type


def test_every_documented_type_is_named_in_event_type() -> None:
    assert {t.value for t in EventType} >= {
        "flow.updated", "transfer.completed", "transfer.failed", "payout_link.claimed",
        "user.updated",
    }


def test_an_unknown_event_type_is_a_generic_event_with_all_its_data() -> None:
    event = _event({"event": "payout_batch.finished", "payout_batch_id": "b1", "count": 3})
    assert type(event) is WebhookEvent
    assert event.type == "payout_batch.finished"
    assert event.data == {"event": "payout_batch.finished", "payout_batch_id": "b1", "count": 3}


def test_unknown_fields_are_kept_and_a_new_type_of_a_known_resource_gets_its_id() -> None:
    event = _event({"event": "flow.expired", "flow_id": "f1", "reason": "timeout"})
    assert isinstance(event, FlowEvent)
    assert event.flow_id == "f1"
    assert event.data["reason"] == "timeout"


def test_an_event_missing_its_id_is_still_delivered_as_a_generic_event() -> None:
    event = _event({"event": "transfer.completed"})
    assert type(event) is WebhookEvent
    assert event.type == "transfer.completed"


def test_ids_nested_under_data_are_found() -> None:
    event = _event({"event": "transfer.failed", "data": {"transfer_id": "t9"}})
    assert isinstance(event, TransferEvent)
    assert event.transfer_id == "t9"


def test_a_payload_without_an_event_field_has_no_type() -> None:
    # Dots' own example for app.updated is just {"app_id": ...}.
    event = _event({"app_id": "5d9278aa-ddac-4df6-9063-696d32b3baf9"})
    assert event.type is None
    assert event.data["app_id"] == "5d9278aa-ddac-4df6-9063-696d32b3baf9"


def test_events_are_frozen_read_only_and_hashable_for_deduplication() -> None:
    body = json.dumps({"event": "flow.updated", "flow_id": "f1"})
    first = verify(body.encode(), signed_headers(body=body), SECRET)
    again = verify(body.encode(), signed_headers(body=body), SECRET)
    with pytest.raises(AttributeError):
        first.type = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        first.data["flow_id"] = "changed"  # type: ignore[index]
    assert first.delivery_id == again.delivery_id
    assert len({first.delivery_id, again.delivery_id}) == 1
    assert isinstance(hash(first), int)
