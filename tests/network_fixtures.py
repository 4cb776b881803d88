"""Servers on 127.0.0.1 for the tests of where requests go: the emulator behind TLS with
a certificate from a CA no system trusts (trustme), and an egress proxy that opens
CONNECT tunnels. The CA itself is the `ca` fixture (conftest.py)."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from typing import Any

import trustme
from aiohttp import web

from aiodots.testing import DotsEmulator


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now, for a server in another process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    """Stop a server started as a subprocess: SIGTERM, SIGKILL if it has not ended 30 s
    later, and its stderr (a pipe) drained."""
    if proc.returncode is None:
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), timeout=30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
    assert proc.stderr is not None
    await proc.stderr.read()


async def serve(app: web.Application, **site: Any) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, **site).start()
    return runner, runner.addresses[0][1]


async def serve_tls(
    emulator: DotsEmulator, ca: trustme.CA, host: str = "127.0.0.1"
) -> tuple[web.AppRunner, int]:
    """The emulator over TLS on 127.0.0.1, with a certificate `ca` issued for `host`."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(host).configure_cert(server_context)
    return await serve(emulator._app, ssl_context=server_context)


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


class ConnectProxy:
    """An egress proxy on 127.0.0.1: it opens CONNECT tunnels for clients that give its
    credentials, answers 407 to others, and records what it was asked and every byte it
    relayed."""

    def __init__(self, credentials: str | None, answer: bytes | None = None) -> None:
        # None: a proxy that lets anyone through (one that trusts the address it is
        # reached from, say) and so expects no Proxy-Authorization at all.
        self.expected = None if credentials is None else basic(credentials)
        self.answer = answer  # given: what it says to every CONNECT, instead of a tunnel
        self.asked: list[tuple[str, str, str | None]] = []
        self.relayed = bytearray()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> ConnectProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        fields = dict(line.split(":", 1) for line in lines if ":" in line)
        headers = {name.strip().lower(): value.strip() for name, value in fields.items()}
        auth = headers.get("proxy-authorization")
        self.asked.append((method, target, auth))
        if method != "CONNECT" or auth != self.expected:
            status = "405 Method Not Allowed" if method != "CONNECT" else (
                "407 Proxy Authentication Required"
            )
            writer.write(
                f"HTTP/1.1 {status}\r\nProxy-Authenticate: Basic realm=\"egress\"\r\n"
                "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            writer.close()
            return
        if self.answer is not None:
            writer.write(self.answer)
            await writer.drain()
            writer.close()
            return
        host, _, port = target.rpartition(":")
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        self._writers.append(upstream_writer)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(
            self._relay(reader, upstream_writer), self._relay(upstream_reader, writer)
        )

    async def _relay(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                self.relayed += data
                sink.write(data)
                await sink.drain()
        except ConnectionError:
            pass
        finally:
            sink.close()
