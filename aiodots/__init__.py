"""aiodots: an asyncio client for the Dots API, built for bulk onboarding jobs."""

from . import models, webhooks
from ._version import __version__
from .batch import Batch, BatchItem, BatchSummary
from .client import ENVIRONMENTS, Client
from .errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConflictError,
    DotsError,
    IdempotencyKeyReusedError,
    InvalidResponseError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RedirectError,
    ResponseTooLargeError,
    ServerError,
    TLSVerificationError,
    UnprocessableEntityError,
    UnreadableResponseError,
    ValidationError,
    WebhookVerificationError,
)
from .models import *  # noqa: F403  (every model; `models.__all__` lists them)
from .operations import OPERATIONS
from .ratelimit import AdaptiveRateLimiter, RateLimit, RateLimiter
from .reconcile import Reconcile, ReconcileEvent, with_call_id
from .retry import Replay, RetryBudget, RetryPolicy
from .session import Limits
from .transport import CallOptions, ClientStats

__all__ = [  # the core names, then every model
    "ENVIRONMENTS",
    "OPERATIONS",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AdaptiveRateLimiter",
    "AuthenticationError",
    "BadRequestError",
    "Batch",
    "BatchItem",
    "BatchSummary",
    "CallOptions",
    "Client",
    "ClientClosedError",
    "ClientStats",
    "ConflictError",
    "DotsError",
    "IdempotencyKeyReusedError",
    "InvalidResponseError",
    "Limits",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimit",
    "RateLimitError",
    "RateLimiter",
    "Reconcile",
    "ReconcileEvent",
    "RedirectError",
    "Replay",
    "ResponseTooLargeError",
    "RetryBudget",
    "RetryPolicy",
    "ServerError",
    "TLSVerificationError",
    "UnprocessableEntityError",
    "UnreadableResponseError",
    "ValidationError",
    "WebhookVerificationError",
    "__version__",
    "webhooks",
    "with_call_id",
    *models.__all__,
]
