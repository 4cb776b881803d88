"""Verifying webhook deliveries from Dots, and turning them into typed events.

Dots delivers webhooks through Svix. A delivery is genuine when one of the `v1,<base64>`
entries of its `svix-signature` header is the HMAC-SHA256, keyed with the endpoint's
secret (base64 after `whsec_`), of `"{svix-id}.{svix-timestamp}.{raw body}"`, and its
timestamp is within `tolerance` seconds of now (so a captured delivery cannot be replayed
later). The `webhook-id` / `-timestamp` / `-signature` names of Standard Webhooks, which
Svix sends as well, are read when the `svix-` ones are missing, as Svix's own verifier
does.

`verify` is pure: bytes and headers in, an event out. `verify_request` and
`aiohttp_handler` wrap it for aiohttp.web servers; any other framework calls `verify`
with the raw body (the bytes as received: re-serialised JSON no longer verifies).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .errors import WebhookVerificationError
from .models.events import (
    AppEvent,
    EventType,
    FlowEvent,
    PaymentIntentEvent,
    PayoutLinkEvent,
    TransferEvent,
    UserEvent,
    WebhookEvent,
    event_from_payload,
)

__all__ = [
    "DEFAULT_TOLERANCE",
    "AppEvent",
    "EventType",
    "FlowEvent",
    "PaymentIntentEvent",
    "PayoutLinkEvent",
    "TransferEvent",
    "UserEvent",
    "WebhookEvent",
    "WebhookVerificationError",
    "aiohttp_handler",
    "sign",
    "verify",
    "verify_request",
]

#: seconds a delivery's timestamp may be off from now (Svix's own verifier uses 5 minutes)
DEFAULT_TOLERANCE = 300
_SECRET_PREFIX = "whsec_"
#: (the Svix name, the Standard Webhooks name) for each header: Svix's verifier prefers
#: the first when both are present
_ID = ("svix-id", "webhook-id")
_TIMESTAMP = ("svix-timestamp", "webhook-timestamp")
_SIGNATURE = ("svix-signature", "webhook-signature")

Secret = str | bytes


def verify(
    payload: bytes | str,
    headers: Mapping[str, str],
    secret: Secret,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> WebhookEvent:
    """Check a delivery's signature and timestamp, then return its event.

    `payload` is the raw request body (a `str` is taken as its UTF-8 encoding, as Svix
    does). `headers` is any mapping: aiohttp's and Starlette's headers, or a plain dict in
    any case. `secret` is the endpoint's signing secret, `whsec_...` (or the raw key
    bytes). Raises `WebhookVerificationError` for anything that does not verify.
    """
    try:
        body = payload.encode() if isinstance(payload, str) else bytes(payload)
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 bytes were signed as it
        raise WebhookVerificationError("the payload is not text UTF-8 can encode") from None
    key = _key_from(secret)
    _check_tolerance(tolerance)
    found = _lowercased(headers)
    msg_id, raw_timestamp, signatures = (_header(found, names) for names in (
        _ID, _TIMESTAMP, _SIGNATURE))
    if not (msg_id and raw_timestamp and signatures):
        raise WebhookVerificationError(
            "missing webhook headers: svix-id, svix-timestamp and svix-signature are required"
        )
    seconds = _check_timestamp(raw_timestamp, tolerance)
    expected = _digest(key, msg_id, seconds, body)
    if not any(hmac.compare_digest(expected, given) for given in _v1_signatures(signatures)):
        raise WebhookVerificationError("no signature in svix-signature matches the payload")
    try:
        decoded = json.loads(body)
    except ValueError:
        raise WebhookVerificationError("the signed payload is not JSON") from None
    if not isinstance(decoded, dict):
        raise WebhookVerificationError("the signed payload is not a JSON object")
    return event_from_payload(
        decoded, delivery_id=msg_id, timestamp=datetime.fromtimestamp(seconds, UTC)
    )


def sign(secret: Secret, msg_id: str, timestamp: int, payload: bytes | str) -> str:
    """The `svix-signature` value Svix would send (`v1,<base64>`); for tests and for the
    emulator's sender."""
    body = payload.encode() if isinstance(payload, str) else bytes(payload)
    digest = _digest(_key_from(secret), msg_id, timestamp, body)
    return "v1," + base64.b64encode(digest).decode()


