"""Metadata keys aiodots reserves for itself.

`_aiodots_call_id` carries the client-made id of one logical create, so that after an
ambiguous failure (`aiodots.reconcile`) the object it may have created can be found in
the resource's list. Only `TaggedMetadata`, which aiodots builds, may hold the key: a
caller who writes it into metadata by hand gets a `ValidationError`, since a stray copy
of someone else's id would make reconciliation return the wrong object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiodots.errors import ValidationError

__all__ = ["CALL_ID_KEY", "TaggedMetadata", "check_reserved_keys"]

CALL_ID_KEY = "_aiodots_call_id"
_MAX_CALL_ID_LENGTH = 200


class TaggedMetadata(dict[str, Any]):
    """A request's metadata plus its call id under `CALL_ID_KEY` (a plain dict on the wire)."""

    def __init__(self, metadata: Mapping[str, Any] | None, call_id: str) -> None:
        if not isinstance(call_id, str) or not call_id or len(call_id) > _MAX_CALL_ID_LENGTH:
            raise ValidationError(
                f"a call id must be a non-empty string of at most {_MAX_CALL_ID_LENGTH}"
                f" characters, not {call_id!r}"
            )
        super().__init__(metadata or {})
        self[CALL_ID_KEY] = call_id

    @property
    def call_id(self) -> str:
        value: str = self[CALL_ID_KEY]
        return value


def check_reserved_keys(metadata: Mapping[str, Any]) -> None:
    """Refuse the reserved key in metadata that aiodots did not tag itself."""
    if CALL_ID_KEY in metadata and not isinstance(metadata, TaggedMetadata):
        raise ValidationError(
            f"metadata key {CALL_ID_KEY!r} is reserved for aiodots' reconciliation: pass"
            " reconcile=True (or aiodots.with_call_id(request, your_id)) instead"
        )
