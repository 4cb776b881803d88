"""Dots' OpenAPI document, read for the emulator: every operation's route, the checks of
its path, query and body, and a response body that validates against its schema.

Validation uses `jsonschema` (Draft 2020-12, which OpenAPI 3.1 schemas are) with format
checks for uuid, email, date and date-time. openapi-core would route and validate whole
requests, but it validates responses and requests through its own wrappers of aiohttp's
objects, costs several times more per request, and its errors are harder to turn into
the API's own error bodies; the emulator already routes, so it needs only the schemas.
"""

from __future__ import annotations

import copy
import functools
import re
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from importlib import resources
from typing import Any

import attrs

__all__ = ["ApiSpec", "InvalidInput", "OperationSpec", "load_spec"]

_METHODS = ("get", "post", "put", "patch", "delete")


class InvalidInput(Exception):
    """A request the API would refuse with 400; the message says why."""


@attrs.frozen
class OperationSpec:
    """One operation: its key (`"POST /v2/users"`), its route and its schemas."""

    method: str
    path: str
    operation_id: str
    body_schema: dict[str, Any] | None
    content_type: str | None
    query: dict[str, dict[str, Any]]
    path_params: dict[str, dict[str, Any]]
    status: int
    response_schema: dict[str, Any] | None

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def route(self) -> str:
        return "/api" + self.path


def _jsonschema() -> Any:
    try:
        import jsonschema
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the Dots emulator validates against the API's spec with jsonschema: "
            "pip install 'aiodots[testing]'"
        ) from exc
    return jsonschema


