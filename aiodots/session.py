"""The connection pool's lifecycle: one `aiohttp.ClientSession` per client, made lazily
inside the running loop (aiohttp binds a session to the loop that creates it) and closed
exactly once."""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections.abc import Mapping, Sequence

import aiohttp
import attrs

from .auth import proxy_parts
from .errors import ClientClosedError
from .running_loop import running_loop

__all__ = ["Limits", "SessionManager", "attempt_timeout"]


def attempt_timeout(total: float) -> aiohttp.ClientTimeout:
    """One attempt's timeout, `total` seconds, whose connect part (a free pooled
    connection, or a new one) runs out first. Then a wait for the pool that lasts too
    long fails as aiohttp's ConnectionTimeoutError, which says the request never left;
    the whole timeout striking there cannot say when it struck, and a create would not
    be retried. aiohttp rounds a timeout over 5 s up to a whole second, each on its own
    clock reading: 2 s apart they cannot meet."""
    connect = total - 2 if total > 7 else min(total * 0.9, 5.0)
    return aiohttp.ClientTimeout(total=total, connect=connect)


@attrs.frozen(kw_only=True)
class Limits:
    """Pool limits. `max_connections` bounds open sockets (and so in-flight requests);
    `keepalive` is how long an idle connection is kept for reuse."""

    max_connections: int = attrs.field(default=100, validator=attrs.validators.ge(1))
    keepalive: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    dns_cache_ttl: int = attrs.field(default=300, validator=attrs.validators.ge(0))


class SessionManager:
    def __init__(
        self,
        *,
        limits: Limits,
        timeout: float,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
        ssl: ssl_module.SSLContext | None = None,
        proxy: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._limits = limits
        #: sent with every request (`transport.default_headers`)
        self._headers = dict(headers or {})
        # None keeps aiohttp's default: the system's CAs, with verification on.
        self._ssl: ssl_module.SSLContext | bool = True if ssl is None else ssl
        self._timeout = attempt_timeout(timeout)
        self._trace_configs = list(trace_configs)
        # Every request goes through it: a CONNECT tunnel to an https:// API, so that the
        # proxy sees the host name and never the credentials. Its own credentials go in
        # `proxy_headers`, which each request carries (`Transport`), not in the URL.
        self._proxy: str | None = None
        #: the proxy's credentials as a Proxy-Authorization header (`auth.proxy_parts`)
        self.proxy_headers: dict[str, str] | None = None
        if proxy is not None:
            self._proxy, self.proxy_headers = proxy_parts(proxy)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def has_session(self) -> bool:
        return self._session is not None

    @property
    def default_timeout(self) -> aiohttp.ClientTimeout:
        return self._timeout

    def session(self) -> aiohttp.ClientSession:
        """The session, created on first use. Must be called inside the running loop."""
        loop = running_loop()
        session = self._session
        if session is not None:
            if loop is not self._loop:
                raise RuntimeError(
                    "this aiodots Client was first used in another event loop; "
                    "create one Client per loop"
                )
            return session
        if self._closed:
            raise ClientClosedError("this aiodots Client is closed; create a new one")
        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections,
            limit_per_host=0,
            keepalive_timeout=self._limits.keepalive,
            ttl_dns_cache=self._limits.dns_cache_ttl,
            ssl=self._ssl,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            trace_configs=self._trace_configs or None,
            raise_for_status=False,
            headers=self._headers,
            proxy=self._proxy,
        )
        # aiohttp sends a GET, PUT or DELETE again by itself when its connection drops,
        # unseen by the retry policy, the limiter, the budget and `stats`: `max_retries=0`
        # would still send twice. Retries are `retry.py`'s alone. No public switch exists;
        # aiohttp's own test client turns it off the same way.
        self._session._retry_connection = False
        self._loop = loop
        return self._session

    async def close(self) -> None:
        """Close the pool. Idempotent; a closed manager refuses to make a new session."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()
