"""Just enough HTTP/1.1 for the demo: a keep-alive server on asyncio streams and a loopback client.

Why our own and not aiohttp: ``sanaa-mem demo`` must run after a plain ``pip install`` of the package,
and a real HTTP exchange over a real socket is all the demo needs to show. Requests have no body; every
response carries ``Content-Length``. Anything else is answered with 400 and the connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

#: ``(status, body)`` (a JSON body) or ``(status, body, content_type)``.
Response = tuple[int, bytes] | tuple[int, bytes, str]
Handler = Callable[[str, str], Awaitable[Response]]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
# Bounds on what a peer can make the server hold.
_MAX_LINE = 8192
_MAX_HEADERS = 100


class HTTPServer:
    """Serves ``handler(method, path) -> (status, body)`` on 127.0.0.1 (a free port unless given).

    ``async with HTTPServer(handler) as server:`` binds and listens; leaving closes the listener and every
    open connection, and waits for their handlers (cancelled if still running).
    """

    def __init__(self, handler: Handler, *, port: int = 0) -> None:
        self._handler = handler
        self._port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.requests = 0

    @property
    def port(self) -> int:
        assert self._server is not None, "the server is not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aenter__(self) -> HTTPServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self._port, limit=_MAX_LINE)
        return self

    async def __aexit__(self, *exc: object) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(set(self._connections))
        await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                request = await _read_head(reader)
                if request is None:
                    return
                method, path, keep_alive = request
                content_type = "application/json"
                try:
                    answer = await self._handler(method, path)
                    status, body = answer[0], answer[1]
                    if len(answer) == 3:
                        content_type = answer[2]
                except Exception as exc:
                    status, body = 500, f"{type(exc).__name__}: {exc}".encode()
                self.requests += 1
                writer.write(_response(status, body, keep_alive, content_type))
                await writer.drain()
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, bool] | None:
    """``(method, path, keep_alive)`` of the next request, or None at a clean end of the connection."""
    line = await reader.readline()
    if not line:
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ValueError("malformed request line")
    keep_alive = parts[2] == "HTTP/1.1"
    for _ in range(_MAX_HEADERS):
        header = await reader.readline()
        if header in (b"\r\n", b"\n"):
            return parts[0], parts[1], keep_alive
        if not header:
            raise asyncio.IncompleteReadError(header, None)
        name, _, value = header.decode("latin-1").partition(":")
        if name.strip().lower() == "connection":
            keep_alive = value.strip().lower() != "close"
    raise ValueError("too many headers")


def _response(status: int, body: bytes, keep_alive: bool, content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class HTTPClient:
    """One keep-alive connection to ``127.0.0.1:port``; ``await client.get(path)`` -> ``(status, body)``.

    Reconnects on the next request after the server closed the connection. ``aclose()`` closes it.
    """

    def __init__(self, port: int) -> None:
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        if self._writer is None or self._reader is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self._port)
        reader, writer = self._reader, self._writer
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode("latin-1"))
            await writer.drain()
            status_line = await reader.readline()
            parts = status_line.split()
            if len(parts) < 2:
                raise ConnectionResetError("the server closed the connection")
            status = int(parts[1])
            length = 0
            keep_alive = True
            while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = header.decode("latin-1").partition(":")
                key = name.strip().lower()
                if key == "content-length":
                    length = int(value)
                elif key == "connection":
                    keep_alive = value.strip().lower() != "close"
            body = await reader.readexactly(length)
        except BaseException:
            await self.aclose()  # half a response read: the connection cannot be reused
            raise
        if not keep_alive:
            await self.aclose()
        return status, body

    async def aclose(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