class ApiSpec:
    """The operations of the vendored spec, with validators built once."""

    def __init__(self, document: dict[str, Any]) -> None:
        _repair(document)
        self.document = document
        self._components = document.get("components", {})
        self.operations: dict[str, OperationSpec] = {}
        for path, item in document["paths"].items():
            shared = item.get("parameters", []) or []
            for method in _METHODS:
                if method in item:
                    op = self._operation(method.upper(), path, item[method], shared)
                    self._cursors_follow_ids(op)
                    self.operations[op.key] = op
        jsonschema = _jsonschema()
        self._validator_class = jsonschema.Draft202012Validator
        self._format_checker = jsonschema.FormatChecker()

    def _operation(
        self, method: str, path: str, op: dict[str, Any], shared: list[dict[str, Any]]
    ) -> OperationSpec:
        params = shared + (op.get("parameters", []) or [])
        content = (op.get("requestBody") or {}).get("content", {})
        body_schema = content_type = None
        for kind in ("application/json", "multipart/form-data"):
            if kind in content:
                body_schema, content_type = content[kind].get("schema"), kind
                break
        status, response_schema = 200, None
        for code, answer in sorted(op.get("responses", {}).items()):
            if str(code).startswith("2"):
                status = int(code)
                response_schema = (
                    (answer.get("content") or {}).get("application/json", {}).get("schema")
                )
                break
        return OperationSpec(
            method=method,
            path=path,
            operation_id=op.get("operationId") or f"{method} {path}",
            body_schema=body_schema,
            content_type=content_type,
            query={p["name"]: p.get("schema", {}) for p in params if p.get("in") == "query"},
            path_params={p["name"]: p.get("schema", {}) for p in params if p.get("in") == "path"},
            status=status,
            response_schema=response_schema,
        )

    def _cursors_follow_ids(self, op: OperationSpec) -> None:
        """A list's cursors are ids of its objects. Where the document types them as UUIDs
        over objects whose `id` is an integer (transactions), it disagrees with itself:
        either reading is taken, as the client sends either."""
        listed = self.resolve(op.response_schema or {})
        items = self.resolve((listed.get("properties") or {}).get("data") or listed)
        id_schema = self.resolve((self.resolve(items.get("items") or {}).get("properties") or {})
                                 .get("id") or {})
        if id_schema.get("type") != "integer":
            return
        for name in ("starting_after", "ending_before"):
            schema = op.query.get(name)
            if schema is not None and str(schema.get("format", "")).lower() == "uuid":
                op.query[name] = {"type": "string",
                                  "anyOf": [{"format": "uuid"}, {"pattern": "^[0-9]+$"}]}

    # -- schemas --------------------------------------------------------------------------

    def resolve(self, schema: Any) -> Any:
        """The schema a `$ref` points to, keeping keywords beside the `$ref` (3.1)."""
        while isinstance(schema, dict) and "$ref" in schema:
            siblings = {k: v for k, v in schema.items() if k not in ("$ref", "description")}
            target = self._components["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
            schema = {**target, **siblings} if siblings else target
        return schema

    @functools.cache  # noqa: B019  (one ApiSpec per process)
    def _validator(self, key: str, part: str) -> Any:
        op = self.operations[key]
        schema = op.body_schema if part == "body" else op.response_schema
        if part.startswith("query:"):
            schema = op.query[part[6:]]
        elif part.startswith("path:"):
            schema = op.path_params[part[5:]]
        rooted = {**copy.deepcopy(schema or {}), "components": self._components}
        return self._validator_class(rooted, format_checker=self._format_checker)

    def _check(self, key: str, part: str, value: Any, where: str) -> None:
        errors = sorted(
            self._validator(key, part).iter_errors(value), key=lambda e: list(e.absolute_path)
        )
        if errors:
            error = errors[0]
            at = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
            raise InvalidInput(f"{where}{at}: {error.message}")

    # -- requests -------------------------------------------------------------------------

    def check_body(self, op: OperationSpec, body: Any) -> None:
        """Validate a decoded body; unknown top-level fields are refused too, so a client
        that misspells a field learns it here rather than having it dropped."""
        if op.body_schema is None:
            return
        self._check(op.key, "body", body, "body")
        schema = self.resolve(op.body_schema)
        known = set(self._properties(schema))
        if known and isinstance(body, dict):
            unknown = sorted(set(body) - known)
            if unknown:
                raise InvalidInput(f"body: unknown field(s): {', '.join(unknown)}")

    def _properties(self, schema: Any) -> dict[str, Any]:
        schema = self.resolve(schema)
        found: dict[str, Any] = dict(schema.get("properties", {}) or {})
        for part in schema.get("allOf", []) or []:
            found.update(self._properties(part))
        return found

    def check_query(self, op: OperationSpec, query: Mapping[str, str]) -> dict[str, Any]:
        """Validate query parameters (typed from their text); unknown ones are refused."""
        unknown = sorted(set(query) - set(op.query))
        if unknown:
            raise InvalidInput(f"unknown query parameter(s): {', '.join(unknown)}")
        typed: dict[str, Any] = {}
        for name, text in query.items():
            value = _typed(text, self.resolve(op.query[name]))
            self._check(op.key, f"query:{name}", value, f"query parameter {name!r}")
            typed[name] = value
        return typed

    def check_path(self, op: OperationSpec, params: Mapping[str, str]) -> None:
        for name, value in params.items():
            if name in op.path_params:
                self._check(op.key, f"path:{name}", value, f"path parameter {name!r}")

    def check_response(self, op: OperationSpec, body: Any) -> None:
        """Raise `InvalidInput` when `body` does not validate against the answer's schema
        (the emulator's own self-check, used by the contract test)."""
        if op.response_schema is not None:
            self._check(op.key, "response", body, "response")

    # -- answers --------------------------------------------------------------------------

    def example(self, op: OperationSpec) -> Any:
        """A response body that validates against the operation's response schema."""
        if op.response_schema is None:
            return None
        return self.instance(op.response_schema)

    def instance(self, schema: Any, name: str = "", _within: frozenset[str] = frozenset()) -> Any:
        """A value of `schema`: every property filled, formats honoured, the first enum
        value, one item per array. Made fresh each call (ids are new UUIDs). A schema that
        contains itself (a transfer's transactions, each with its transfer) stops at the
        second level: an empty array, or the property left out."""
        ref = schema.get("$ref") if isinstance(schema, dict) else None
        if ref is not None:
            if ref in _within:
                return _RECURSION
            _within = _within | {ref}
        schema = self.resolve(schema)
        if not isinstance(schema, dict):
            return None
        if "allOf" in schema and not any("if" in part for part in schema["allOf"]):
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                value = self.instance(part, name, _within)
                if isinstance(value, dict):
                    merged.update(value)
            return merged
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return schema["enum"][0]
        if schema.get("oneOf") and not schema.get("properties"):
            return self.instance(schema["oneOf"][0], name, _within)
        conditions = schema.get("oneOf", []) + schema.get("allOf", [])
        then = next((alt["then"] for alt in conditions if "then" in alt), None)
        if then is not None:
            # if/then alternatives (an approval condition): fill the first alternative,
            # whose `if` matches the first value of the discriminating enum.
            schema = {**schema, "properties": {
                **schema.get("properties", {}), **then.get("properties", {})
            }}
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k not in ("null", "string")), None) or (
                "string" if "string" in kind else None
            )
        if kind == "object" or (kind is None and "properties" in schema):
            filled = {
                prop: self.instance(sub, prop, _within)
                for prop, sub in (schema.get("properties") or {}).items()
                if not (isinstance(sub, dict) and isinstance(sub.get("type"), dict))
            }
            return {prop: value for prop, value in filled.items() if value is not _RECURSION}
        if kind == "array":
            item = self.instance(schema.get("items", {}), name, _within)
            return [] if item is _RECURSION else [item]
        if kind == "integer":
            return _number(schema, 1)
        if kind == "number":
            return _number(schema, 1)
        if kind == "boolean":
            return False
        if kind == "string":
            return _string(schema, name)
        return None

    def operations_by_route(self) -> Iterator[OperationSpec]:
        """Operations ordered so that literal routes come before templated ones."""
        return iter(sorted(self.operations.values(), key=lambda op: (op.path.count("{"), op.path)))


