"""Credentials, kept out of every `repr`, log line and traceback."""

from __future__ import annotations

import base64

from yarl import URL

__all__ = ["Redacted", "basic_auth_header", "proxy_parts", "without_userinfo"]


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


def proxy_parts(proxy: str) -> tuple[str, dict[str, str] | None]:
    """A proxy URL without its credentials, and the `Proxy-Authorization` header that
    carries them (None when it has none). aiohttp keeps the proxy URL it is given in
    its own frames' locals, which tracebacks that show locals print (pytest
    --showlocals, rich, Sentry); the header's value is `Redacted` there."""
    url = URL(proxy)
    if url.user is None and url.password is None:
        return proxy, None
    header = basic_auth_header(url.user or "", url.password or "")
    return str(url.with_user(None)), {"Proxy-Authorization": header}
