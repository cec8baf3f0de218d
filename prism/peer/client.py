"""asyncio peer-protocol client: downloads blobs from lbrynet peers, reflector.go and prism.

Always sends lbry-sdk's request shape (lbry-wire.md §3.1): lbry-sdk's server ignores a bare
`requested_blob` for a blob it lacks, so the four-key form is the one every server answers.
Reads either server's answer form, keeps connections open for reuse (a small pool, so several
downloads can run at once), bounds the connect and the wait for each answer by `timeout` and
gives up on a blob body after `timeout` seconds without a byte, and checks the SHA-384 of every
blob it receives (reflector.go's client does not).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from prism.blob import MAX_BLOB_SIZE, HashMismatchError, validate_hash, verify_blob
from prism.peer.protocol import (
    BLOB_NOT_FOUND,
    NEED_DATA,
    RATE_ACCEPTED,
    BlobComplete,
    BlobData,
    BlobResponse,
    PeerProtocolError,
    ResponseParser,
    encode_availability_request,
    encode_request,
)
from prism.store.base import BlobNotFound

log = logging.getLogger("prism.peer")

T = TypeVar("T")

DEFAULT_TIMEOUT = 5.0
"""Seconds for a connect, for an answer, and of silence within a blob body (reflector.go's default)."""

_HEADER_READ = 64 * 1024


class PeerError(Exception):
    """A download from a peer failed; the message names the peer and what went wrong."""


class PeerConnectError(PeerError):
    """Could not connect to the peer."""


class PeerTimeoutError(PeerError, TimeoutError):
    """The peer did not answer (or finish sending) in time."""


class PeerResponseError(PeerError):
    """The peer answered something we cannot accept: malformed, refused, or the wrong blob."""


class PeerShortReadError(PeerError):
    """The connection closed before the whole answer arrived."""


class PeerHashMismatchError(PeerError, HashMismatchError):
    """The received bytes do not hash to the requested blob hash."""


class PeerBlobNotFound(PeerError, BlobNotFound):
    """The peer does not have the blob (either server form of that answer)."""

    def __init__(self, blob_hash: str, address: str) -> None:
        BlobNotFound.__init__(self, blob_hash, f"blob not found: {address} does not have {blob_hash}")


class _Connection(asyncio.BufferedProtocol):
    """One TCP connection; reads headers through the codec and bodies straight into their buffer."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.parser = ResponseParser()
        self.scratch = bytearray(_HEADER_READ)
        self.header_waiter: asyncio.Future[BlobResponse] | None = None
        self.body_view: memoryview | None = None
        self.body_filled = 0
        self.body_waiter: asyncio.Future[None] | None = None
        self.broken: str | None = None  # why this connection must not be reused

    @property
    def usable(self) -> bool:
        """Fit for the next request: nothing went wrong and no announced blob body is left unread."""
        transport = self.transport
        return (
            self.broken is None
            and not self.parser.in_body
            and transport is not None
            and not transport.is_closing()
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview | bytearray:
        if self.body_view is not None:
            return self.body_view[self.body_filled :]
        return self.scratch

    def buffer_updated(self, nbytes: int) -> None:
        if self.body_view is not None:
            self.body_filled += nbytes
            if self.body_filled >= len(self.body_view):
                self._finish_body()
            return
        self.parser.receive_data(memoryview(self.scratch)[:nbytes])
        waiter = self.header_waiter
        if waiter is None or waiter.done():
            if not self.parser.in_body:
                self._break("peer sent data we did not ask for")
            return  # the start of a body, collected by read_body
        try:
            event = self.parser.next_event()
        except PeerProtocolError as e:
            self._break(e.reason)
            waiter.set_exception(PeerResponseError(f"bad response from {self.address}: {e.reason}"))
            return
        if isinstance(event, BlobResponse):
            waiter.set_result(event)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.broken is None:
            self.broken = "connection closed"
        reason = f": {exc}" if exc else ""
        if self.header_waiter is not None and not self.header_waiter.done():
            self.header_waiter.set_exception(
                PeerShortReadError(f"{self.address} closed the connection before answering{reason}")
            )
        if self.body_waiter is not None and not self.body_waiter.done():
            total = 0 if self.body_view is None else len(self.body_view)
            self.body_waiter.set_exception(
                PeerShortReadError(
                    f"{self.address} closed the connection after {self.body_filled} of {total} "
                    f"blob bytes{reason}"
                )
            )

    def _break(self, reason: str) -> None:
        self.broken = reason
        if self.transport is not None:
            self.transport.abort()

    def _finish_body(self) -> None:
        self.body_view = None
        if self.body_waiter is not None and not self.body_waiter.done():
            self.body_waiter.set_result(None)

    async def request(self, data: bytes) -> BlobResponse:
        """Send one request and wait for the response header."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.header_waiter = loop.create_future()
        try:
            self.transport.write(data)
            return await self.header_waiter
        finally:
            self.header_waiter = None

    async def read_body(self, idle_timeout: float) -> bytearray:
        """Receive the blob body the header just read announced.

        Fails with PeerTimeoutError when no byte arrives for `idle_timeout` seconds, so a slow
        but steady peer can finish a 2 MiB blob while a stalled one is given up quickly.
        """
        parser = self.parser
        length = parser.body_remaining
        body = bytearray(length)
        filled = 0
        while isinstance(event := parser.next_event(), BlobData):  # bytes that came with the header
            body[filled : filled + len(event.data)] = event.data
            filled += len(event.data)
        if event is NEED_DATA:
            await self._read_rest(body, filled, idle_timeout)
            parser.body_bytes_received(length - filled)
            event = parser.next_event()
        assert isinstance(event, BlobComplete)
        if parser.buffered:
            # Bytes beyond the announced blob: the stream position is unknown from here on.
            log.warning("%s sent %d bytes more than announced", self.address, parser.buffered)
            self.broken = "sent more bytes than announced"
        return body

    async def _read_rest(self, body: bytearray, filled: int, idle_timeout: float) -> None:
        """Let the kernel write the rest of `body` (from `filled` on) straight into it."""
        length = len(body)
        if self.transport is None:
            raise PeerShortReadError(f"{self.address} closed the connection after {filled} of {length} bytes")
        loop = asyncio.get_running_loop()
        self.body_waiter = waiter = loop.create_future()
        self.body_filled = filled
        self.body_view = memoryview(body)
        try:
            seen = -1
            while not waiter.done():
                if self.body_filled == seen:
                    raise PeerTimeoutError(
                        f"{self.address} sent nothing for {idle_timeout:g} s "
                        f"({self.body_filled} of {length} blob bytes received)"
                    )
                seen = self.body_filled
                await asyncio.wait((waiter,), timeout=idle_timeout)
            waiter.result()  # raises what connection_lost put there
        finally:
            self.body_waiter = None
            self.body_view = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class PeerClient:
    """Client of one peer at `host:port`, with up to `max_connections` reused connections."""

    def __init__(
        self, host: str, port: int, timeout: float = DEFAULT_TIMEOUT, *, max_connections: int = 4
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._closed = False

    async def has(self, blob_hash: str) -> bool:
        """Whether the peer says it has the blob (an availability query, no download)."""
        validate_hash(blob_hash)
        async with self._connection() as conn:
            response = await self._timed(conn.request(encode_availability_request([blob_hash])), conn)
            if response.available_blobs is None:
                conn.broken = "answer without available_blobs"
                raise PeerResponseError(
                    f"{self.address} answered an availability query without available_blobs"
                )
            return blob_hash in response.available_blobs

    async def get(self, blob_hash: str, expected_length: int | None = None) -> bytes:
        """Download one blob and return its bytes, verified against `blob_hash`.

        Raises PeerBlobNotFound when the peer lacks it, and another PeerError subclass on
        refusal, timeout, short read, a malformed answer or a hash mismatch.
        """
        validate_hash(blob_hash)
        async with self._connection() as conn:
            body = await self._download(conn, blob_hash, expected_length)
        try:
            verify_blob(blob_hash, body)
        except HashMismatchError as e:
            raise PeerHashMismatchError(f"blob from {self.address}: {e}") from None
        return bytes(body)

    async def _download(self, conn: _Connection, blob_hash: str, expected_length: int | None) -> bytearray:
        response = await self._timed(conn.request(encode_request(blob_hash)), conn)
        incoming = response.incoming_blob
        if incoming is not None and incoming.error is not None:
            if BLOB_NOT_FOUND in incoming.error:
                raise PeerBlobNotFound(blob_hash, self.address)
            raise PeerResponseError(f"{self.address} refused {blob_hash[:8]}: {incoming.error}")
        if incoming is None:
            # lbry-sdk's server answers a blob it lacks with no incoming_blob at all.
            if response.available_blobs is not None and blob_hash not in response.available_blobs:
                raise PeerBlobNotFound(blob_hash, self.address)
            conn.broken = "answer without incoming_blob"
            raise PeerResponseError(f"{self.address} answered without incoming_blob for {blob_hash[:8]}")
        if response.blob_data_payment_rate is not None and response.blob_data_payment_rate != RATE_ACCEPTED:
            conn.broken = "rate refused"
            raise PeerResponseError(
                f"{self.address} refused the payment rate for {blob_hash[:8]}: "
                f"{response.blob_data_payment_rate}"
            )
        if incoming.blob_hash != blob_hash:
            conn.broken = "wrong blob announced"
            raise PeerResponseError(
                f"{self.address} offered blob {incoming.blob_hash[:16]!r}, not {blob_hash[:8]}"
            )
        if expected_length is not None and incoming.length != expected_length:
            conn.broken = "wrong length announced"
            raise PeerResponseError(
                f"{self.address} announced {incoming.length} bytes for {blob_hash[:8]}, "
                f"expected {expected_length}"
            )
        if not 0 < incoming.length <= MAX_BLOB_SIZE:  # pragma: no cover - the codec rejects these
            conn.broken = "bad length"
            raise PeerResponseError(f"{self.address} announced an invalid length {incoming.length}")
        return await conn.read_body(self.timeout)

    async def _timed(self, operation: Awaitable[T], conn: _Connection) -> T:
        try:
            async with asyncio.timeout(self.timeout):
                return await operation
        except TimeoutError:
            conn.broken = "timed out"
            raise PeerTimeoutError(f"{self.address} did not answer within {self.timeout:g} s") from None
        except PeerError as e:
            if not isinstance(e, BlobNotFound) and conn.broken is None:
                conn.broken = str(e)
            raise

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[_Connection]:
        if self._closed:
            raise PeerError(f"client for {self.address} is closed")
        async with self._slots:
            conn = None
            while self._idle:
                candidate = self._idle.pop()
                if candidate.usable:
                    conn = candidate
                    break
                candidate.close()
            if conn is None:
                conn = await self._connect()
            try:
                yield conn
            except BlobNotFound:
                raise  # a complete answer: the connection stays usable
            except BaseException:
                if conn.broken is None:
                    conn.broken = "operation interrupted"
                raise
            finally:
                if conn.usable and not self._closed:
                    self._idle.append(conn)
                else:
                    conn.close()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        conn = _Connection(self.address)
        try:
            async with asyncio.timeout(self.timeout):
                await loop.create_connection(lambda: conn, self.host, self.port)
        except TimeoutError:
            raise PeerTimeoutError(f"could not connect to {self.address} within {self.timeout:g} s") from None
        except OSError as e:
            raise PeerConnectError(f"could not connect to {self.address}: {e.strerror or e}") from None
        return conn

    async def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()

    async def __aenter__(self) -> PeerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
