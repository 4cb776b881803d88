"""File uploads: a path, bytes or a binary file object, streamed, and sent again from the
start when a call is retried (or sent once, without retries, when it cannot be)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

import aiodots
from aiodots.files import CHUNK_SIZE, Upload
from aiodots.testing import DotsEmulator

FAST = aiodots.RetryPolicy(max_retries=2, backoff_initial=0.001, backoff_max=0.002)
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[DotsEmulator]:
    async with DotsEmulator() as emu:
        yield emu


@pytest_asyncio.fixture
async def client(emulator: DotsEmulator) -> AsyncIterator[aiodots.Client]:
    async with aiodots.Client(
        **emulator.credentials, base_url=emulator.base_url, retry_policy=FAST
    ) as dots:
        yield dots


def uploads(emulator: DotsEmulator) -> list[bytes]:
    return [
        r.body for r in emulator.stats.last_requests
        if r.path.endswith("/upload-from-file")
    ]


def file_part(body: bytes) -> bytes:
    _, _, rest = body.partition(b'name="file"; filename=')
    assert rest, "no file part"
    content = rest.split(b"\r\n\r\n", 1)[1]
    return content.rsplit(b"\r\n--", 1)[0]


@pytest.mark.parametrize("kind", ["path", "str path", "bytes", "file object"])
async def test_create_from_file_sends_the_file_as_multipart(
    client: aiodots.Client, emulator: DotsEmulator, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "invoice.pdf"
    path.write_bytes(PDF)
    source: Any = path.open("rb") if kind == "file object" else {
        "path": path, "str path": str(path), "bytes": PDF,
    }[kind]
    try:
        payable = await client.accounts_payable.payables.create_from_file(
            acting_user_id=42, file=source
        )
    finally:
        if hasattr(source, "close"):
            source.close()
    assert isinstance(payable, aiodots.Payable)
    (body,) = uploads(emulator)
    assert file_part(body) == PDF
    assert b'name="acting_user_id"\r\n\r\n42\r\n' in body.replace(
        b"Content-Type: text/plain; charset=utf-8\r\n", b""
    )
    if kind != "bytes":
        assert b'filename="invoice.pdf"' in body


async def test_a_retry_sends_the_whole_file_again(
    client: aiodots.Client, emulator: DotsEmulator, tmp_path: Path
) -> None:
    handle = io.BytesIO(b"ignored prefix" + PDF)
    handle.seek(len(b"ignored prefix"))  # a file object starts where it stands
    emulator.fail_next(1, status=503)
    await client.accounts_payable.payables.create_from_file(acting_user_id=1, file=handle)
    first, second = uploads(emulator)
    assert file_part(first) == PDF
    assert file_part(second) == PDF


async def test_a_file_object_that_cannot_seek_is_sent_once_without_retries(
    client: aiodots.Client, emulator: DotsEmulator
) -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, PDF)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        emulator.fail_next(1, status=503)
        with pytest.raises(aiodots.ServerError):
            await client.accounts_payable.payables.create_from_file(acting_user_id=1, file=pipe)
    assert len(uploads(emulator)) == 1


class ReadOnly:
    """A stream wrapper with read() alone: no seekable(), no tell()."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._data.read(size)


class AsyncFile:
    """The shape of an aiofiles handle: every method a coroutine."""

    async def read(self, size: int = -1) -> bytes:
        return PDF

    async def seekable(self) -> bool:
        return True

    async def tell(self) -> int:
        return 0


async def test_a_stream_with_read_alone_is_sent_once_like_any_that_cannot_seek(
    client: aiodots.Client, emulator: DotsEmulator
) -> None:
    """It raised AttributeError (no seekable()) instead of being sent."""
    emulator.fail_next(1, status=503)
    with pytest.raises(aiodots.ServerError):
        await client.accounts_payable.payables.create_from_file(
            acting_user_id=1, file=ReadOnly(PDF)  # type: ignore[arg-type]  # duck-typed
        )
    assert len(uploads(emulator)) == 1
    await client.accounts_payable.payables.create_from_file(
        acting_user_id=1, file=ReadOnly(PDF)  # type: ignore[arg-type]
    )
    assert len(uploads(emulator)) == 2


async def test_an_async_file_is_refused_before_sending(
    client: aiodots.Client, emulator: DotsEmulator
) -> None:
    """It failed with a TypeError comparing a coroutine, leaving coroutines unawaited."""
    with pytest.raises(aiodots.ValidationError, match="synchronous binary file object"):
        await client.accounts_payable.payables.create_from_file(
            acting_user_id=1, file=AsyncFile()  # type: ignore[arg-type]  # what users try
        )
    assert emulator.stats.requests == 0


async def test_a_missing_file_or_a_text_file_fails_before_sending(
    client: aiodots.Client, emulator: DotsEmulator, tmp_path: Path
) -> None:
    with pytest.raises(aiodots.ValidationError, match="no such file"):
        await client.accounts_payable.payables.create_from_file(
            acting_user_id=1, file=tmp_path / "nope.pdf"
        )
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with text.open("r") as handle, pytest.raises(aiodots.ValidationError, match="binary"):
        await client.accounts_payable.payables.create_from_file(
            acting_user_id=1, file=handle  # type: ignore[arg-type]
        )
    assert emulator.stats.requests == 0


async def test_upload_file_streams_base64_json_as_the_spec_describes(
    client: aiodots.Client, emulator: DotsEmulator, tmp_path: Path
) -> None:
    big = os.urandom(CHUNK_SIZE * 2 + 1234)  # several chunks, padding only at the end
    path = tmp_path / "scan.pdf"
    path.write_bytes(big)
    payable_id = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
    emulator.fail_next(1, status=502)
    result = await client.accounts_payable.payables.upload_file(payable_id, file=path)
    assert result is not None
    sent = [r for r in emulator.stats.last_requests if r.path.endswith("/file")]
    assert len(sent) == 2
    for request in sent:
        assert request.headers["Content-Type"] == "application/json"
        assert base64.b64decode(json.loads(request.body)["file"]) == big


class FirstReadHeld(io.BytesIO):
    """A file whose first read waits until released, in whichever thread it runs."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reading, self.release, self.done = (threading.Event() for _ in range(3))
        self._held = True

    def read(self, size: int | None = -1) -> bytes:
        if not self._held:
            return super().read(size)
        self._held = False
        self.reading.set()
        self.release.wait(10)
        try:
            return super().read(size)
        finally:
            self.done.set()


async def test_an_abandoned_attempts_read_does_not_move_the_retrys_place() -> None:
    # An attempt abandoned mid-file (a timeout, a server that answers before the body
    # ends) can leave a read running in a worker thread; the retry starts meanwhile.
    # That read must not move where the retry reads the caller's file from.
    data = os.urandom(CHUNK_SIZE * 3)
    handle = FirstReadHeld(data)
    make_body = Upload(handle).base64_json({"name": "scan"})
    abandoned = make_body()
    head = await anext(abandoned)
    reading = asyncio.ensure_future(anext(abandoned))
    assert await asyncio.to_thread(handle.reading.wait, 10)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading

    retry = make_body()
    assert await anext(retry) == head
    handle.release.set()
    assert await asyncio.to_thread(handle.done.wait, 10)
    body = head + b"".join([chunk async for chunk in retry])
    assert base64.b64decode(json.loads(body)["file"]) == data
