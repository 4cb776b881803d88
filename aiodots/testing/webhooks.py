"""Webhook deliveries from the emulator, signed and retried the way Svix does it for Dots.

    emulator.webhooks.subscribe("http://127.0.0.1:8000/webhooks/dots", secret)
    message = emulator.complete_flow(flow.id)      # or emulator.webhooks.emit(type, data)
    async with asyncio.timeout(5):
        await message.wait()
    message.deliveries[0].attempts                 # status, timestamp, signature of each

Every attempt of one message carries the same `svix-id` and a fresh timestamp and
signature. A delivery succeeds on a 2xx within `timeout`; anything else (another status,
a redirect, a refused connection, a timeout) is retried on Svix's schedule: at once, then
5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h after each failure. `time_scale` shrinks that
schedule for tests (`time_scale=0.001`: 5 ms, 0.3 s, ...), or pass a `schedule` of your
own. `close()` (the emulator's `stop()`) cancels whatever is still pending: no task
outlives the sender.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import aiohttp
import attrs

from aiodots.webhooks import sign

__all__ = [
    "SVIX_SCHEDULE",
    "DeliveryAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookMessage",
    "WebhookSender",
]

logger = logging.getLogger("aiodots.testing.webhooks")

#: seconds before each attempt: the first at once, then Svix's retry schedule
SVIX_SCHEDULE: tuple[float, ...] = (0, 5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)

DeliveryState = Literal["pending", "succeeded", "failed", "cancelled"]


def new_secret() -> str:
    """A signing secret in Svix's format: `whsec_` and 24 random bytes in base64."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


@attrs.frozen
class WebhookEndpoint:
    url: str
    secret: str = attrs.field(repr=False)


@attrs.frozen
class DeliveryAttempt:
    """One POST of a delivery."""

    number: int
    #: the `svix-timestamp` sent (seconds)
    timestamp: int
    signature: str
    #: the receiver's status, None when no response came
    status: int | None
    #: why there was no response (refused, reset, timeout)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@attrs.define(eq=False)
class WebhookDelivery:
    """One message to one endpoint, and every attempt made for it."""

    message_id: str
    event_type: str
    payload: bytes
    endpoint: WebhookEndpoint
    attempts: list[DeliveryAttempt] = attrs.Factory(list)
    state: DeliveryState = "pending"
    _finished: asyncio.Event = attrs.Factory(asyncio.Event)

    async def wait(self) -> WebhookDelivery:
        """Until it succeeded, ran out of attempts or was cancelled (bound it with
        `asyncio.timeout`)."""
        await self._finished.wait()
        return self


@attrs.define(eq=False)
class WebhookMessage:
    """One emitted event: its id (the `svix-id` of every attempt) and one delivery per
    endpoint subscribed when it was emitted."""

    id: str
    event_type: str
    payload: bytes
    deliveries: list[WebhookDelivery]

    async def wait(self) -> WebhookMessage:
        """Until every delivery has finished."""
        for delivery in self.deliveries:
            await delivery.wait()
        return self


class WebhookSender:
    """Signs and delivers webhook messages to the subscribed endpoints, with retries.

    It owns an aiohttp session of its own, created on the first delivery, and one task per
    pending delivery; `close()` ends both.
    """

    def __init__(
        self,
        *,
        schedule: Sequence[float] = SVIX_SCHEDULE,
        time_scale: float = 1.0,
        timeout: float = 15.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not schedule or any(delay < 0 for delay in schedule):
            raise ValueError("schedule must list at least one delay, none negative")
        if time_scale < 0:
            raise ValueError("time_scale must not be negative")
        self.schedule = tuple(schedule)
        self.time_scale = time_scale
        self.timeout = timeout
        #: where `svix-timestamp` comes from (a test can move it on between attempts)
        self.clock = clock
        self.endpoints: list[WebhookEndpoint] = []
        #: every message emitted, oldest first
        self.messages: list[WebhookMessage] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    # -- subscriptions and events ---------------------------------------------------------------

    def subscribe(self, url: str, secret: str | None = None) -> WebhookEndpoint:
        """Deliver every later message to `url`, signed with `secret` (a new `whsec_`
        one when None: read it back from the returned endpoint)."""
        endpoint = WebhookEndpoint(url, secret if secret is not None else new_secret())
        sign(endpoint.secret, "check", 0, b"")  # a malformed secret fails here, not later
        self.endpoints.append(endpoint)
        return endpoint

    def unsubscribe(self, url: str) -> None:
        self.endpoints = [e for e in self.endpoints if e.url != url]

    def emit(self, event_type: str, data: Mapping[str, Any] | None = None) -> WebhookMessage:
        """Send `{"event": event_type, **data}` (Dots' flat payload shape) to every
        subscribed endpoint. Returns at once; the deliveries run in the background."""
        payload = json.dumps({"event": event_type, **(data or {})}).encode()
        message_id = "msg_" + uuid.uuid4().hex
        deliveries = [WebhookDelivery(message_id, event_type, payload, e) for e in self.endpoints]
        message = WebhookMessage(message_id, event_type, payload, deliveries)
        self.messages.append(message)
        for delivery in deliveries:
            task = asyncio.get_running_loop().create_task(self._deliver(delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return message

    @property
    def pending(self) -> int:
        """Deliveries not yet finished."""
        return len(self._tasks)

    async def drain(self) -> None:
        """Wait until every delivery so far has succeeded or run out of attempts."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def close(self) -> None:
        """Cancel pending deliveries and close the session. The sender can be used again
        after (a new session is opened on the next delivery)."""
        tasks, self._tasks = set(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # -- delivering -----------------------------------------------------------------------------

    async def _deliver(self, delivery: WebhookDelivery) -> None:
        try:
            for number, delay in enumerate(self.schedule, start=1):
                if delay:
                    await asyncio.sleep(delay * self.time_scale)
                attempt = await self._attempt(delivery, number)
                delivery.attempts.append(attempt)
                if attempt.ok:
                    delivery.state = "succeeded"
                    return
            delivery.state = "failed"
        except asyncio.CancelledError:
            delivery.state = "cancelled"
            raise
        finally:
            delivery._finished.set()

    async def _attempt(self, delivery: WebhookDelivery, number: int) -> DeliveryAttempt:
        timestamp = int(self.clock())
        signature = sign(delivery.endpoint.secret, delivery.message_id, timestamp, delivery.payload)
        headers = {"Content-Type": "application/json", "User-Agent": "aiodots-emulator"}
        # Svix sends its own header names and the Standard Webhooks ones.
        for prefix in ("svix", "webhook"):
            headers[f"{prefix}-id"] = delivery.message_id
            headers[f"{prefix}-timestamp"] = str(timestamp)
            headers[f"{prefix}-signature"] = signature
        status: int | None = None
        error: str | None = None
        try:
            async with self._open_session().post(
                delivery.endpoint.url,
                data=delivery.payload,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        logger.debug(
            "webhook %s %s attempt %d to %s: %s",
            delivery.event_type, delivery.message_id, number, delivery.endpoint.url,
            status if status is not None else error,
        )
        return DeliveryAttempt(number, timestamp, signature, status, error)

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session