_RECURSION = object()


def _repair(node: Any) -> None:
    """Mend the places in Dots' document that no value can satisfy: a string with an
    `enum` of words and `format: uuid` (send-payout's `payout_fee_party`: the enum is
    what the API documents, so the format goes), if/then pairs under `oneOf`, and a
    type list with YAML's bare null (`type: [object, null]`, meant as "null"), which
    jsonschema refuses to validate with at all."""
    if isinstance(node, dict):
        if isinstance(node.get("type"), list):
            node["type"] = ["null" if kind is None else kind for kind in node["type"]]
        if node.get("enum") and str(node.get("format", "")).lower() == "uuid":
            del node["format"]
        alternatives = node.get("oneOf")
        if alternatives and all(isinstance(a, dict) and "if" in a for a in alternatives):
            # if/then pairs under `oneOf` (approval conditions): every value passes the
            # pair whose `if` fails as well, so no value passes exactly one. Meant: all.
            node["allOf"] = node.pop("oneOf")
        for value in node.values():
            _repair(value)
    elif isinstance(node, list):
        for value in node:
            _repair(value)


def _number(schema: dict[str, Any], default: int) -> int:
    value = default
    if "minimum" in schema:
        value = max(value, int(schema["minimum"]))
    if "exclusiveMinimum" in schema:
        value = max(value, int(schema["exclusiveMinimum"]) + 1)
    if "maximum" in schema:
        value = min(value, int(schema["maximum"]))
    return value


def _string(schema: dict[str, Any], name: str) -> str:
    fmt = (schema.get("format") or "").lower()
    if fmt == "uuid":
        return str(uuid.uuid4())
    if fmt == "date-time":
        return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if fmt == "date":
        return date.today().isoformat()
    if fmt == "email":
        return "person@example.com"
    if fmt == "uri" or name.endswith(("url", "link")):
        return "https://example.com/" + (name or "link")
    digits = re.search(r"\[0-9\]\{(\d+)(?:,(\d+))?\}", schema.get("pattern") or "")
    if digits:
        # A digits-only pattern (a country code, a phone number, an EIN): the shortest.
        return "4155550100123456789"[: int(digits.group(1))].ljust(int(digits.group(1)), "1")
    length = int(schema.get("minLength", 0))
    text = name or "text"
    if length > len(text):
        text = (text * (length // len(text) + 1))[:length]
    if "maxLength" in schema:
        text = text[: int(schema["maxLength"])]
    return text


def _typed(text: str, schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            return text
    if kind == "boolean":
        return {"true": True, "false": False}.get(text, text)
    return text


@functools.cache
def load_spec() -> ApiSpec:
    """The vendored spec, read once per process."""
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the Dots emulator reads the API's spec with PyYAML: pip install 'aiodots[testing]'"
        ) from exc

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    text = resources.files("aiodots.testing").joinpath("openapi/dots-v2.yaml").read_text(
        encoding="utf-8"
    )
    return ApiSpec(yaml.load(text, Loader=loader))
