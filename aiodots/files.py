"""Files to upload: a path, bytes, or a binary file object, read in chunks per attempt.

Each attempt of a call opens its source anew (a path) or reads a file object from where
it stood when the call began, so a retry sends the whole file again. A file object that
cannot seek can be read once only: such a call is sent without retries.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import io
import os
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO, Any

import aiohttp

from .errors import ValidationError

__all__ = ["CHUNK_SIZE", "FileSource", "Upload"]

FileSource = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]

#: Read size; a multiple of 3, so that chunks base64-encode without padding in between.
CHUNK_SIZE = 3 * 64 * 1024


class Upload:
    """One file to send, prepared once per call, opened once per attempt."""

    def __init__(self, source: Any, *, field: str = "file") -> None:
        self.field = field
        self._bytes: bytes | None = None
        self._path: Path | None = None
        self._handle: IO[bytes] | None = None
        self._start = 0
        if isinstance(source, bytes | bytearray | memoryview):
            self._bytes = bytes(source)
            self.filename = field
        elif isinstance(source, str | os.PathLike):
            self._path = Path(source)
            if not self._path.is_file():
                raise ValidationError(f"{field}: no such file: {str(self._path)!r}")
            self.filename = self._path.name
        elif hasattr(source, "read"):
            if isinstance(source, io.TextIOBase):
                raise ValidationError(f"{field} must be opened in binary mode ('rb')")
            if inspect.iscoroutinefunction(source.read):
                # An async file (aiofiles): its read() gives a coroutine, not bytes.
                raise ValidationError(
                    f"{field} must be a synchronous binary file object (open(path, 'rb')), "
                    "or a path: an async file cannot be read here"
                )
            self._handle = source
            self.filename = Path(str(getattr(source, "name", field))).name or field
            try:
                self._start = source.tell() if source.seekable() else -1
            except (OSError, ValueError, AttributeError):  # a stream with read() alone
                self._start = -1
        else:
            raise ValidationError(
                f"{field} must be a path, bytes or a binary file object, "
                f"not {type(source).__name__}"
            )
        self._reads = 0
        self._opened: list[IO[bytes] | io.RawIOBase] = []
        #: Held by each read of the caller's file object (`_Cursor`).
        self._lock = threading.Lock()

    @property
    def rewindable(self) -> bool:
        """Whether every attempt can send the whole file (False: a one-shot stream)."""
        return self._handle is None or self._start >= 0

    def _open(self) -> IO[bytes] | io.RawIOBase:
        self._reads += 1
        opened: IO[bytes] | io.RawIOBase
        if self._bytes is not None:
            opened = io.BytesIO(self._bytes)
        elif self._path is not None:
            opened = self._path.open("rb")
        else:
            assert self._handle is not None
            if self._start < 0 and self._reads > 1:
                raise ValidationError(f"{self.field}: the file object cannot be read again")
            opened = _Cursor(self._handle, self._start if self._start >= 0 else None, self._lock)
        self._opened.append(opened)
        return opened

    def close(self) -> None:
        """Close what the attempts opened (never the caller's own file object)."""
        opened, self._opened = self._opened, []
        for handle in opened:
            handle.close()

    def form(self, fields: dict[str, str]) -> Callable[[], aiohttp.FormData]:
        """A factory of multipart bodies: the fields, then the file, streamed."""

        def build() -> aiohttp.FormData:
            form = aiohttp.FormData()
            for name, value in fields.items():
                form.add_field(name, value)
            form.add_field(
                self.field, self._open(), filename=self.filename,
                content_type="application/octet-stream",
            )
            return form

        return build

    def base64_json(self, fields: dict[str, Any]) -> Callable[[], AsyncIterator[bytes]]:
        """A factory of JSON bodies `{..., "file": "<base64>"}` that encode the file chunk
        by chunk while sending, instead of holding it (and its encoding) in memory."""
        from . import _json

        head = _json.dumps({**fields, self.field: ""})[:-2]  # ends with `"file":"`

        async def chunks() -> AsyncIterator[bytes]:
            handle = self._open()
            try:
                yield head
                # Disk reads off the event loop: a large scan must not stall other calls.
                while block := await asyncio.to_thread(_read_full, handle, CHUNK_SIZE):
                    yield base64.b64encode(block)
                yield b'"}'
            finally:
                handle.close()

        return chunks


def _read_full(handle: IO[bytes] | io.RawIOBase, size: int) -> bytes:
    # A short read mid-file (a pipe) would put base64 padding in the middle of the text.
    parts: list[bytes] = []
    left = size
    while left:
        part = handle.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


class _Cursor(io.RawIOBase):
    """One attempt's reading of the caller's own file object, which it never closes.

    Attempts do not share the file's position: each read seeks to this attempt's own
    place first, under a lock the attempts share. An attempt given up mid-file (a
    timeout, an answer before the body ended) may still have a read running in a worker
    thread (ours, or aiohttp's for a multipart body) when the retry begins; with the one
    shared position, that read moved the retry's place, and the retry sent the file
    with a piece missing. `start` None: a stream that cannot seek, read once."""

    def __init__(self, handle: IO[bytes], start: int | None, lock: threading.Lock) -> None:
        super().__init__()
        self._handle = handle
        self._place = start
        self._lock = lock
        self.name = getattr(handle, "name", "file")

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        size = -1 if size is None else size
        with self._lock:
            if self._place is None:
                return self._handle.read(size)
            self._handle.seek(self._place)
            data = self._handle.read(size)
            self._place += len(data)
            return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
