"""The exception tree, and the pure mapping from an HTTP response to an exception.

Nothing here does I/O: `error_for_response` takes a status, headers and the raw body,
so every mapping can be tested without a server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from multidict import CIMultiDict

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ClientClosedError",
    "ConflictError",
    "ConnectFailed",
    "ConnectionDropped",
    "DotsError",
    "IdempotencyKeyReusedError",
    "InvalidResponseError",
    "NotFoundError",
    "NotSentTimeout",
    "PermissionDeniedError",
    "RateLimitError",
    "RedirectError",
    "ResponseTooLargeError",
    "ServerError",
    "TLSVerificationError",
    "UnprocessableEntityError",
    "UnreadableResponseError",
    "ValidationError",
    "WebhookVerificationError",
    "error_for_response",
]

_EXCERPT_CHARS = 200


class DotsError(Exception):
    """Root of every exception aiodots raises on purpose."""


class ValidationError(DotsError, ValueError):
    """The input was rejected on the client, before anything was sent."""


class ClientClosedError(DotsError, RuntimeError):
    """The client was used after `close()`."""


class WebhookVerificationError(DotsError):
    """A webhook delivery could not be proven to come from Dots (bad or missing signature,
    a timestamp outside the tolerance, a malformed secret or payload). Answer it with 400;
    the message never contains the secret."""


#: C0 and C1 controls, DEL and the Unicode line breaks: what would end a log line early
#: or drive a terminal, were a message shown as the server wrote it.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    """`text` with each control character written as its escape (a newline as `\\n`):
    messages carry what a server sent, and end up in logs and terminals."""
    return _CONTROL.sub(lambda found: found.group().encode("unicode_escape").decode(), text)


class APIConnectionError(DotsError):
    """The call failed without a response from the API (DNS, connect, reset, timeout)."""

    def __init__(self, message: str, *, method: str, path: str) -> None:
        super().__init__(printable(f"{message} ({method} {path})"))
        self.method = method
        self.path = path


class APITimeoutError(APIConnectionError):
    """No complete response arrived within the timeout or the call's deadline."""


class ConnectFailed(APIConnectionError):
    """The connection could not be opened, so the request never left this machine."""


class ConnectionDropped(APIConnectionError):
    """The connection closed (or was reset) before the whole answer arrived: the request
    may have been acted on. Most often a pooled connection the server had closed as
    idle, found closed only when used, so a call that may go again does so at once the
    first time (`RetryPolicy.wait_for`)."""


class NotSentTimeout(APITimeoutError, ConnectFailed):
    """The call's deadline passed before its request was sent (while it waited for the
    rate limiter, say): a timeout, and like a failed connect it provably took no effect."""


class TLSVerificationError(ConnectFailed):
    """The server's certificate was not accepted (not signed by a trusted CA, made for
    another host name, expired): the request never left. Never retried, since every
    attempt would meet the same certificate; trust its CA with `Client(ssl=...)`."""


