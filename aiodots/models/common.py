"""Types shared by every resource."""

from __future__ import annotations

from typing import Generic, TypeVar

import attrs

__all__ = ["Page"]

T = TypeVar("T")


@attrs.frozen(slots=True)
class Page(Generic[T]):
    """One page of a list endpoint: the objects and whether more follow."""

    data: tuple[T, ...]
    has_more: bool = False
