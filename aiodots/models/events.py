"""Webhook events: what a verified delivery from Dots becomes.

Dots documents flat payloads that name the event and carry ids only:
`{"event": "flow.updated", "flow_id": "..."}`. The resource before the first dot picks
the class (`flow.*` -> `FlowEvent`, ...), so an event type added later for a known
resource still gets its id; anything else becomes a plain `WebhookEvent`. Nothing is
dropped: `data` always holds the whole payload, unknown fields included.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

import attrs

__all__ = [
    "AppEvent",
    "EventType",
    "FlowEvent",
    "PaymentIntentEvent",
    "PayoutLinkEvent",
    "TransferEvent",
    "UserEvent",
    "WebhookEvent",
    "event_from_payload",
]


class EventType(enum.StrEnum):
    """The event types Dots documents. `event.type` is a plain string, so types this
    version does not know arrive as they are; these compare equal to it."""

    APP_UPDATED = "app.updated"
    FLOW_UPDATED = "flow.updated"
    FLOW_TRANSACTION_UPDATED = "flow.transaction_updated"
    PAYMENT_INTENT_UPDATED = "payment_intent.updated"
    PAYOUT_LINK_UPDATED = "payout_link.updated"
    PAYOUT_LINK_CLAIMED = "payout_link.claimed"
    TRANSFER_UPDATED = "transfer.updated"
    TRANSFER_COMPLETED = "transfer.completed"
    TRANSFER_FAILED = "transfer.failed"
    USER_UPDATED = "user.updated"


def _read_only(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


@attrs.frozen(kw_only=True)
class WebhookEvent:
    """One verified delivery. Also the event for types this version does not know.

    `delivery_id` is the `svix-id` header: every retry of one message carries the same
    one, so it is the key to deduplicate on. `timestamp` is when this attempt was signed.
    """

    #: the payload's `event` field (`"flow.updated"`, ...), or None when it names none
    type: str | None
    #: the whole JSON object Dots sent, read-only
    data: Mapping[str, Any] = attrs.field(converter=_read_only, hash=False)
    delivery_id: str
    timestamp: datetime


@attrs.frozen(kw_only=True)
class FlowEvent(WebhookEvent):
    """`flow.updated` (a person completed steps), `flow.transaction_updated`, `flow.*`."""

    flow_id: str


@attrs.frozen(kw_only=True)
class TransferEvent(WebhookEvent):
    """`transfer.updated`, `transfer.completed`, `transfer.failed`, `transfer.*`."""

    transfer_id: str


@attrs.frozen(kw_only=True)
class PayoutLinkEvent(WebhookEvent):
    """`payout_link.updated`, `payout_link.claimed`, `payout_link.*`."""

    payout_link_id: str


@attrs.frozen(kw_only=True)
class UserEvent(WebhookEvent):
    """`user.updated` and its sub-types (`user.updated.*`)."""

    user_id: str


@attrs.frozen(kw_only=True)
class AppEvent(WebhookEvent):
    """`app.updated`."""

    app_id: str


@attrs.frozen(kw_only=True)
class PaymentIntentEvent(WebhookEvent):
    """`payment_intent.updated`."""

    payment_intent_id: str


#: the resource an event type starts with -> its class
_CLASS_BY_RESOURCE: dict[str, type[WebhookEvent]] = {
    "flow": FlowEvent,
    "transfer": TransferEvent,
    "payout_link": PayoutLinkEvent,
    "user": UserEvent,
    "app": AppEvent,
    "payment_intent": PaymentIntentEvent,
}
_BASE_FIELDS = frozenset(f.name for f in attrs.fields(WebhookEvent))


def _id_fields(cls: type[WebhookEvent]) -> list[str]:
    return [f.name for f in attrs.fields(cls) if f.name not in _BASE_FIELDS]


def _find(payload: Mapping[str, Any], key: str) -> str | None:
    """An id at the top level (as documented), or inside a `data` object (as some
    Svix-based senders nest it)."""
    value = payload.get(key)
    if value is None and isinstance(payload.get("data"), Mapping):
        value = payload["data"].get(key)
    return value if isinstance(value, str) else None


def event_from_payload(
    payload: Mapping[str, Any], *, delivery_id: str, timestamp: datetime
) -> WebhookEvent:
    """The most specific event the payload supports: the resource's class when its id
    is there, a plain `WebhookEvent` otherwise (never an error: the delivery is genuine,
    and `data` keeps everything)."""
    event_type = payload.get("event")
    if not isinstance(event_type, str):
        event_type = None
    cls = _CLASS_BY_RESOURCE.get((event_type or "").partition(".")[0], WebhookEvent)
    ids = {name: _find(payload, name) for name in _id_fields(cls)}
    if any(value is None for value in ids.values()):
        cls, ids = WebhookEvent, {}
    return cls(
        type=event_type, data=payload, delivery_id=delivery_id, timestamp=timestamp, **ids
    )
