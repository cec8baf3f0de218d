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
from collections.abc import Callable
from functools import partial

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


BodyListener = Callable[[ResponseReader], None]
"""Called with the reader after each receive once a response's head is in (see `HttpClient.open`)."""


class Incoming:
    """A response whose head is in and whose body may still be arriving.

    `body` is the body's final buffer when `reader.receiving_in_place` (a Content-Length body):
    its first `body_received` bytes are in. `done` settles when the body is complete (the
    connection then goes back to the pool) or failed.
    """

    __slots__ = ("_conn", "done", "head", "reader", "source")

    def __init__(
        self, conn: _Connection, reader: ResponseReader, done: asyncio.Future[None], source: str
    ) -> None:
        assert reader.head is not None
        self.source = source
        """HOST:PORT, for errors."""
        self._conn = conn
        self.reader = reader
        self.head = reader.head
        self.done = done

    @property
    def body(self) -> bytearray:
        return self.reader.body

    @property
    def body_received(self) -> int:
        return self.reader.body_received

    def abort(self) -> None:
        """Give the response up: the connection is closed."""
        if not self.done.done():
            self._conn.fail(ConnectionAbortedError("response given up"))

    async def wait(self) -> Response:
        """The whole response, once its body is in; raises HttpClientError if it fails."""
        try:
            await asyncio.shield(self.done)
        except TimeoutError as e:
            raise HttpClientError(str(e)) from None
        except (OSError, ResponseError) as e:
            raise HttpClientError(f"{self.source}: {e}") from e
        return Response(self.head, self.reader.body)


class _Connection(asyncio.BufferedProtocol):
    """One connection; carries one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader: ResponseReader | None = None
        self.head_in: asyncio.Future[None] | None = None
        """Settled (never with an error) once the head is in or the exchange failed."""
        self.done: asyncio.Future[None] | None = None
        self.progress: BodyListener | None = None
        self.ended: Callable[[bool], None] | None = None
        """Called at once (not scheduled) when the exchange ends, with whether it succeeded."""
        self.holds_slot = False
        self.expire: asyncio.TimerHandle | None = None
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
            self.fail(ResponseError("bytes arrived on an idle connection"))
            return
        try:
            reader.received(nbytes)
        except ResponseError as e:
            self.fail(e)
            return
        if reader.head is not None and self.progress is not None:
            self.progress(reader)
        if reader.complete:
            self._settle(None)
        elif reader.head is not None:
            _resolve(self.head_in)

    def eof_received(self) -> bool | None:
        reader = self.reader
        self.usable = False
        if reader is not None:
            try:
                reader.eof()
            except ResponseError as e:
                self.fail(e)
                return None
            self._settle(None)
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        self._settle(ConnectionResetError(f"connection lost: {exc}" if exc else "connection closed"))

    def fail(self, error: Exception) -> None:
        """End the exchange with `error`; the connection is aborted."""
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
        _resolve(self.head_in)
        ended, self.ended = self.ended, None
        if ended is not None:
            # At once: a caller resumed by `done` must find the connection back in the pool.
            ended(error is None)

    def close(self) -> None:
        self.usable = False
        if self.transport is not None:
            self.transport.close()


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark an exchange's error as seen: a body nobody waited for may fail unheard."""
    if not future.cancelled():
        future.exception()


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


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
        incoming = await self.open(method, target, max_body=max_body, alloc=alloc)
        try:
            return await incoming.wait()
        except asyncio.CancelledError:
            incoming.abort()
            raise

    async def open(
        self,
        method: str,
        target: str,
        *,
        max_body: int,
        alloc: Alloc | None = None,
        on_body: BodyListener | None = None,
    ) -> Incoming:
        """Send `method target` and return once the response's head is in; raises HttpClientError.

        The body goes on arriving (`Incoming`); `timeout` still bounds the whole exchange.
        `on_body(reader)` is called after every receive from the one that completes the head on,
        as it happens: the caller may act on bytes before this coroutine resumes.
        """
        if self._closed:
            raise HttpClientError("client closed")
        data = request_bytes(method, target, self.host_header, self.headers)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        late = f"{self.host_header}: no answer within {self.timeout:g}s"
        try:
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        except TimeoutError:
            raise HttpClientError(late) from None
        handed_on = False
        try:
            for attempt in (0, 1):
                try:
                    async with asyncio.timeout_at(deadline):
                        conn, reused = await self._connection(fresh=attempt > 0)
                except TimeoutError:
                    raise HttpClientError(late) from None
                reader = ResponseReader(method, max_body=max_body, alloc=alloc, scratch=conn.scratch)
                done = self._begin(conn, reader, data, on_body)
                head_in = conn.head_in
                assert head_in is not None
                try:
                    async with asyncio.timeout_at(deadline):
                        await asyncio.shield(head_in)
                except BaseException as e:  # a timeout or a cancel: the exchange is given up
                    conn.fail(TimeoutError(late) if isinstance(e, TimeoutError) else ConnectionAbortedError())
                    raise
                if reader.head is None:  # the exchange failed before its head
                    error = done.exception()
                    if reused and not reader.received_any and attempt == 0:
                        continue  # the server closed an idle connection: once more on a new one
                    raise HttpClientError(f"{self.host_header}: {error}") from error
                if not done.done():  # the slot and a deadline go with the body still arriving
                    conn.holds_slot = True
                    conn.expire = loop.call_at(deadline, conn.fail, TimeoutError(late))
                    handed_on = True
                return Incoming(conn, reader, done, self.host_header)
        except TimeoutError:
            raise HttpClientError(late) from None
        except OSError as e:
            raise HttpClientError(f"{self.host_header}: {e}") from e
        finally:
            if not handed_on:
                self._slots.release()
        raise AssertionError("unreachable")  # pragma: no cover

    def _begin(
        self, conn: _Connection, reader: ResponseReader, data: bytes, on_body: BodyListener | None = None
    ) -> asyncio.Future[None]:
        """Send the request on `conn`; the connection goes back to the pool (or closes) once `done`."""
        loop = asyncio.get_running_loop()
        conn.reader = reader
        conn.head_in = loop.create_future()
        done: asyncio.Future[None] = loop.create_future()
        conn.done = done
        conn.progress = on_body
        conn.ended = partial(self._end, conn, reader)
        self._busy.add(conn)
        done.add_done_callback(_retrieve)
        assert conn.transport is not None
        conn.transport.write(data)
        return done

    def _end(self, conn: _Connection, reader: ResponseReader, ok: bool) -> None:
        conn.reader = None
        conn.head_in = None
        conn.done = None
        conn.progress = None
        if conn.expire is not None:
            conn.expire.cancel()
            conn.expire = None
        if conn.holds_slot:
            conn.holds_slot = False
            self._slots.release()
        self._busy.discard(conn)
        if ok and reader.keep_alive and not reader.extra and conn.usable and not self._closed:
            self._idle.append((conn, asyncio.get_running_loop().time()))
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
