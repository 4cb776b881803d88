"""A Dots emulator for tests and benchmarks: a real HTTP server on 127.0.0.1 with faults
on demand. `python -m aiodots.testing` runs it standalone; the pytest plugin (installed
with aiodots) gives the fixtures `dots_emulator` and `dots_client`."""

from .api import IdempotencyMode, ListOrder
from .emulator import (
    DEFAULT_API_KEY,
    DEFAULT_CLIENT_ID,
    DotsEmulator,
    EmulatorStats,
    RecordedRequest,
)
from .faults import FaultPlan, ForcedResponse, ServerRateLimit
from .webhooks import (
    SVIX_SCHEDULE,
    DeliveryAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookMessage,
    WebhookSender,
)

__all__ = [
    "SVIX_SCHEDULE",
    "DEFAULT_API_KEY",
    "DEFAULT_CLIENT_ID",
    "DotsEmulator",
    "EmulatorStats",
    "FaultPlan",
    "ForcedResponse",
    "IdempotencyMode",
    "ListOrder",
    "RecordedRequest",
    "ServerRateLimit",
    "DeliveryAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookMessage",
    "WebhookSender",
]
