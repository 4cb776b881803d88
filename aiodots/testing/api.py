"""The emulator's answers for every operation of the spec but flows' (emulator.py keeps
those on their fast path).

Each request is checked against the spec (path, query and body), then answered:

- users, transfers (payouts create transfers too) and payout links are kept in memory:
  what was created can be retrieved, listed, updated and deleted;
- a create that carries an `idempotency_key` creates once per key: repeated, it answers
  the first answer again, or refuses the key, as the emulator is configured (payout
  links always answer the existing link, as the spec says);
- every other operation answers a body made from its response schema.
"""

from __future__ import annotations

import email.policy
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.parser import BytesParser
from typing import Any, Literal

from aiohttp import web

from .spec import ApiSpec, InvalidInput, OperationSpec

__all__ = ["ApiState", "IdempotencyMode", "ListOrder"]

IdempotencyMode = Literal["replay", "reject"]
ListOrder = Literal["newest-first", "oldest-first"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorFactory = Callable[..., web.Response]

_RESOURCE_OF_CREATE = {
    "POST /v2/users": "users",
    "POST /v2/transfers": "transfers",
    "POST /v2/payouts": "payouts",
    "POST /v2/payout-links": "payout_links",
    "POST /v2/payouts/send-payout": "payout_links",
}
#: Keyed operations whose repeated key answers the existing object in either mode (the
#: spec: "the existing link will be returned instead").
_ALWAYS_REPLAY = {"POST /v2/payout-links", "POST /v2/payouts/send-payout"}


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ApiState:
    """Objects, idempotency keys and counters of one emulator."""

    def __init__(
        self,
        spec: ApiSpec,
        error: ErrorFactory,
        stats: Callable[[], Any],
        *,
        idempotency: IdempotencyMode = "replay",
        link_base: Callable[[], str],
    ) -> None:
        self.spec = spec
        self._error = error
        self._stats = stats
        self.idempotency: IdempotencyMode = idempotency
        #: Check every answer against the spec's response schema (the contract test
        #: does; an answer that fails is a 500 naming why).
        self.check_responses = False
        #: The order `GET /v2/users` lists in: Dots does not document it, so a test can
        #: check that reconciliation never counts on it.
        self.users_order: ListOrder = "newest-first"
        self._link_base = link_base
        self.users: dict[str, dict[str, Any]] = {}
        self.transfers: dict[str, dict[str, Any]] = {}
        self.payout_links: dict[str, dict[str, Any]] = {}
        #: the platforms a transfer's `external_data` may name (the document's enum)
        transfer = spec.resolve({"$ref": "#/components/schemas/transfer"})
        self._transfer_platforms = frozenset(
            transfer["properties"]["external_data"]["properties"]["platform"]["enum"]
        )
        #: idempotency key -> (operation, status, JSON text) of the first answer: the
        #: text, not the object, which changes later (a payout settles) while a replay
        #: must be that first answer
        self.keys: dict[str, tuple[str, int, str]] = {}
        #: called with (kind, object) when a stored object changes: the webhook sender
        #: listens here (`transfer.pending`, `user.created`, ...)
        self.on_change: list[Callable[[str, dict[str, Any]], None]] = []
        self._stateful: dict[str, Callable[..., Any]] = {
            "GET /v2/users": self._list_users,
            "POST /v2/users": self._create_user,
            "GET /v2/users/{user_id}": self._get_user,
            "PATCH /v2/users/{user_id}": self._update_user,
            "DELETE /v2/users/{user_id}": self._delete_user,
            "GET /v2/transfers": self._list_transfers,
            "POST /v2/transfers": self._create_transfer,
            "GET /v2/transfers/{transfer_id}": self._get_transfer,
            "POST /v2/payouts": self._create_payout,
            "GET /v2/payout-links": self._list_links,
            "POST /v2/payout-links": self._create_link,
            "POST /v2/payouts/send-payout": self._create_link,
            "GET /v2/payout-links/{payout_link_id}": self._get_link,
            "DELETE /v2/payout-links/{payout_link_id}": self._delete_link,
            "POST /v2/payout-links/{payout_link_id}/redeliver": self._get_link,
        }

    def register(self, router: web.UrlDispatcher, skip: set[str]) -> None:
        for op in self.spec.operations_by_route():
            if op.key not in skip:
                router.add_route(op.method, op.route, self._handler(op))

    def _handler(self, op: OperationSpec) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self.answer(op, request)

        return handle

    # -- one request ----------------------------------------------------------------------

    async def answer(self, op: OperationSpec, request: web.Request) -> web.StreamResponse:
        try:
            self.spec.check_path(op, request.match_info)
            query = self.spec.check_query(op, request.query)
            body = await self._body(op, request)
            self.spec.check_body(op, body)
        except InvalidInput as exc:
            return self._error(400, str(exc))
        key = body.get("idempotency_key") if isinstance(body, dict) else None
        if key is not None:
            first = self.keys.get(key)
            if first is not None:
                return self._repeated_key(op, key, first)
        try:
            status, answer = self._dispatch(op, request.match_info, query, body)
        except InvalidInput as exc:
            return self._error(400, str(exc))
        if 200 <= status < 300:
            if key is not None:
                self.keys[key] = (op.key, status, json.dumps(answer))
            resource = _RESOURCE_OF_CREATE.get(op.key)
            if resource is not None:
                self._stats().created_by_resource[resource] += 1
        if status >= 400:
            return self._error(status, str(answer))
        if answer is None:
            return web.Response(status=status)
        if self.check_responses:
            try:
                self.spec.check_response(op, answer)
            except InvalidInput as exc:
                return self._error(500, f"the emulator answered against the spec: {exc}")
        return web.json_response(answer, status=status)

    async def _body(self, op: OperationSpec, request: web.Request) -> Any:
        if op.body_schema is None:
            return None
        raw = await request.read()  # already read (and recorded) by the pipeline
        if op.content_type == "multipart/form-data":
            return _form_fields(request.headers.get("Content-Type", ""), raw)
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise InvalidInput("the body is not valid JSON") from None

    def _repeated_key(
        self, op: OperationSpec, key: str, first: tuple[str, int, str]
    ) -> web.Response:
        first_op, status, answer = first
        if first_op != op.key:
            return self._error(409, f"idempotency key {key} was used for another operation")
        if self.idempotency == "replay" or op.key in _ALWAYS_REPLAY:
            return web.json_response(text=answer, status=status)
        return self._error(
            409, f"an object with idempotency key {key} already exists: idempotency keys "
            "cannot be reused", code="idempotency-key-reused",
        )

    def _dispatch(
        self, op: OperationSpec, path: Any, query: dict[str, Any], body: Any
    ) -> tuple[int, Any]:
        stateful = self._stateful.get(op.key)
        if stateful is not None:
            result = stateful(op, dict(path), query, body)
            return result if isinstance(result, tuple) else (op.status, result)
        if op.path.startswith("/v2/users/{user_id}") and path["user_id"] not in self.users:
            return 404, "user not found"
        answer = self.spec.example(op)
        if isinstance(answer, dict):
            # An object fetched by id comes back with that id.
            for name, value in path.items():
                if (
                    name.endswith("_id")
                    and isinstance(answer.get("id"), str)
                    and op.path.endswith(f"{{{name}}}")
                ):
                    answer["id"] = value
        return op.status, answer

    # -- users ----------------------------------------------------------------------------

    def _create_user(self, op: OperationSpec, path: Any, query: Any, body: Any) -> Any:
        user = self.spec.instance({"$ref": "#/components/schemas/user"})
        user.update(
            id=str(uuid.uuid4()),
            first_name=body["first_name"],
            last_name=body["last_name"],
            email=body["email"],
            phone_number={
                "country_code": body["country_code"], "phone_number": body["phone_number"]
            },
            metadata=body.get("metadata"),
            status="unverified",
            created=now_text(),
        )
        user["wallet"] = {"amount": 0, "withdrawable_amount": 0, "credit_balance": 0}
        self.users[user["id"]] = user
        self._changed("user.created", user)
        return user

    def _get_user(self, op: OperationSpec, path: Any, query: Any, body: Any) -> Any:
        return self.users.get(path["user_id"]) or (404, "user not found")

    def _update_user(self, op: OperationSpec, path: Any, query: Any, body: Any) -> Any:
        user = self.users.get(path["user_id"])
        if user is None:
            return 404, "user not found"
        for name, value in body.items():
            if name in user:
                user[name] = value
        self._changed("user.updated", user)
        return user

    def _delete_user(self, op: OperationSpec, path: Any, query: Any, body: Any) -> Any:
        return self.users.pop(path["user_id"], None) or (404, "user not found")

    def _list_users(self, op: OperationSpec, path: Any, query: dict[str, Any], body: Any) -> Any:
        users = list(self.users.values())
        if "status" in query:
            users = [u for u in users if u.get("status") == query["status"]]
        if self.users_order == "oldest-first":
            users.reverse()  # paginate lists the last one first
        return paginate(users, query)

    # -- transfers and payouts ------------------------------------------------------------

    def _new_transfer(
        self, body: dict[str, Any], kind: str, status: str,
        external_data: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        user_id = body.get("user_id")
        if user_id is not None and user_id not in self.users:
            raise LookupError(f"user {user_id} not found")
        transfer: dict[str, Any] = self.spec.instance({"$ref": "#/components/schemas/transfer"})
        transfer.update(
            id=str(uuid.uuid4()), created=now_text(), user_id=user_id, status=status,
            type=kind, amount=body["amount"], metadata=body.get("metadata"),
            transactions=[], external_data=external_data or {},
        )
        transfer.pop("payout_link_id", None)
        if user_id is None:
            transfer.pop("user_id")
        self.transfers[transfer["id"]] = transfer
        self._changed(f"transfer.{status}", transfer)
        return transfer

    def _create_transfer(self, op: OperationSpec, path: Any, query: Any, body: Any) -> Any:
        try:
            return self._new_transfer(body, "balance", "completed")
        except LookupError as exc:
            return 404, str(exc).strip("'")

    def _create_payout(self, op: OperationSpec, path: Any, query: Any, body: Any) -> Any:
        try:
            return self._new_transfer(body, "payout", "pending", self._paid_through(body))
        except LookupError as exc:
            return 404, str(exc).strip("'")

    def _paid_through(self, body: dict[str, Any]) -> dict[str, Any]:
        """A payout's `external_data`: the platform the money goes through, and the bank
        account it goes to when one was named.

        `paypal`, `venmo`, `ach` and `cash_app` are platforms of a transfer too, and are
        answered as sent. `default` is the user's default payout method (a `rail`, each of
        which a transfer's platform allows). `bank_transfer` is no platform of a
        transfer's, and the document does not say which one it answers: it is left out,
        as the document allows, rather than made up.
        """
        external: dict[str, Any] = {}
        platform = body["platform"]
        if platform == "default":
            user = self.users.get(body["user_id"])
            platform = None if user is None else user.get("default_payout_method")
        if platform in self._transfer_platforms:
            external["platform"] = platform
        if body.get("account_id") is not None:
            external["account_id"] = body["account_id"]
        return external

    def _get_transfer(self, op: OperationSpec, path: Any, query: Any, body: Any) -> Any:
        return self.transfers.get(path["transfer_id"]) or (404, "transfer not found")

    def _list_transfers(
        self, op: OperationSpec, path: Any, query: dict[str, Any], body: Any
    ) -> Any:
        transfers = list(self.transfers.values())
        for name in ("user_id", "type", "status"):
            if name in query:
                transfers = [t for t in transfers if t.get(name) == query[name]]
        if "start_date" in query:
            since = _when(query["start_date"])
            transfers = [t for t in transfers if _when(t["created"]) >= since]
        if "end_date" in query:
            until = _when(query["end_date"])
            transfers = [t for t in transfers if _when(t["created"]) <= until]
        if query.get("reverse_order"):
            transfers.reverse()
        return paginate(transfers, query)

    def set_transfer_status(self, transfer_id: str, status: str) -> dict[str, Any]:
        """Move a transfer (or payout) to `status`, as Dots does when money settles."""
        transfer = self.transfers[transfer_id]
        transfer["status"] = status
        self._changed(f"transfer.{status}", transfer)
        return transfer

    # -- payout links ---------------------------------------------------------------------

    def _create_link(self, op: OperationSpec, path: Any, query: Any, body: Any) -> Any:
        link = self.spec.instance({"$ref": "#/components/schemas/payout-link"})
        link_id = str(uuid.uuid4())
        link.update(
            id=link_id, created=now_text(), amount=body["amount"], status="created",
            link=f"{self._link_base()}/payout/{link_id}", metadata=body.get("metadata"),
        )
        self.payout_links[link_id] = link
        self._changed("payout_link.created", link)
        return link

    def _get_link(self, op: OperationSpec, path: Any, query: Any, body: Any) -> Any:
        return self.payout_links.get(path["payout_link_id"]) or (404, "payout link not found")

    def _delete_link(self, op: OperationSpec, path: Any, query: Any, body: Any) -> Any:
        return self.payout_links.pop(path["payout_link_id"], None) or (
            404, "payout link not found"
        )

    def _list_links(self, op: OperationSpec, path: Any, query: dict[str, Any], body: Any) -> Any:
        return paginate(list(self.payout_links.values()), query)

    def _changed(self, kind: str, obj: dict[str, Any]) -> None:
        for listener in self.on_change:
            listener(kind, obj)


def paginate(oldest_first: list[dict[str, Any]], query: dict[str, Any]) -> dict[str, Any]:
    """A `{data, has_more}` page, newest first, as Dots' cursor lists answer."""
    items = oldest_first[::-1]
    limit = int(query.get("limit", 10))
    if not 1 <= limit <= 100:
        raise InvalidInput("'limit' must be between 1 and 100")
    if "starting_after" in query and "ending_before" in query:
        raise InvalidInput("use 'starting_after' or 'ending_before', not both")
    ids = [item.get("id") for item in items]
    for cursor in ("starting_after", "ending_before"):
        if cursor in query and query[cursor] not in ids:
            raise InvalidInput(f"'{cursor}' is not a known id")
    if "starting_after" in query:
        start = ids.index(query["starting_after"]) + 1
        window = items[start : start + limit]
        return {"data": window, "has_more": start + limit < len(items)}
    if "ending_before" in query:
        end = ids.index(query["ending_before"])
        start = max(0, end - limit)
        return {"data": items[start:end], "has_more": start > 0}
    return {"data": items[:limit], "has_more": limit < len(items)}


def _when(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _form_fields(content_type: str, raw: bytes) -> dict[str, Any]:
    """The fields of a multipart/form-data body; a file field's content as text."""
    if not content_type.startswith("multipart/form-data"):
        raise InvalidInput(f"expected a multipart/form-data body, not {content_type!r}")
    message = BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw
    )
    if not message.is_multipart():
        raise InvalidInput("the multipart body has no parts")
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise InvalidInput("a form part has no name")
        payload = part.get_payload(decode=True)
        content = payload if isinstance(payload, bytes) else b""
        if part.get_filename() is not None:
            fields[name] = content.decode("latin-1")
        else:
            fields[name] = _form_value(content.decode("utf-8"))
    return fields


def _form_value(value: str) -> Any:
    # Form fields arrive as text; the schema types some of them as integers.
    try:
        return int(value)
    except ValueError:
        return value
