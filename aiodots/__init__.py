"""aiodots: an asyncio client for the Dots API, built for bulk onboarding jobs."""

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
    InvalidResponseError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RedirectError,
    ServerError,
    UnprocessableEntityError,
    ValidationError,
)
from .models import CreateFlow, Flow, FlowStep, Page, RedirectStep, Step
from .ratelimit import AdaptiveRateLimiter, RateLimit, RateLimiter
from .retry import Replay, RetryBudget, RetryPolicy
from .session import Limits
from .transport import CallOptions, ClientStats

__all__ = [
    "ENVIRONMENTS",
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
    "CreateFlow",
    "DotsError",
    "Flow",
    "FlowStep",
    "InvalidResponseError",
    "Limits",
    "NotFoundError",
    "Page",
    "PermissionDeniedError",
    "RateLimit",
    "RateLimitError",
    "RateLimiter",
    "RedirectError",
    "RedirectStep",
    "Replay",
    "RetryBudget",
    "RetryPolicy",
    "ServerError",
    "Step",
    "UnprocessableEntityError",
    "ValidationError",
    "__version__",
]