async def verify_request(
    request: web.Request, secret: Secret, *, tolerance: float = DEFAULT_TOLERANCE
) -> WebhookEvent:
    """Read an aiohttp.web request's raw body and verify it. A delivery that does not
    verify raises `web.HTTPBadRequest` (aiohttp answers 400 with the reason), so a
    handler can be just `event = await verify_request(request, SECRET)`."""
    body = await request.read()
    try:
        return verify(body, request.headers, secret, tolerance=tolerance)
    except WebhookVerificationError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None


def aiohttp_handler(
    secret: Secret,
    on_event: Callable[[WebhookEvent], Awaitable[Any]],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp.web handler for a webhook route: `app.router.add_post("/webhooks/dots",
    aiohttp_handler(SECRET, on_event))`.

    Answers 400 to a delivery that does not verify, awaits `on_event(event)` for one that
    does, then answers 204. An exception from `on_event` becomes a 500, and Svix delivers
    the message again later (with the same `delivery_id`). A malformed secret raises
    `WebhookVerificationError` here, when the app is built, rather than turning every
    delivery into a 400.
    """
    _key_from(secret)
    _check_tolerance(tolerance)

    async def handle(request: web.Request) -> web.StreamResponse:
        await on_event(await verify_request(request, secret, tolerance=tolerance))
        return web.Response(status=204)

    return handle


# -- the pieces -----------------------------------------------------------------------------


def _key_from(secret: Secret) -> bytes:
    if isinstance(secret, bytes):
        key = secret
    elif isinstance(secret, str):
        encoded = secret.strip().removeprefix(_SECRET_PREFIX)
        try:
            # Svix accepts unpadded secrets: pad, then decode strictly.
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            # Never echo the secret: an error message may end up in a log.
            raise WebhookVerificationError(
                "the webhook secret is not base64 after its 'whsec_' prefix"
            ) from None
    else:
        raise WebhookVerificationError(
            f"the webhook secret must be str or bytes, not {type(secret).__name__}"
        )
    if not key:
        raise WebhookVerificationError("the webhook secret is empty")
    return key


def _lowercased(headers: Mapping[str, str]) -> dict[str, str]:
    # CIMultiDict and Starlette's Headers already match in any case; a plain dict does
    # not, so every mapping is read through one lower-cased copy, as Svix does.
    return {str(name).lower(): value for name, value in headers.items()}


def _header(headers: Mapping[str, str], names: tuple[str, str]) -> str:
    svix_name, standard_name = names
    return headers.get(svix_name, headers.get(standard_name, "")) or ""


def _check_tolerance(tolerance: float) -> None:
    # NaN compares false with every timestamp: replay protection would be off, unsaid.
    if not tolerance >= 0:
        raise WebhookVerificationError(
            f"the webhook tolerance must be a number of seconds >= 0, not {tolerance!r}"
        )


def _check_timestamp(raw: str, tolerance: float) -> int:
    """The timestamp as whole seconds (Svix signs `floor(timestamp)`), if within tolerance."""
    try:
        value = float(raw)
    except ValueError:
        raise WebhookVerificationError("svix-timestamp is not a number") from None
    if not math.isfinite(value):
        raise WebhookVerificationError("svix-timestamp is not a number")
    now = time.time()
    if value < now - tolerance:
        raise WebhookVerificationError(
            f"the delivery's timestamp is {now - value:.0f} s old (the tolerance is "
            f"{tolerance:g} s): a replay, or a clock far off"
        )
    if value > now + tolerance:
        raise WebhookVerificationError(
            f"the delivery's timestamp is {value - now:.0f} s in the future (the tolerance "
            f"is {tolerance:g} s)"
        )
    return math.floor(value)


def _digest(key: bytes, msg_id: str, seconds: int, body: bytes) -> bytes:
    signed = f"{msg_id}.{seconds}.".encode() + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def _v1_signatures(header: str) -> list[bytes]:
    """The decoded `v1` entries. Entries of other versions, and ones that cannot be read,
    are skipped: they cannot match, and a newer scheme beside v1 must not break us."""
    found = []
    for entry in header.split():
        version, comma, encoded = entry.partition(",")
        if version != "v1" or not comma:
            continue
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found