class APIError(DotsError):
    """The API answered with an error status, or with a body that could not be read."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        error_code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        # The server wrote it (a body's message, a Location, a reason phrase): escaped,
        # so that logging it cannot forge a line. `body` and `location` keep it as sent.
        message = printable(message)
        # An HTML error page's title often repeats the status ("502 Bad Gateway").
        shown = message if message.startswith(str(status)) else f"{status} {message}"
        super().__init__(printable(f"{shown} ({method} {path})"))
        self.status = status
        self.message = message
        self.method = method
        self.path = path
        self.body = body
        # Header names are case-insensitive, whatever case a server or proxy sends.
        self.headers: Mapping[str, str] = CIMultiDict(headers or {})
        self.error_code = error_code
        #: The server's requested wait in seconds (a `Retry-After` header), if it sent one.
        self.retry_after = retry_after


class BadRequestError(APIError):
    """400."""


class AuthenticationError(APIError):
    """401: the client id or API key was not accepted."""


class PermissionDeniedError(APIError):
    """403."""


class NotFoundError(APIError):
    """404."""


class ConflictError(APIError):
    """409."""


class UnprocessableEntityError(APIError):
    """422."""


class RateLimitError(APIError):
    """429. `retry_after` is the server's requested wait in seconds, when it gave one.

    Also raised before sending, with no response (`headers` empty), when a limit the
    server announced or a pause it asked for would hold the call longer than
    `max_retry_after`: `retry_after` is then that wait."""


class ServerError(APIError):
    """5xx."""


class IdempotencyKeyReusedError(APIError):
    """A retry's `idempotency_key` was refused as already used, after an earlier attempt
    of the same call ended without a readable answer (a reset, a timeout, a 5xx).

    That means the earlier attempt went through: the money moved. Where the created
    object could not be found again, this error says so and names the key; do not send
    the call again with a new key. `status` and `body` are those of the refusal.
    """

    def __init__(self, message: str, *, idempotency_key: str | None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.idempotency_key = idempotency_key


class RedirectError(APIError):
    """3xx. aiodots follows no redirect: it would send the request's body and credentials
    to wherever the `Location` points. `location` is that target, when the server gave one."""

    def __init__(self, message: str, *, location: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.location = location


class InvalidResponseError(APIError):
    """A success status whose body is not the JSON the API documents (truncated, HTML, wrong
    shape). For a create, the object may well exist on the server."""


class UnreadableResponseError(InvalidResponseError):
    """A success status whose body is not JSON at all: cut short or garbled on the way.
    Reads and keyed calls are tried again; for other writes the object may exist."""


class ResponseTooLargeError(InvalidResponseError):
    """An answer whose body is larger than the client's `max_response_size`, a 2xx or an
    error other than a refusal (429, 503: those end as their own errors, see
    `error_for_unread_body`): its `Content-Length` said so (then none of it was read), or
    more than that many bytes arrived (without a `Content-Length`, or decompressed; then
    reading stopped there). The connection is closed, not reused, and the call is not
    retried: a server that sent it once would send it again. As for any
    `InvalidResponseError`, a 2xx means the call took effect.

    `limit` is the setting; `size` the declared length (`declared` True), or the bytes
    received when reading stopped (more than `limit`, `declared` False). `body` is None:
    nothing of it is kept, nor shown.
    """

    def __init__(
        self, message: str, *, limit: int, size: int, declared: bool, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.limit = limit
        self.size = size
        self.declared = declared


def response_too_large(
    status: int,
    headers: Mapping[str, str],
    *,
    limit: int,
    size: int,
    declared: bool,
    method: str,
    path: str,
) -> ResponseTooLargeError:
    """The error for a body over `limit` bytes (see `ResponseTooLargeError`). Pure: says
    the sizes, never a byte of the body."""
    if declared:
        how = f"its Content-Length declares {size} bytes; none of it was read"
    else:
        how = f"reading stopped after {size} bytes"
    return ResponseTooLargeError(
        f"the response body is over max_response_size={limit} bytes: {how}",
        limit=limit, size=size, declared=declared,
        status=status, method=method, path=path, headers=headers,
    )


#: Statuses that refuse a request for now and may say when to come back (`Retry-After`):
#: all they mean is in their status line and headers.
REFUSAL_STATUSES = frozenset({429, 503})


def error_for_unread_body(
    too_large: ResponseTooLargeError, *, reason: str | None, retry_after: float | None
) -> APIError:
    """What a call fails with when its answer's body was over `max_response_size`. Pure.

    A refusal (`REFUSAL_STATUSES`) says all it means in its status and headers: the
    request was not acted on, and when to come back. Its body (a proxy's error page,
    say) is no part of that, and the answer after the wait owes nothing to it. So it
    ends as a refusal of any size does, as its status's error (`RateLimitError`,
    `ServerError`) with the `retry_after` its headers asked for, and is retried as any
    refusal is; its `body` is None, and its message says why. Any other status ends with
    `too_large` itself: a 2xx's body was the answer, another error's its account of
    itself, and either would come back as large.
    """
    status = too_large.status
    if status not in REFUSAL_STATUSES:
        return too_large
    return error_class_for_status(status)(
        f"{reason or 'refused'}; {too_large.message}",
        status=status, method=too_large.method, path=too_large.path,
        headers=too_large.headers, retry_after=retry_after,
    )


_CLASS_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}

# Each pattern stops at the next "<": one that scanned on to the body's end from every
# unclosed "<" would take time quadratic in a hostile body's size, in the event loop.
_TAG = re.compile(r"<[^<>]+>")
_SPACE = re.compile(r"\s+")
_TITLE_OPEN = re.compile(r"<title[^<>]*>", re.IGNORECASE)
_TITLE_CLOSE = re.compile(r"</title>", re.IGNORECASE)
_MESSAGE_KEYS = ("message", "error", "detail", "error_message", "msg")
_CODE_KEYS = ("error_code", "code", "type")


def error_class_for_status(status: int) -> type[APIError]:
    if status in _CLASS_BY_STATUS:
        return _CLASS_BY_STATUS[status]
    if status >= 500:
        return ServerError
    if 200 <= status < 300:
        return InvalidResponseError
    if 300 <= status < 400:
        return RedirectError
    return APIError


def excerpt(text: str) -> str:
    """A short, single-line human excerpt of a body that is not JSON (an HTML page, say)."""
    title = _TITLE_OPEN.search(text)
    if title:
        # The first closing tag after it, found once: not a search from every opening.
        end = _TITLE_CLOSE.search(text, title.end())
        if end:
            text = text[title.end() : end.start()]
    text = _SPACE.sub(" ", _TAG.sub(" ", text)).strip()
    if len(text) > _EXCERPT_CHARS:
        text = text[: _EXCERPT_CHARS - 1] + "…"
    return text


#: How deep a message is looked for: real bodies nest it two or three levels down, and a
#: body nested a thousand deep must not exhaust the stack of a function that never raises.
_MESSAGE_DEPTH = 8


def _message_from(value: Any, depth: int) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if depth >= _MESSAGE_DEPTH:
        return None
    if isinstance(value, Mapping):
        return message_from_body(value, depth + 1)
    if isinstance(value, list) and value:
        parts = [m for m in (_message_from(v, depth + 1) for v in value) if m]
        return "; ".join(parts) if parts else None
    return None


def message_from_body(body: Any, depth: int = 0) -> str | None:
    """Find a human message in a decoded error body of whatever shape arrives."""
    if isinstance(body, Mapping):
        for key in _MESSAGE_KEYS:
            if key in body:
                found = _message_from(body[key], depth)
                if found:
                    return found
        return None
    return _message_from(body, depth)


def error_code_from_body(body: Any) -> str | None:
    """Dots documents kebab-case codes (`invalid-input`, ...) without saying where they sit."""
    for _ in range(_MESSAGE_DEPTH):  # into nested "error" objects, as deep as a message
        if not isinstance(body, Mapping):
            return None
        for key in _CODE_KEYS:
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
        error = body.get("error")
        if isinstance(error, str) and re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)+", error):
            return error
        body = error
    return None


def decode_error_body(raw: bytes) -> tuple[Any, str | None]:
    """Decode an error body: (the JSON value or the excerpt text, a message if one was found)."""
    text = raw.decode("utf-8", errors="replace")
    try:
        body = json.loads(text) if text.strip() else None
    except (ValueError, RecursionError):  # not JSON, or nested past the decoder's stack
        short = excerpt(text)
        return short, short or None
    return body, message_from_body(body)


def error_for_response(
    status: int,
    headers: Mapping[str, str],
    raw: bytes,
    *,
    method: str,
    path: str,
    reason: str | None = None,
    retry_after: float | None = None,
) -> APIError:
    """Map one HTTP error response to its exception. Pure: no I/O, never raises."""
    headers = CIMultiDict(headers)  # `Location` found as `location` too
    body, message = decode_error_body(raw)
    message = message or reason or "error"
    cls = error_class_for_status(status)
    kwargs: dict[str, Any] = {
        "status": status,
        "method": method,
        "path": path,
        "body": body,
        "headers": headers,
        "error_code": error_code_from_body(body),
        "retry_after": retry_after,
    }
    if cls is RedirectError:
        location = headers.get("Location") or None
        kwargs["location"] = location
        where = f"to {location}" if location else "without a Location"
        message = f"redirect {where}, not followed: {message}"
    return cls(message, **kwargs)
