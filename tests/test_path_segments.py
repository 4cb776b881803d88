"""Path segments: ids are sent as `quote(value, safe="")` would send them."""

from __future__ import annotations

import uuid
from urllib.parse import quote

import pytest

from aiodots.resources._base import quote_segment


@pytest.mark.parametrize(
    "value",
    [str(uuid.uuid4()), "abc", "ABC-123", "-", "a_b", "a.b", "a~b", "a/b", "a b", "a?b",
     "a#b", "a%2Fb", "é", "١٢٣", "\uff21", "x" * 300, "a\nb", "..", "a+b"],
)
def test_a_segment_is_quoted_as_quote_does(value: str) -> None:
    assert quote_segment(value) == quote(value, safe="")
