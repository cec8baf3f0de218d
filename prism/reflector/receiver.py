"""The reflector receiver: accepts blob uploads over TCP (reflector.md §4.3).

Each connection is an asyncio BufferedProtocol. JSON requests go through the sans-IO
`ReceiverConnection`; blob bodies are read by the kernel straight into a reused 2 MiB buffer
and hashed as they arrive, so a blob costs one recv copy, one SHA-384 pass and the store's
write. A blob reaches the store only after all its bytes arrived and their hash matched.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass, replace

from prism.blob import MAX_BLOB_SIZE
from prism.hostport import HostPort, bind_socket
from prism.logs import access_line
from prism.reflector.protocol import (
    BlobComplete,
    BlobData,
    BlobOffer,
    Handshake,
    NeedData,
    ReceiverConnection,
    ReceiverState,
    ReflectorProtocolError,
)
from prism.store.base import (
    BlobNotFound,
    BlobStore,
    Blocklister,
    NeededBlobChecker,
    StoreError,
    Timer,
    find_capability,
    put_borrows_data,
)
from prism.stream.errors import SdBlobError
from prism.stream.sd import SdBlob

log = logging.getLogger("prism.reflector")
access_log = logging.getLogger("prism.reflector.access")
"""One DEBUG line per request (`-v reflector`)."""

DEFAULT_PORT = 5566
DEFAULT_TIMEOUT = 180.0
DEFAULT_MAX_CONNECTIONS = 1024
_SCRATCH_SIZE = 65536
_POOLED_BUFFERS = 16


class UploadRefused(Exception):
    """A connection-ending upload problem, with the reason that gets logged."""


@dataclass(slots=True)
class ReceiverStats:
    connections: int = 0
    blobs_received: int = 0
    sd_blobs_received: int = 0
    bytes_received: int = 0
    errors: int = 0


class ReflectorReceiver:
    """TCP server of the reflector protocol. Writes to `store`; asks `underlying or store` what it wants."""

    def __init__(
        self,
        store: BlobStore,
        *,
        underlying: BlobStore | None = None,
        host: str = "0.0.0.0",
        port: int = DEFAULT_PORT,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self.store = store
        self.underlying = underlying if underlying is not None else store
        self.host = host
        self._requested_port = port
        self.timeout = timeout
        self.max_connections = max_connections
        # type-abstract: mypy refuses a Protocol as type[T] (python/mypy#4717); isinstance on it is fine.
        self.blocklister = find_capability(self.underlying, Blocklister)  # type: ignore[type-abstract]
        self.needed_checker = find_capability(self.underlying, NeededBlobChecker)  # type: ignore[type-abstract]
        self.stats = ReceiverStats()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._protocols: set[_ReceiverProtocol] = set()
        self._buffers: list[bytearray] = []
        # A store that only borrows `put` data gets a view of the reused receive buffer;
        # any other store gets bytes of its own, since it might keep them.
        self.zero_copy = put_borrows_data(store)

    def snapshot(self) -> ReceiverStats:
        """A copy of the counters, for metrics."""
        return replace(self.stats)

    @property
    def port(self) -> int:
        """The bound port (the requested one until `start`)."""
        if self._server is not None and self._server.sockets:
            port: int = self._server.sockets[0].getsockname()[1]
            return port
        return self._requested_port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        sock = bind_socket(self.host, self._requested_port)
        try:
            self._server = await loop.create_server(lambda: _ReceiverProtocol(self), sock=sock)
        except BaseException:
            sock.close()
            raise
        log.info("reflector receiver listening on %s", HostPort(self.host, self.port))

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, give running uploads `grace` seconds, then cut them off."""
        if self._server is None:
            return
        self._server.close()
        handlers = set(self._handlers)
        if handlers:
            _done, pending = await asyncio.wait(handlers, timeout=grace)
            for proto in list(self._protocols):
                proto.abort()
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        log.info("reflector receiver stopped")

    # -- buffers --------------------------------------------------------------------

    def _take_buffer(self) -> bytearray:
        return self._buffers.pop() if self._buffers else bytearray(MAX_BLOB_SIZE)

    def _give_buffer(self, buf: bytearray) -> None:
        if len(self._buffers) < _POOLED_BUFFERS:
            self._buffers.append(buf)

    # -- decisions ------------------------------------------------------------------

    async def _wants(self, blob_hash: str) -> bool:
        if self.blocklister is not None:
            return await self.blocklister.wants(blob_hash)
        return not await self.underlying.has(blob_hash)

    async def answer_offer(self, offer: BlobOffer) -> tuple[bool, list[str]]:
        """(send?, needed_blobs) for an offer, per reflector.md §4.3 b-c."""
        wants = await self._wants(offer.blob_hash)
        if not offer.is_sd or wants:
            return wants, []
        if self.needed_checker is not None:
            return False, list(await self.needed_checker.missing_blobs_for_known_stream(offer.blob_hash))
        content = await self._content_blobs_of_stored_sd(offer.blob_hash)
        if content is None:
            if self.blocklister is not None and not await self.underlying.has(offer.blob_hash):
                return False, []  # blocked: never take it, report nothing needed
            return True, []  # cannot read it: ask for it again, the client then offers every blob
        needed = [h for h in content if await self._wants(h)]
        return False, needed

    async def _content_blobs_of_stored_sd(self, sd_hash: str) -> list[str] | None:
        """Content blob hashes listed by the stored sd blob, or None if it cannot be read."""
        try:
            ref = await self.store.get(sd_hash)
        except BlobNotFound:
            return None
        except Exception as e:
            log.warning("reading stored sd blob %s failed: %s", sd_hash[:16], e)
            return None
        try:
            with ref:
                data = await asyncio.to_thread(ref.read) if ref.file is not None else ref.read()
            return SdBlob.parse(data).content_hashes
        except (SdBlobError, OSError, StoreError) as e:
            log.warning("stored sd blob %s cannot be parsed (%s): asking for it again", sd_hash[:16], e)
            return None

    async def store_blob(self, offer: BlobOffer, view: memoryview) -> None:
        """Hand a received, verified blob to the store (a view of the buffer when it only borrows it).

        An sd blob must parse as one whatever the store: a DB-backed store would refuse it anyway,
        and a plain store would keep bytes that no reader can use.
        """
        data = view if self.zero_copy else bytes(view)
        # arg-type: stores are typed for bytes; one that borrows `put` data reads any buffer.
        if offer.is_sd:
            try:
                SdBlob.parse(view)
            except SdBlobError as e:
                raise UploadRefused(
                    f"sd blob {offer.blob_hash[:16]}... is not a valid sd blob: {e}"
                ) from None
            await self.store.put_sd(offer.blob_hash, data)  # type: ignore[arg-type]
        else:
            await self.store.put(offer.blob_hash, data)  # type: ignore[arg-type]

    def count(self, offer: BlobOffer) -> None:
        stats = self.stats
        stats.bytes_received += offer.size
        if offer.is_sd:
            stats.sd_blobs_received += 1
        else:
            stats.blobs_received += 1


