"""Path segments: ids are sent as `quote(value, safe="")` would send them."""

from __future__ import annotations

import uuid
from urllib.parse import quote

import aioresponses
import pytest
from yarl import URL

import aiodots
from aiodots.errors import ValidationError
from aiodots.resources._base import quote_segment
from aiodots.testing import DotsEmulator

from .conftest import BASE_URL


@pytest.mark.parametrize(
    "value",
    [str(uuid.uuid4()), "abc", "ABC-123", "-", "a_b", "a.b", "a~b", "a/b", "a b", "a?b",
     "a#b", "a%2Fb", "é", "١٢٣", "\uff21", "x" * 300, "a\nb", "...", ".a", "a+b"],
)
def test_a_segment_is_quoted_as_quote_does(value: str) -> None:
    assert quote_segment(value) == quote(value, safe="")


@pytest.mark.parametrize("value", [".", ".."])
async def test_a_dot_segment_is_refused_before_anything_is_sent(value: str) -> None:
    """Quoting leaves dots alone, and URL normalisation resolves them: an id of ".."
    would send `users.delete` to DELETE /v2/."""
    with pytest.raises(ValidationError, match="cannot be an id: it would name another path"):
        quote_segment(value)
    async with DotsEmulator() as emulator, aiodots.Client(
        **emulator.credentials, base_url=emulator.base_url
    ) as dots:
        for call in (dots.users.delete, dots.users.retrieve, dots.flows.retrieve,
                     dots.transfers.retrieve):
            with pytest.raises(ValidationError):
                await call(value)
    assert emulator.stats.requests == 0


async def test_an_integer_id_is_sent_as_its_text_and_a_bool_is_refused(
    mocked: aioresponses.aioresponses,
) -> None:
    """A transaction's id is an integer in its model: `retrieve(t.id)` must work."""
    mocked.get(f"{BASE_URL}/v2/transactions/42", payload={"id": 42})
    async with aiodots.Client("id", "key", base_url=BASE_URL) as dots:
        transaction = await dots.transactions.retrieve(42)
        assert transaction.id == 42
        with pytest.raises(ValidationError, match="transaction_id must be a non-empty string"):
            await dots.transactions.retrieve(True)
    assert list(mocked.requests) == [("GET", URL(f"{BASE_URL}/v2/transactions/42"))]
