"""A small HTTP/1.1 client for one upstream: keep-alive connection pool, bodies received in place.

The protocol is an `asyncio.BufferedProtocol` whose `get_buffer` hands the socket the response
reader's next buffer (`prism.http.h1client`): a body with a Content-Length is received
straight into the buffer it is handed on in, without the chunk list and join of a stream
reader. Requests have no body (GET, HEAD). A request on a reused connection that fails before
any byte of its answer arrived (the server closed the idle connection meanwhile) is retried
once on a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from prism.http.h1client import SCRATCH, Alloc, ResponseError, ResponseHead, ResponseReader, request_bytes


class HttpClientError(Exception):
    """The request failed: no connection, a broken or invalid response, or a timeout."""


class Response:
    """A complete response: its head and its whole body."""

    __slots__ = ("body", "head")

    def __init__(self, head: ResponseHead, body: bytearray) -> None:
        self.head = head
        self.body = body

    @property
    def status(self) -> int:
        return self.head.status

    @property
    def reason(self) -> str:
        return self.head.reason


class _Connection(asyncio.BufferedProtocol):
    """One connection; carries one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader: ResponseReader | None = None
        self.done: asyncio.Future[None] | None = None
        self.usable = True
        self.scratch = bytearray(SCRATCH)
        """Lent to each response's reader: one allocation per connection, not per request."""
        self._idle = memoryview(bytearray(1024))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.reader is None:
            return self._idle  # bytes on an idle connection: it is broken (see buffer_updated)
        return self.reader.recv_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        reader = self.reader
        if reader is None:
            self._fail(ResponseError("bytes arrived on an idle connection"))
            return
        try:
            reader.received(nbytes)
        except ResponseError as e:
            self._fail(e)
            return
        if reader.complete:
            self._settle(None)

    def eof_received(self) -> bool | None:
        reader = self.reader
        self.usable = False
        if reader is not None:
            try:
                reader.eof()
            except ResponseError as e:
                self._fail(e)
                return None
            self._settle(None)
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        self._settle(ConnectionResetError(f"connection lost: {exc}" if exc else "connection closed"))

    def _fail(self, error: Exception) -> None:
        self.usable = False
        if self.transport is not None:
            self.transport.abort()
        self._settle(error)

    def _settle(self, error: Exception | None) -> None:
        done = self.done
        if done is not None and not done.done():
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

    def close(self) -> None:
        self.usable = False
        if self.transport is not None:
            self.transport.close()


class HttpClient:
    """GET and HEAD against `host:port` over up to `max_connections` keep-alive connections.

    `timeout` bounds a whole request (connecting, waiting, receiving); idle connections are
    closed after `idle_timeout` seconds unused.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_connections: int = 100,
        timeout: float = 30.0,
        idle_timeout: float = 60.0,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.headers = headers or []
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[tuple[_Connection, float]] = []
        self._busy: set[_Connection] = set()
        self._closed = False

    async def request(
        self, method: str, target: str, *, max_body: int, alloc: Alloc | None = None
    ) -> Response:
        """Send `method target` and return the whole response; raises HttpClientError."""
        if self._closed:
            raise HttpClientError("client closed")
        data = request_bytes(method, target, self.host_header, self.headers)
        try:
            async with self._slots, asyncio.timeout(self.timeout):
                for attempt in (0, 1):
                    conn, reused = await self._connection(fresh=attempt > 0)
                    reader = ResponseReader(method, max_body=max_body, alloc=alloc, scratch=conn.scratch)
                    try:
                        await self._exchange(conn, reader, data)
                    except (ConnectionError, ResponseError) as e:
                        if reused and not reader.received_any and attempt == 0:
                            continue  # the server closed an idle connection: once more on a new one
                        raise HttpClientError(f"{self.host_header}: {e}") from e
                    assert reader.head is not None
                    return Response(reader.head, reader.body)
        except TimeoutError:
            raise HttpClientError(f"{self.host_header}: no answer within {self.timeout:g}s") from None
        except OSError as e:
            raise HttpClientError(f"{self.host_header}: {e}") from e
        raise AssertionError("unreachable")  # pragma: no cover

    async def _exchange(self, conn: _Connection, reader: ResponseReader, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        conn.reader = reader
        conn.done = loop.create_future()
        self._busy.add(conn)
        ok = False
        try:
            assert conn.transport is not None
            conn.transport.write(data)
            await conn.done
            ok = True
        finally:
            conn.reader = None
            conn.done = None
            self._busy.discard(conn)
            if ok and reader.keep_alive and not reader.extra and conn.usable and not self._closed:
                self._idle.append((conn, loop.time()))
            else:
                conn.close()

    async def _connection(self, fresh: bool) -> tuple[_Connection, bool]:
        now = asyncio.get_running_loop().time()
        while self._idle and not fresh:
            conn, since = self._idle.pop()
            if conn.usable and now - since < self.idle_timeout:
                return conn, True
            conn.close()
        loop = asyncio.get_running_loop()
        _transport, conn = await loop.create_connection(_Connection, self.host, self.port)
        return conn, False

    async def close(self) -> None:
        """Close every connection; requests in flight fail."""
        self._closed = True
        for conn, _since in self._idle:
            conn.close()
        self._idle.clear()
        for conn in list(self._busy):
            conn.close()
