"""`Client`: configuration, and the owner of the pool, the transport and the limiter."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import ssl as ssl_module
import warnings
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Literal

import aiohttp
import attrs
from yarl import URL

from .auth import basic_auth_header, without_userinfo
from .errors import ClientClosedError, ValidationError
from .ratelimit import AdaptiveRateLimiter, CredentialBound, RateLimit, RateLimiter
from .resources import (
    AccountsPayable,
    Apps,
    Flows,
    Organizations,
    OrganizationTransfers,
    PaymentCustomers,
    Payments,
    PayoutBatches,
    PayoutLinks,
    PayoutRequests,
    Payouts,
    Transactions,
    TransferBatches,
    Transfers,
    Users,
)
from .retry import RetryBudget, RetryPolicy, is_duration
from .session import Limits, SessionManager
from .transport import MAX_RESPONSE_SIZE, ClientStats, Transport, default_headers

__all__ = ["ENVIRONMENTS", "Client"]

#: Base URLs by environment. The sandbox host is the one the Dots environments page
#: names; the API playground uses https://api.senddotssandbox.com/api: pass `base_url`
#: (or DOTS_BASE_URL) to use that one.
ENVIRONMENTS = {
    "production": "https://api.dots.dev/api",
    "sandbox": "https://pls.senddotssandbox.com/api",
}


class Client:
    """An async client for the Dots API. Use one per event loop, as `async with`.

    Credentials come from the arguments or from `DOTS_CLIENT_ID` / `DOTS_API_KEY`;
    `base_url` (or `DOTS_BASE_URL`) wins over `environment`.

    - `timeout`: seconds for one HTTP attempt; `deadline`: seconds for a whole call,
      retries and waits included (None: no cap).
    - `max_retries`, `retry_policy`: see `RetryPolicy`; `deadline` and `max_retry_after`
      apply to a given `retry_policy` too, and a `max_retries` that contradicts it is a
      `ValidationError`. `retry_budget=False` disables the
      shared retry budget.
    - `rate_limit`: requests per second (a number or `RateLimit(rate, burst)`) never to
      exceed; with None the client runs unthrottled until a 429, then adapts.
      `adaptive=False` turns adaptation off. `rate_limiter` plugs in another limiter
      (one shared across processes, say) instead of the client's own, and takes neither
      of the two: given beside it, they are a `ValidationError`.
    - `max_connections`: the connection pool size, and so the most requests in flight;
      `limits` sets it with the pool's other limits (`Limits`: how long an idle
      connection is kept, how long DNS answers are cached).
    - `ssl`: an `ssl.SSLContext` for the API's TLS (a corporate CA, say); verification
      stays on either way. A plain `http://` base URL is refused for any host but this
      machine's loopback (Basic auth would travel in clear text) unless
      `allow_insecure_http=True`.
    - `proxy`: an HTTP proxy every request goes through (`http://user:password@host:port`),
      as a CONNECT tunnel: the proxy sees the API's host name, never the API key.
      Environment variables such as `HTTPS_PROXY` are not read: pass
      `proxy=os.environ.get("HTTPS_PROXY")` to use one.
    - `max_response_size`: the most bytes of an answer's body read into memory (as
      decoded, if compressed); a larger one fails the call with `ResponseTooLargeError`,
      unretried (a 429 or 503 stays that refusal, only its body unread), so that a
      misbehaving server or proxy, or an endless body, cannot exhaust a job's memory.
      32 MiB by default: every answer of the API is JSON, the largest a list page of
      100 objects or a payout batch's results (5,000 items at most, some megabytes with
      their requests and metadata), and no operation answers with a file. Each call in
      flight may hold that much at once.
    """

    def __init__(
        self,
        client_id: str | None = None,
        api_key: str | None = None,
        *,
        environment: Literal["production", "sandbox"] | str = "production",
        base_url: str | None = None,
        timeout: float = 30.0,
        deadline: float | None = None,
        max_retries: int = 3,
        max_connections: int = 100,
        limits: Limits | None = None,
        rate_limit: float | RateLimit | None = None,
        adaptive: bool = True,
        rate_limiter: RateLimiter | None = None,
        retry_policy: RetryPolicy | None = None,
        retry_budget: RetryBudget | bool = True,
        max_retry_after: float | None = None,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
        ssl: ssl_module.SSLContext | None = None,
        proxy: str | None = None,
        allow_insecure_http: bool = False,
        max_response_size: int = MAX_RESPONSE_SIZE,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        client_id = client_id if client_id is not None else os.environ.get("DOTS_CLIENT_ID")
        api_key = api_key if api_key is not None else os.environ.get("DOTS_API_KEY")
        if not client_id or not api_key:
            raise ValidationError(
                "Dots credentials are missing: pass client_id and api_key, or set "
                "DOTS_CLIENT_ID and DOTS_API_KEY"
            )
        if not is_duration(timeout):
            raise ValidationError(
                f"timeout must be a finite number of seconds above 0, not {timeout!r}"
            )
        if (
            isinstance(max_response_size, bool) or not isinstance(max_response_size, int)
            or max_response_size < 1
        ):
            raise ValidationError(
                "max_response_size must be a whole number of bytes above 0, "
                f"not {max_response_size!r}"
            )
        self.client_id = client_id
        self.base_url = _resolve_base_url(base_url, environment)
        if not allow_insecure_http:
            _refuse_clear_text(self.base_url, proxied=proxy is not None)
        if proxy is not None:
            _check_proxy(proxy)
        if ssl is not None:
            _check_ssl_context(ssl)

        if retry_policy is not None and max_retries not in (3, retry_policy.max_retries):
            # 3 is the default, so a policy's own count cannot be told from it: a count
            # that differs from both is a conflict to say, never one to settle silently.
            raise ValidationError(
                f"max_retries={max_retries} conflicts with the retry_policy's "
                f"max_retries={retry_policy.max_retries}; give it in the RetryPolicy"
            )
        if limits is not None and not isinstance(limits, Limits):
            raise ValidationError(f"limits must be a Limits, not {type(limits).__name__}")
        if limits is not None and max_connections not in (100, limits.max_connections):
            # 100 is the default, so it cannot be told from a count left unset.
            raise ValidationError(
                f"max_connections={max_connections} conflicts with the limits' "
                f"max_connections={limits.max_connections}; give it in the Limits"
            )
        if rate_limiter is not None and (rate_limit is not None or not adaptive):
            # Both set the client's own limiter, which a given one replaces: kept silent,
            # a rate "never to exceed" would be exceeded.
            given = "rate_limit" if rate_limit is not None else "adaptive=False"
            raise ValidationError(
                f"{given} sets the client's own limiter, which rate_limiter replaces; give "
                "it to that limiter (RedisRateLimiter(ceiling=..., adaptive=...), say)"
            )
        if rate_limit is not None and (
            isinstance(rate_limit, bool) or not isinstance(rate_limit, RateLimit | int | float)
        ):
            raise ValidationError(
                "rate_limit must be requests per second or a RateLimit(rate, burst), "
                f"not {type(rate_limit).__name__}"
            )
        try:
            policy = retry_policy or RetryPolicy(max_retries=max_retries)
            # Given on their own, these apply to the policy given as well as the default.
            if deadline is not None:
                policy = attrs.evolve(policy, deadline=deadline)
            if max_retry_after is not None:
                policy = attrs.evolve(policy, max_retry_after=max_retry_after)
            if limits is None:
                limits = Limits(max_connections=max_connections)
            ceiling = RateLimit(rate_limit) if isinstance(rate_limit, int | float) else rate_limit
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"invalid client setting: {exc}") from exc

        self.stats = ClientStats()
        self.limiter: RateLimiter = rate_limiter or AdaptiveRateLimiter(
            ceiling, adaptive=adaptive, sleep=sleep
        )
        if isinstance(self.limiter, CredentialBound):
            self.limiter.bind_credentials(client_id, api_key)
        self.retry_budget = (
            RetryBudget() if retry_budget is True else (retry_budget or None)
        )
        authorization = basic_auth_header(client_id, api_key)
        # aiohttp applies a session's headers to a proxy's too, and sends an Authorization
        # among them to the proxy as its Proxy-Authorization: behind a proxy, the API key
        # goes with each request instead (inside the tunnel), at a cost of 9k
        # instructions per request that only proxied clients pay.
        session_authorization = None if proxy is not None else authorization
        self._sessions = SessionManager(
            limits=limits, timeout=timeout, trace_configs=trace_configs, ssl=ssl, proxy=proxy,
            headers=default_headers(session_authorization),
        )
        self._transport = Transport(
            base_url=self.base_url,
            session=self._sessions.session,
            timeout=self._sessions.default_timeout,
            policy=policy,
            limiter=self.limiter,
            budget=self.retry_budget,
            stats=self.stats,
            sleep=sleep,
            call_headers=None if proxy is None else {"Authorization": authorization},
            proxy_headers=self._sessions.proxy_headers,
            max_response_size=max_response_size,
            traced=bool(trace_configs),
        )
        # One attribute per API resource, named after its path (DESIGN.md).
        shared = (self._transport, lambda: self.stats.retries)
        self.flows = Flows(*shared)
        self.users = Users(*shared)
        self.transfers = Transfers(*shared)
        self.organization_transfers = OrganizationTransfers(*shared)
        self.payouts = Payouts(*shared)
        self.payout_links = PayoutLinks(*shared)
        self.payout_batches = PayoutBatches(*shared)
        self.payout_requests = PayoutRequests(*shared)
        self.transfer_batches = TransferBatches(*shared)
        self.transactions = Transactions(*shared)
        self.payments = Payments(*shared)
        self.payment_customers = PaymentCustomers(*shared)
        self.apps = Apps(*shared)
        self.organizations = Organizations(*shared)
        self.accounts_payable = AccountsPayable(*shared)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<aiodots.Client client_id={self.client_id!r} base_url={self.base_url!r} {state}>"

    @property
    def closed(self) -> bool:
        return self._sessions.closed

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._transport.policy

    async def close(self) -> None:
        """Close the connection pool. Safe to call more than once; a closed client
        raises `ClientClosedError` on use, and so do calls still waiting to be sent."""
        self._transport.close()
        await self._sessions.close()

    async def __aenter__(self) -> Client:
        if self.closed:
            raise ClientClosedError("this aiodots Client is closed; create a new one")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __del__(self) -> None:
        sessions = getattr(self, "_sessions", None)
        if sessions is not None and not sessions.closed and sessions.has_session:
            warnings.warn(
                f"{self!r} was not closed; use 'async with aiodots.Client(...)' or "
                "'await client.close()'",
                ResourceWarning,
                stacklevel=2,
            )


def _resolve_base_url(base_url: str | None, environment: str) -> str:
    chosen = base_url or os.environ.get("DOTS_BASE_URL")
    if not chosen:
        if environment not in ENVIRONMENTS:
            raise ValidationError(
                f"unknown environment {environment!r}; use one of {', '.join(ENVIRONMENTS)} "
                "or pass base_url"
            )
        chosen = ENVIRONMENTS[environment]
    # Shown masked: whatever precedes an "@" may be a password (`without_userinfo`).
    if not chosen.startswith(("http://", "https://")):
        raise ValidationError(
            f"base_url must start with http:// or https://, not {without_userinfo(chosen)!r}"
        )
    try:
        url = URL(chosen)
        has_userinfo = url.raw_user is not None or url.raw_password is not None
    except ValueError:
        has_userinfo = False  # malformed: `_refuse_clear_text` says so
    if has_userinfo:
        # aiohttp refuses to send a URL's credentials beside the API key's Basic auth, so
        # such a URL could never work; kept, it would show its password in the repr.
        raise ValidationError(
            "base_url must not carry credentials (pass client_id and api_key instead), "
            f"not {without_userinfo(chosen)!r}"
        )
    return chosen.rstrip("/")


def _refuse_clear_text(base_url: str, *, proxied: bool = False) -> None:
    """Basic auth carries the API key in every request: over plain http it may go no
    further than this machine (and a proxy is another machine)."""
    try:
        url = URL(base_url)
    except ValueError as exc:
        raise ValidationError(
            f"base_url is not a valid URL: {without_userinfo(base_url)!r} ({exc})"
        ) from None  # yarl's chain quotes the URL's parts ("invalid literal ... 'pw'")
    if url.scheme != "http":
        return
    if proxied:
        raise ValidationError(
            "refusing plain http through a proxy: the proxy would read the API key; use "
            "https://, or pass allow_insecure_http=True if this network is trusted"
        )
    host = (url.host or "").lower()
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host.strip("[]")).is_loopback:
            return
    except ValueError:
        pass
    raise ValidationError(
        f"refusing plain http to {host!r}: the API key would travel in clear text; use "
        "https://, or pass allow_insecure_http=True if this network is trusted"
    )


def _check_proxy(proxy: object) -> None:
    """An http:// (or https://) proxy URL with a host; credentials may be in it, and are
    never repeated in an error."""
    if not isinstance(proxy, str):
        raise ValidationError(f"proxy must be a URL string, not {type(proxy).__name__}")
    try:
        url: URL | None = URL(proxy)
    except ValueError:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise ValidationError(
            f"proxy must be an http:// or https:// URL with a host "
            f"(http://user:password@host:port), not {without_userinfo(proxy)!r}"
        )


def _check_ssl_context(context: object) -> None:
    """A context is for trusting another CA, not for turning verification off."""
    if not isinstance(context, ssl_module.SSLContext):
        raise ValidationError(f"ssl must be an ssl.SSLContext, not {type(context).__name__}")
    if context.verify_mode != ssl_module.CERT_REQUIRED or not context.check_hostname:
        raise ValidationError(
            "the ssl context must verify the server's certificate and host name "
            "(verify_mode=CERT_REQUIRED, check_hostname=True)"
        )
