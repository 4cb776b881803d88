"""Per-call overrides shared by every resource method."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypedDict, Unpack

from aiodots.errors import ValidationError
from aiodots.transport import CallOptions

__all__ = ["CallOverrides", "CallOverridesNoAppId", "call_options"]


class CallOverrides(TypedDict, total=False):
    """The keyword arguments every resource method accepts to override the client."""

    timeout: float
    max_retries: int
    deadline: float
    extra_headers: Mapping[str, str]
    api_app_id: str
    user_ip: str


_KNOWN = CallOverrides.__required_keys__ | CallOverrides.__optional_keys__
#: A header name: an RFC 9110 token.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _header_value(name: str, value: object) -> str:
    """A header's value as given, or a ValidationError before anything is sent: aiohttp
    refuses a line break or a NUL itself, but with a ValueError of its own, and a value
    that is no string with a TypeError."""
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string, not {type(value).__name__}")
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValidationError(f"{name} contains a line break or a NUL")
    return value


def call_options(**overrides: Unpack[CallOverrides]) -> CallOptions | None:
    """The `CallOptions` for one call, or None when nothing is overridden (the common case,
    which then costs nothing).

    `api_app_id` sends `Api-App-Id` (an organization key acting for one app); `user_ip`
    sends `Dots-User-IP` (the end user's IP, for fraud scoring). Any other keyword is a
    `TypeError` naming it: a typo such as `max_retry=3` must not be dropped silently.
    """
    if not overrides:
        return None
    unknown = overrides.keys() - _KNOWN
    if unknown:
        names = ", ".join(repr(name) for name in sorted(unknown))
        raise TypeError(
            f"unexpected keyword argument {names}; the per-call options are "
            + ", ".join(sorted(_KNOWN))
        )
    timeout = overrides.get("timeout")
    max_retries = overrides.get("max_retries")
    deadline = overrides.get("deadline")
    extra_headers = overrides.get("extra_headers")
    api_app_id = overrides.get("api_app_id")
    user_ip = overrides.get("user_ip")
    headers: dict[str, str] = {}
    if extra_headers:
        for name, value in extra_headers.items():
            if not isinstance(name, str) or not _TOKEN.fullmatch(name):
                raise ValidationError(f"{name!r} is not a header name")
            headers[name] = _header_value(name, value)
    if api_app_id is not None:
        headers["Api-App-Id"] = _header_value("api_app_id", api_app_id)
    if user_ip is not None:
        headers["Dots-User-IP"] = _header_value("user_ip", user_ip)
    if timeout is None and max_retries is None and deadline is None and not headers:
        return None
    try:
        return CallOptions(
            timeout=timeout, max_retries=max_retries, deadline=deadline, headers=headers or None
        )
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"invalid call option: {exc}") from exc


class CallOverridesNoAppId(TypedDict, total=False):
    """`CallOverrides` for methods where the API itself has an `api_app_id` argument: there
    the argument is the API's, and the header goes through `extra_headers`."""

    timeout: float
    max_retries: int
    deadline: float
    extra_headers: Mapping[str, str]
    user_ip: str
