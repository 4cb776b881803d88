"""Credentials, kept out of every `repr`, log line and traceback."""

from __future__ import annotations

import base64

__all__ = ["Redacted", "basic_auth_header", "without_userinfo"]


class Redacted(str):
    """A str whose repr hides it: safe in tracebacks that show locals, and in reprs of
    the dicts that carry it. Its value (what aiohttp writes on the wire) is unchanged."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'<redacted>'"


def basic_auth_header(client_id: str, api_key: str) -> Redacted:
    token = base64.b64encode(f"{client_id}:{api_key}".encode()).decode("ascii")
    return Redacted(f"Basic {token}")


def without_userinfo(url: str) -> str:
    """`url` as an error may show it: whatever precedes its last "@" masked, since that
    may be a password however the rest is mistyped ("user:pw@host:3128" reads as the
    scheme "user", and an unencoded "#" or "?" in a password splits it elsewhere)."""
    return "***@" + url.rpartition("@")[2] if "@" in url else url
