"""The reflector receiver: accepts blob uploads over TCP (reflector.md §4.3).

Each connection is an asyncio BufferedProtocol. JSON requests go through the sans-IO
`ReceiverConnection`; blob bodies are hashed as they arrive. Memory for a body is committed as
its bytes arrive: the first `_GROW_LIMIT` bytes go (through one scratch buffer shared by every
connection) into a small buffer of the connection's own; past that, the kernel reads straight
into a full-size buffer of the receiver's one bounded `BufferPool` (a global byte budget), so a
client that offers 2 MiB and sends one byte holds one byte, not 2 MiB. A read that makes no
progress for `read_timeout` seconds ends the upload; `timeout` bounds a whole blob. A blob
reaches the store only after all its bytes arrived and their hash matched.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from prism.admission import Admission
from prism.blob import MAX_BLOB_SIZE
from prism.logs import RepeatFilter, access_line
from prism.memory import MALLOC_TRIM, BufferPool
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
from prism.tcpserver import AdmittedConnection, TcpListener

log = logging.getLogger("prism.reflector")
access_log = logging.getLogger("prism.reflector.access")
"""One DEBUG line per request (`-v reflector`)."""

DEFAULT_PORT = 5566
DEFAULT_TIMEOUT = 180.0
"""Seconds a whole blob may take (reflector.go's 3 minutes)."""
DEFAULT_READ_TIMEOUT = 30.0
"""Seconds a read may make no progress before the upload is dead."""
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_RECEIVE_BUDGET = 128 * 1024 * 1024
"""Bytes of full-size body buffers out at once; an upload that needs one beyond it is refused."""
_SCRATCH_SIZE = 65536
_GROW_LIMIT = 65536
"""Body bytes kept in a connection's own small buffer before it takes a full-size one."""
TRIM_DELAY = 2.0
"""Seconds after the pool dropped buffers before freed heap is handed back (once per burst)."""


class UploadRefused(Exception):
    """A connection-ending upload problem, with the reason that gets logged.

    `kind` names its class for the log (one line per kind and window); `message` is the detail.
    """

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(slots=True)
class ReceiverStats:
    connections: int = 0
    blobs_received: int = 0
    sd_blobs_received: int = 0
    bytes_received: int = 0
    errors: int = 0


class ReflectorReceiver(TcpListener["_ReceiverProtocol"]):
    """TCP server of the reflector protocol. Writes to `store`; asks `underlying or store` what it wants."""

    def __init__(
        self,
        store: BlobStore,
        *,
        underlying: BlobStore | None = None,
        host: str = "0.0.0.0",
        port: int = DEFAULT_PORT,
        timeout: float = DEFAULT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        max_connections: int | None = DEFAULT_MAX_CONNECTIONS,
        admission: Admission[Any] | None = None,
        receive_budget: int = DEFAULT_RECEIVE_BUDGET,
    ) -> None:
        super().__init__(host, port, admission=admission, max_connections=max_connections)
        self.store = store
        self.underlying = underlying if underlying is not None else store
        self.timeout = timeout
        self.read_timeout = read_timeout
        # type-abstract: mypy refuses a Protocol as type[T] (python/mypy#4717); isinstance on it is fine.
        self.blocklister = find_capability(self.underlying, Blocklister)  # type: ignore[type-abstract]
        self.needed_checker = find_capability(self.underlying, NeededBlobChecker)  # type: ignore[type-abstract]
        self.stats = ReceiverStats()
        self._handlers: set[asyncio.Task[None]] = set()
        self.pool = BufferPool(MAX_BLOB_SIZE, budget=receive_budget)
        self.scratch = bytearray(_SCRATCH_SIZE)
        """Where every connection's requests and small bodies are read: each delivery is consumed at once."""
        self.repeats = RepeatFilter(window=60.0)
        """Upload failures are logged once per class and window, not once per upload."""
        self._trim: asyncio.TimerHandle | None = None
        # A store that only borrows `put` data gets a view of the reused receive buffer;
        # any other store gets bytes of its own, since it might keep them.
        self.zero_copy = put_borrows_data(store)

    def snapshot(self) -> ReceiverStats:
        """A copy of the counters, for metrics."""
        return replace(self.stats)

    async def start(self) -> None:
        await self._listen(lambda: _ReceiverProtocol(self))
        log.info("reflector receiver listening on %s", self.address)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, give running uploads `grace` seconds, then cut them off."""
        if not self.listening:
            return
        self._close_listener()
        handlers = set(self._handlers)
        if handlers:
            _done, pending = await asyncio.wait(handlers, timeout=grace)
            for proto in list(self.connections):
                proto.abort()
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._trim is not None:
            self._trim.cancel()
            self._trim = None
        log.info("reflector receiver stopped")

    # -- buffers --------------------------------------------------------------------

    def give_buffer(self, buf: bytearray | None) -> None:
        """Return a pooled buffer (None: lost to a store thread); trim the heap once a burst is over."""
        if self.pool.give(buf) and self._trim is None and MALLOC_TRIM is not None:
            self._trim = asyncio.get_running_loop().call_later(TRIM_DELAY, self._start_trim)

    def _start_trim(self) -> None:
        task = asyncio.get_running_loop().create_task(self._give_memory_back())
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _give_memory_back(self) -> None:
        if MALLOC_TRIM is not None:
            await asyncio.to_thread(MALLOC_TRIM)
        self._trim = None

    def log_failure(self, peer: str, kind: str, detail: str) -> None:
        """One line per failure class (`kind`) per window, with the count of the ones it stands for."""
        more = self.repeats.suffix(kind, time.monotonic())
        if more is not None:
            log.warning("upload from %s refused: %s%s", peer, detail, more)

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
                    f"sd blob {offer.blob_hash[:16]}... is not a valid sd blob: {e}", "invalid sd blob"
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


class _ReceiverProtocol(AdmittedConnection, asyncio.BufferedProtocol):
    """One connection: bytes in through `get_buffer`, the handler coroutine does the rest."""

    def __init__(self, receiver: ReflectorReceiver) -> None:
        self.receiver = receiver
        self.loop = asyncio.get_running_loop()
        self.codec = ReceiverConnection()
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self._handshaken = False
        self._progress_at = 0.0
        # While a body is received: its size, bytes so far, and where they go: `_grow` (the
        # connection's own small buffer, filled from the shared scratch) until `_body` (a view
        # of a pooled full-size buffer the kernel reads into) takes over.
        self._receiving = False
        self._body_size = 0
        self._body_filled = 0
        self._grow = bytearray()
        self._body: memoryview | None = None
        self._over_budget = False
        self._hasher: hashlib._Hash | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._eof = False
        self._task: asyncio.Task[None] | None = None
        self._buffer: bytearray | None = None  # a pooled full-size buffer, while a large body needs it

    # -- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self.refuse_if_shed(transport):
            return
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        receiver = self.receiver
        transport.pause_reading()
        receiver.connections.add(self)
        receiver.stats.connections += 1
        self._task = self.loop.create_task(self._handle())
        receiver._handlers.add(self._task)
        self._task.add_done_callback(receiver._handlers.discard)

    def get_buffer(self, sizehint: int) -> memoryview | bytearray:
        if self._body is not None:
            return self._body[self._body_filled :]
        if self._receiving:  # never read past the body: what follows is the next request
            return memoryview(self.receiver.scratch)[: self._body_size - self._body_filled]
        return self.receiver.scratch

    def buffer_updated(self, nbytes: int) -> None:
        if self._handshaken:
            self._progress_at = now = self.loop.time()
            self.receiver.admission.idle(self, now)
        if self._receiving:
            body = self._body
            if body is not None:
                start = self._body_filled
                self._body_filled = start + nbytes
                assert self._hasher is not None
                self._hasher.update(body[start : self._body_filled])
            else:
                self._absorb(memoryview(self.receiver.scratch)[:nbytes])
            if self._body_filled < self._body_size and not self._over_budget:
                return
        else:
            self.codec.receive_data(memoryview(self.receiver.scratch)[:nbytes])
        assert self.transport is not None
        self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return True  # keep the write side open: a refused blob still gets its `received_*: false`

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self.receiver.connections.discard(self)
        self.receiver.admission.closed(self)
        self._wake()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- reading ----------------------------------------------------------------------

    async def _wait_for_bytes(self, deadline: float | None = None) -> None:
        """Resume reading until the next delivery: EOFError at end of stream, UploadRefused on timeout.

        Times out when no byte arrived for `read_timeout` seconds, or at `deadline` (loop time).
        """
        if self._eof:
            raise EOFError
        assert self.transport is not None
        loop = self.loop
        waiter = self._waiter = loop.create_future()
        self._progress_at = loop.time()
        self.transport.resume_reading()
        read_timeout = self.receiver.read_timeout
        try:
            while not waiter.done():
                limit = self._progress_at + read_timeout
                if deadline is not None and deadline < limit:
                    limit = deadline
                if limit <= loop.time():
                    if deadline is not None and limit == deadline:
                        raise UploadRefused(f"timed out after {self.receiver.timeout:g} s in all", "timeout")
                    raise UploadRefused(f"timed out after {read_timeout:g} s without a byte", "timeout")
                await asyncio.wait((waiter,), timeout=limit - loop.time())
        finally:
            self._waiter = None
            if not self.transport.is_closing():
                self.transport.pause_reading()

    async def _next_event(self) -> Handshake | BlobOffer | BlobData | BlobComplete:
        while True:
            event = self.codec.next_event()
            if not isinstance(event, NeedData):
                return event
            await self._wait_for_bytes()

    def _absorb(self, data: memoryview | bytes) -> None:
        """Body bytes that did not arrive in place: hash them and keep them."""
        assert self._hasher is not None
        self._hasher.update(data)
        n = len(data)
        if self._body is not None:
            self._body[self._body_filled : self._body_filled + n] = data
        else:
            self._grow += data
            if len(self._grow) >= _GROW_LIMIT and self._body_size > len(self._grow):
                self._take_full_buffer()
        self._body_filled += n

    def _take_full_buffer(self) -> None:
        """The body is large and arriving: from now on the kernel reads it into a pooled buffer."""
        buf = self._buffer if self._buffer is not None else self.receiver.pool.take()
        if buf is None:
            self._over_budget = True
            return
        self._buffer = buf
        filled = len(self._grow)
        buf[:filled] = self._grow
        self._grow = bytearray()
        self._body = memoryview(buf)[: self._body_size]

    async def _receive_body(self, offer: BlobOffer) -> memoryview:
        """Exactly `offer.size` bytes, hashed on the way; the view of them."""
        self._hasher = hasher = hashlib.sha384()
        self._receiving = True
        self._body_size = offer.size
        self._body_filled = 0
        self._over_budget = False
        try:
            # Bytes that arrived with the offer (a client that did not wait) come first.
            while self._body_filled < offer.size:
                event = self.codec.next_event()
                if not isinstance(event, BlobData):
                    break
                self._absorb(event.data)
            early = self._body_filled
            deadline = self.loop.time() + self.receiver.timeout
            while self._body_filled < offer.size and not self._over_budget:
                try:
                    await self._wait_for_bytes(deadline)
                except UploadRefused as e:
                    read = f"{self._body_filled} of {offer.size} blob bytes read"
                    raise UploadRefused(f"{e} ({read})", e.kind) from None
                except EOFError:
                    raise UploadRefused(
                        f"connection closed after {self._body_filled} of {offer.size} blob bytes", "closed"
                    ) from None
            if self._over_budget:
                budget = self.receiver.pool.budget >> 20
                raise UploadRefused(f"receive memory budget ({budget} MiB) in use", "memory")
            self.codec.body_bytes_received(offer.size - early)
            view = self._body if self._body is not None else memoryview(self._grow)
        finally:
            self._receiving = False
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
                receiver.log_failure(self.peer, "closed", "connection closed mid-request")
        except ReflectorProtocolError as e:
            receiver.stats.errors += 1
            receiver.log_failure(self.peer, "protocol", str(e))
        except (UploadRefused, _HashMismatch) as e:
            receiver.stats.errors += 1
            kind = e.kind if isinstance(e, UploadRefused) else "hash"
            receiver.log_failure(self.peer, kind, str(e))
        except asyncio.CancelledError:
            self._lose_buffer()  # a store's thread may still be reading it: never reuse it
            raise
        except Exception as e:  # e.g. the database went down while answering an offer
            receiver.stats.errors += 1
            kind = type(e).__name__
            receiver.log_failure(self.peer, f"unexpected {kind}", f"{kind}: {e}")
            log.debug("reflector connection from %s failed", self.peer, exc_info=e)
        finally:
            self.codec.close()
            self._release_buffer()
            if self.transport is not None:
                with contextlib.suppress(Exception):
                    self.transport.close()

    def _release_buffer(self) -> None:
        self._grow = bytearray()
        if self._buffer is not None:
            self.receiver.give_buffer(self._buffer)
            self._buffer = None

    def _lose_buffer(self) -> None:
        if self._buffer is not None:
            self.receiver.give_buffer(None)
            self._buffer = None

    async def _converse(self) -> None:
        event = await self._next_event()
        assert isinstance(event, Handshake)
        self._handshaken = True
        self.receiver.admission.idle(self, self.loop.time())
        self._write(self.codec.send_version(event.version))
        while (offer := await self._next_offer()) is not None:
            self.receiver.admission.busy(self)  # asking the store: not the client's wait
            send, needed = await self.receiver.answer_offer(offer)
            self.receiver.admission.idle(self, self.loop.time())
            self._write(self.codec.send_offer_answer(send, needed))
            if send:
                await self._receive_and_store(offer)

    async def _next_offer(self) -> BlobOffer | None:
        """The next offer, or None when the client is done (closed, or idle between offers)."""
        try:
            event = await self._next_event()
        except EOFError:
            if self.codec.buffered:
                raise UploadRefused("connection closed in the middle of a request", "closed") from None
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
        try:
            view = await self._receive_body(offer)
        except (UploadRefused, _HashMismatch):
            self._write(self.codec.send_received(False))
            raise
        event = self.codec.next_event()
        assert isinstance(event, BlobComplete)
        receiver.admission.busy(self)
        try:
            await receiver.store_blob(offer, view)
        except UploadRefused:
            self._write(self.codec.send_received(False))
            raise
        except Exception as e:
            self._write(self.codec.send_received(False))
            what = f"{'sd ' if offer.is_sd else ''}blob"
            raise UploadRefused(f"storing {what} failed: {e}", f"store {type(e).__name__}") from e
        finally:
            del view
            self._release_buffer()  # back to the pool between blobs: an idle connection holds none
        receiver.admission.idle(self, self.loop.time())
        self._write(self.codec.send_received(True))
        receiver.count(offer)
        action = "reflector PUT-SD" if offer.is_sd else "reflector PUT"
        access_log.debug(
            access_line(self.peer, action, offer.blob_hash, "stored", offer.size, timer.elapsed() / 1e9, "-")
        )


class _HashMismatch(Exception):
    pass