class _ReceiverProtocol(asyncio.BufferedProtocol):
    """One connection: bytes in through `get_buffer`, the handler coroutine does the rest."""

    def __init__(self, receiver: ReflectorReceiver) -> None:
        self.receiver = receiver
        self.codec = ReceiverConnection()
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self._scratch = bytearray(_SCRATCH_SIZE)
        self._body: memoryview | None = None  # where body bytes go while receiving a blob
        self._body_filled = 0
        self._hasher: hashlib._Hash | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._eof = False
        self._task: asyncio.Task[None] | None = None
        self._buffer: bytearray | None = None  # the blob buffer, taken from the pool at the first body

    # -- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        receiver = self.receiver
        if len(receiver._protocols) >= receiver.max_connections:
            log.warning(
                "refusing connection from %s: %d connections open", self.peer, len(receiver._protocols)
            )
            transport.abort()
            return
        transport.pause_reading()
        receiver._protocols.add(self)
        receiver.stats.connections += 1
        self._task = asyncio.get_running_loop().create_task(self._handle())
        receiver._handlers.add(self._task)
        self._task.add_done_callback(receiver._handlers.discard)

    def get_buffer(self, sizehint: int) -> memoryview | bytearray:
        if self._body is not None:
            return self._body[self._body_filled :]
        return self._scratch

    def buffer_updated(self, nbytes: int) -> None:
        body = self._body
        if body is not None:
            start = self._body_filled
            self._body_filled = start + nbytes
            assert self._hasher is not None
            self._hasher.update(body[start : self._body_filled])
            if self._body_filled < len(body):
                return
        else:
            self.codec.receive_data(memoryview(self._scratch)[:nbytes])
        assert self.transport is not None
        self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return True  # keep the write side open: a refused blob still gets its `received_*: false`

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self.receiver._protocols.discard(self)
        self._wake()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- reading ----------------------------------------------------------------------

    async def _wait_for_bytes(self, what: str) -> None:
        """Resume reading until the next delivery: EOFError at end of stream, UploadRefused on timeout."""
        if self._eof:
            raise EOFError
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.resume_reading()
        try:
            async with asyncio.timeout(self.receiver.timeout):
                await self._waiter
        except TimeoutError:
            raise UploadRefused(f"timed out after {self.receiver.timeout:g} s waiting for {what}") from None
        finally:
            self._waiter = None
            if not self.transport.is_closing():
                self.transport.pause_reading()

    async def _next_event(self) -> Handshake | BlobOffer | BlobData | BlobComplete:
        while True:
            event = self.codec.next_event()
            if not isinstance(event, NeedData):
                return event
            await self._wait_for_bytes("a request")

    async def _receive_body(self, offer: BlobOffer, buf: bytearray) -> memoryview:
        """Exactly `offer.size` bytes into `buf`, hashed on the way; the view of them."""
        view = memoryview(buf)[: offer.size]
        hasher = hashlib.sha384()
        filled = 0
        # Bytes that arrived with the offer (a client that did not wait) come first.
        while filled < offer.size:
            event = self.codec.next_event()
            if not isinstance(event, BlobData):
                break
            view[filled : filled + len(event.data)] = event.data
            hasher.update(event.data)
            filled += len(event.data)
        if filled < offer.size:
            self._hasher = hasher
            self._body = view
            self._body_filled = filled
            try:
                started = time.monotonic()
                while self._body_filled < offer.size:
                    try:
                        await self._wait_for_bytes(f"blob bytes ({self._body_filled} of {offer.size} read)")
                    except EOFError:
                        raise UploadRefused(
                            f"connection closed after {self._body_filled} of {offer.size} blob bytes"
                        ) from None
                self.codec.body_bytes_received(offer.size - filled)
                log.debug("received %d bytes in %.3f s", offer.size, time.monotonic() - started)
            finally:
                self._body = None
                self._hasher = None
        if hasher.hexdigest() != offer.blob_hash:
            raise _HashMismatch(
                "hash of received blob data does not match hash from send request"
                f" ({hasher.hexdigest()[:16]}...)"
            )
        return view

    def _write(self, data: bytes) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(data)

    # -- the conversation -------------------------------------------------------------

    async def _handle(self) -> None:
        receiver = self.receiver
        try:
            await self._converse()
        except EOFError:
            if self.codec.state is not ReceiverState.HANDSHAKE or self.codec.buffered:
                receiver.stats.errors += 1
                log.warning("%s: connection closed mid-request", self.peer)
        except (ReflectorProtocolError, UploadRefused, _HashMismatch) as e:
            receiver.stats.errors += 1
            log.warning("upload from %s refused: %s", self.peer, e)
        except asyncio.CancelledError:
            self._buffer = None  # a store's thread may still be reading it: never reuse it
            raise
        except Exception:
            receiver.stats.errors += 1
            log.exception("reflector connection from %s failed", self.peer)
        finally:
            self.codec.close()
            if self._buffer is not None:
                receiver._give_buffer(self._buffer)
            if self.transport is not None:
                with contextlib.suppress(Exception):
                    self.transport.close()

    async def _converse(self) -> None:
        event = await self._next_event()
        assert isinstance(event, Handshake)
        self._write(self.codec.send_version(event.version))
        while (offer := await self._next_offer()) is not None:
            send, needed = await self.receiver.answer_offer(offer)
            self._write(self.codec.send_offer_answer(send, needed))
            if send:
                await self._receive_and_store(offer)

    async def _next_offer(self) -> BlobOffer | None:
        """The next offer, or None when the client is done (closed, or idle between offers)."""
        try:
            event = await self._next_event()
        except EOFError:
            if self.codec.buffered:
                raise UploadRefused("connection closed in the middle of a request") from None
            return None
        except UploadRefused:
            if self.codec.buffered:
                raise
            log.debug("%s: closing idle connection", self.peer)
            return None
        assert isinstance(event, BlobOffer)
        return event

    async def _receive_and_store(self, offer: BlobOffer) -> None:
        receiver = self.receiver
        timer = Timer()
        if self._buffer is None:
            self._buffer = receiver._take_buffer()
        try:
            view = await self._receive_body(offer, self._buffer)
        except (UploadRefused, _HashMismatch):
            self._write(self.codec.send_received(False))
            raise
        event = self.codec.next_event()
        assert isinstance(event, BlobComplete)
        try:
            await receiver.store_blob(offer, view)
        except UploadRefused:
            self._write(self.codec.send_received(False))
            raise
        except Exception as e:
            self._write(self.codec.send_received(False))
            raise UploadRefused(f"storing {'sd ' if offer.is_sd else ''}blob failed: {e}") from e
        self._write(self.codec.send_received(True))
        receiver.count(offer)
        action = "reflector PUT-SD" if offer.is_sd else "reflector PUT"
        access_log.debug(
            access_line(self.peer, action, offer.blob_hash, "stored", offer.size, timer.elapsed() / 1e9, "-")
        )


class _HashMismatch(Exception):
    pass
