"""The emulator's checks of request bodies, written from the API reference on their own
(not by reusing the client's models), so a bug in one is caught by the other."""

from __future__ import annotations

import re
import uuid
from typing import Any

__all__ = ["STEP_NAMES", "InvalidInput", "validate_create_flow"]

STEP_NAMES = frozenset(
    {
        "compliance",
        "id-verification",
        "manage-payouts",
        "manage-payments",
        "payout",
        "background-check",
        "redirect",
        "pdf-form-fill",
    }
)
_STEP_OPTIONS = {
    "name": str,
    "redirect_url": str,
    "template_id": str,
    "auto_payout_enabled": bool,
    "hide_continue_button": bool,
}
_URL = re.compile(
    r"https?://(www\.)?[-a-zA-Z0-9@:%._+~#=]{1,256}\.[a-zA-Z0-9()]{1,6}\b"
    r"([-a-zA-Z0-9()@:%_+.~#?&/=]*)\Z"
)
_FIELDS = {"steps", "user_id", "hide_go_to_dashboard_on_complete", "require_auth", "metadata"}


class InvalidInput(Exception):
    pass


def _step_name(step: Any) -> str:
    if isinstance(step, str):
        name = step
    elif isinstance(step, dict):
        for key, value in step.items():
            expected = _STEP_OPTIONS.get(key)
            if expected is None:
                raise InvalidInput(f"unknown step option '{key}'")
            if not isinstance(value, expected):
                raise InvalidInput(f"step option '{key}' must be a {expected.__name__}")
        if "name" not in step:
            raise InvalidInput("a step object needs a 'name'")
        name = step["name"]
        if name == "redirect" and not _URL.match(step.get("redirect_url", "")):
            raise InvalidInput("a redirect step needs an http(s) 'redirect_url'")
    else:
        raise InvalidInput("each step must be a step name or a step object")
    if name not in STEP_NAMES:
        raise InvalidInput(f"'{name}' is not a valid step")
    if name == "redirect" and isinstance(step, str):
        raise InvalidInput("a redirect step needs an http(s) 'redirect_url'")
    return name


def validate_create_flow(body: Any) -> dict[str, Any]:
    """Check a `POST /v2/flows` body; return it, or raise `InvalidInput` saying why."""
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    extra = set(body) - _FIELDS
    if extra:
        raise InvalidInput(f"unknown field(s): {', '.join(sorted(extra))}")
    steps = body.get("steps")
    if not isinstance(steps, list) or not steps:
        raise InvalidInput("'steps' is required and must be a non-empty array")
    names = [_step_name(step) for step in steps]
    if len(set(names)) != len(names):
        raise InvalidInput("'steps' must not repeat a step")
    user_id = body.get("user_id")
    if user_id is not None:
        try:
            uuid.UUID(user_id)
        except (TypeError, ValueError, AttributeError):
            raise InvalidInput("'user_id' must be a UUID") from None
    for flag in ("hide_go_to_dashboard_on_complete", "require_auth"):
        if flag in body and not isinstance(body[flag], bool):
            raise InvalidInput(f"'{flag}' must be a boolean")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, str | dict):
        raise InvalidInput("'metadata' must be an object or a string")
    return body
