"""asyncio peer server: answers availability, price and blob requests from a BlobStore.

Per connection (reflector.md §4.2): requests are parsed by the sans-IO `RequestParser`; each
answer is a compact JSON header in reflector.go's form followed by the blob bytes. Blobs held
in a file are sent with `os.sendfile` (zero copy, straight from the open file of the
BlobRef); blobs in memory are written directly. Connections are kept alive; a connection that
sends nothing for `idle_timeout` seconds, or whose answer does not drain within
`send_timeout`, is closed. Bad input closes only that connection, with the reason logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from prism.admission import Admission
from prism.logs import RepeatFilter, access_line
from prism.peer.protocol import (
    BLOB_NOT_FOUND,
    RATE_ACCEPTED,
    BlobRequest,
    IncomingBlob,
    PeerProtocolError,
    RequestParser,
    encode_found_header,
    encode_response,
    rate_answer,
)
from prism.sendfile import SEND_BUFFER, BlobSender
from prism.stats import ErrorType, ServerSnapshot
from prism.store.base import BlobNotFound, BlobRef, BlobStore, StoreError, Timer, arriving_getter
from prism.tcpserver import AdmittedConnection, TcpBlobServer

log = logging.getLogger("prism.peer")
access_log = logging.getLogger("prism.peer.access")
"""One DEBUG line per request (`-v peer`)."""

DEFAULT_PORT = 5567
"""The peer port of the `reflector` command; `prism peer` uses 3333 like reflector.go's `peer`."""
RECEIVE_SIZE = 64 * 1024
"""Bytes read from a connection at once."""

_NOT_FOUND = IncomingBlob("", 0, BLOB_NOT_FOUND)


class PeerServer(TcpBlobServer["_PeerConnection"]):
    """Serves blobs of `store` to LBRY peers (lbry-sdk's and reflector.go's clients)."""

    def __init__(
        self,
        store: BlobStore,
        host: str = "0.0.0.0",
        port: int = DEFAULT_PORT,
        *,
        max_connections: int | None = None,
        admission: Admission[Any] | None = None,
        idle_timeout: float = 60.0,
        send_timeout: float = 60.0,
        send_buffer_size: int | None = SEND_BUFFER,
    ) -> None:
        super().__init__(
            store,
            host,
            port,
            protocol="tcp",
            idle_timeout=idle_timeout,
            send_timeout=send_timeout,
            admission=admission,
            max_connections=max_connections,
        )
        self.send_buffer_size = send_buffer_size
        self.repeats = RepeatFilter()
        """A store failure that every connection meets alike (an upstream down) is logged once."""
        self.scratch = bytearray(RECEIVE_SIZE)
        """Where every connection receives: each read is handed to its parser before the next."""
        self.fetch = arriving_getter(store)
        """A miss streams to the client while it arrives from upstream (`BlobSender.send_arriving`)."""
        self._all_closed: asyncio.Event | None = None

    def snapshot(self) -> ServerSnapshot:
        return self.stats.snapshot()

    async def start(self) -> None:
        """Bind and start accepting; `.port` is the bound port afterwards (pass 0 for any)."""
        await self._listen(lambda: _PeerConnection(self))
        log.info("peer server listening on %s (store %s)", self.address, self.store.name)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let answers in progress finish for up to `grace` s, close the rest."""
        was_listening = self.listening
        self._close_listener()
        for conn in list(self.connections):
            conn.close_when_idle()
        if self.connections:
            self._all_closed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), grace)
            self._all_closed = None
        for conn in list(self.connections):
            conn.abort()
        # Give aborted connections one turn of the loop to run their connection_lost.
        await asyncio.sleep(0)
        if was_listening:
            log.info("peer server on port %d stopped", self.port)


class _PeerConnection(AdmittedConnection, asyncio.BufferedProtocol):
    """One client connection: parser, serving task, idle/send watchdog.

    Reads land in the server's one scratch buffer and go straight to the parser, which keeps what
    it needs (asyncio's own reads would allocate 256 KiB per request; see the HTTP server).
    """

    def __init__(self, server: PeerServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = RequestParser()
        self.peer = "?"
        self.task: asyncio.Task[None] | None = None
        self.waiting_since = 0.0  # when we started waiting for the next request
        self.busy_since = 0.0  # when the answer in progress started
        self.timer: asyncio.TimerHandle | None = None
        self.closing = False
        self.eof = False
        self.paused_reading = False
        self.sender: BlobSender | None = None

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        server = self.server
        if self.refuse_if_shed(transport):
            return
        self.transport = transport
        self.peer = _peer_name(transport)
        server.connections.add(self)
        server.stats.accepted += 1
        self.sender = BlobSender(transport, server.send_buffer_size)
        self.waiting_since = self.loop.time()
        self.timer = self.loop.call_at(self.waiting_since + server.idle_timeout, self._on_timer)
        log.debug("connection from %s", self.peer)

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.server.scratch

    def buffer_updated(self, nbytes: int) -> None:
        self.parser.receive_data(memoryview(self.server.scratch)[:nbytes])
        if self.task is None:
            self._serve_next()
        elif self.parser.buffered > 65536 and not self.paused_reading and self.transport is not None:
            # A client that pipelines without reading answers: stop reading until we catch up.
            self.paused_reading = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        # The client half-closed: finish the answers it asked for, then close.
        self.eof = True
        if self.task is None:
            self._check_eof()
            if self.transport is not None:
                self.transport.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        server.connections.discard(self)
        server.admission.closed(self)
        if not server.connections and server._all_closed is not None:
            server._all_closed.set()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.sender is not None:
            self.sender.connection_lost()
        self.transport = None
        log.debug("connection from %s closed%s", self.peer, f" ({exc})" if exc else "")

    def pause_writing(self) -> None:
        if self.sender is not None:
            self.sender.pause_writing()

    def resume_writing(self) -> None:
        if self.sender is not None:
            self.sender.resume_writing()

    # --- serving ----------------------------------------------------------------------------

    def _serve_next(self) -> None:
        try:
            request = self.parser.next_request()
        except PeerProtocolError as e:
            self._bad_input(e)
            return
        except Exception as e:  # a codec bug: one line per class, not a traceback per request
            self._unexpected(e)
            return
        if request is not None:
            self.busy_since = now = self.loop.time()
            self.server.admission.busy(self)
            self.task = self.loop.create_task(self._serve(request))
            send_deadline = now + self.server.send_timeout
            if self.timer is not None and send_deadline < self.timer.when():
                # Only when send_timeout < idle_timeout: the watchdog must wake up earlier.
                self.timer.cancel()
                self.timer = self.loop.call_at(send_deadline, self._on_timer)

    async def _serve(self, request: BlobRequest | None) -> None:
        answered = 0
        try:
            while request is not None:
                await self._answer(request)
                if self.transport is None:
                    return
                if self.sender is not None:
                    # The client is not reading its answers: no more until it does (or the
                    # send timeout ends the connection); reading stops too once 64 KiB queue up.
                    await self.sender.drain()
                request = self.parser.next_request()
                if request is not None:
                    self.busy_since = self.loop.time()
                    answered += 1
                    if answered % 64 == 0:
                        await asyncio.sleep(0)  # a long pipeline must not starve other connections
        except PeerProtocolError as e:
            self._bad_input(e)
        except asyncio.CancelledError:
            self.abort()
            raise
        except ConnectionError as e:
            log.debug("connection from %s lost mid-answer: %s", self.peer, e)
            self.abort()
        except (StoreError, OSError, RuntimeError) as e:
            # The store or the file failed: only this connection ends.
            more = self.server.repeats.suffix(f"{type(e).__name__}: {e}", self.loop.time())
            if more is not None:
                log.warning("closing connection from %s: %s: %s%s", self.peer, type(e).__name__, e, more)
            self.abort()
        except Exception as e:
            self._unexpected(e)
        finally:
            self.task = None
            self.waiting_since = self.loop.time()
            self.server.admission.idle(self, self.waiting_since)
            transport = self.transport
            if transport is not None and not transport.is_closing():
                if self.closing or self.eof:
                    transport.close()
                elif self.paused_reading:
                    self.paused_reading = False
                    transport.resume_reading()

    async def _answer(self, request: BlobRequest) -> None:
        server = self.server
        store = server.store
        stats = server.stats
        stats.requests += 1
        blob_hash = request.requested_blob
        timer = Timer()
        ref: BlobRef | None = None
        if blob_hash is not None and (request.requested_blobs is None or request.is_plain_download):
            # The usual download: one store lookup answers both availability and the blob.
            try:
                ref = await server.fetch(blob_hash)
            except BlobNotFound:
                ref = None
            if request.requested_blobs is None:
                available: list[str] | tuple[str, ...] = ()
            else:
                available = request.requested_blobs if ref is not None else ()
        else:
            available = [h for h in request.requested_blobs or () if await store.has(h)]
            if blob_hash is not None:
                try:
                    ref = await server.fetch(blob_hash)
                except BlobNotFound:
                    ref = None
        transport = self.transport
        sender = self.sender
        if transport is None or sender is None:
            if ref is not None:
                ref.close()
            return
        rate = None if request.blob_data_payment_rate is None else rate_answer(request.blob_data_payment_rate)
        if ref is None:
            if blob_hash is not None:
                stats.not_found += 1
                access_log.debug(
                    access_line(self.peer, "peer GET", blob_hash, "not-found", 0, timer.elapsed() / 1e9, "-")
                )
            transport.write(encode_response(available, rate, _NOT_FOUND if blob_hash is not None else None))
            return
        with ref:
            size = ref.size
            if rate == RATE_ACCEPTED and request.is_plain_download:
                header = encode_found_header(ref.hash, size)
            else:
                header = encode_response(available, rate, IncomingBlob(ref.hash, size))
            if ref.arrival is not None:
                await sender.send_arriving(header, ref)  # raises StoreError if it fails to arrive
            else:
                await sender.send(header, ref, 0, size)
        stats.sent(size)
        layer = ref.trace.path()
        access_log.debug(
            access_line(self.peer, "peer GET", ref.hash, "sent", size, timer.elapsed() / 1e9, layer)
        )

    # --- closing ----------------------------------------------------------------------------

    def _bad_input(self, error: PeerProtocolError) -> None:
        self.server.stats.error(ErrorType.INVALID_PEER_DATA)
        more = self.server.repeats.suffix("bad input", self.loop.time())  # a flood logs once a window
        if more is not None:
            log.info("closing connection from %s: %s%s", self.peer, error.reason, more)
        self.abort()

    def _unexpected(self, error: Exception) -> None:
        """An error no code path expects: one line per class and window (the traceback at DEBUG)."""
        more = self.server.repeats.suffix(f"unexpected {type(error).__name__}", self.loop.time())
        if more is not None:
            kind = type(error).__name__
            log.error(
                "closing connection from %s after an unexpected error: %s: %s%s", self.peer, kind, error, more
            )
        log.debug("unexpected error on the connection from %s", self.peer, exc_info=error)
        self.abort()

    def _check_eof(self) -> None:
        try:
            self.parser.check_eof()
        except PeerProtocolError as e:
            log.info("connection from %s: %s", self.peer, e.reason)

    def _on_timer(self) -> None:
        self.timer = None
        transport = self.transport
        if transport is None:
            return
        now = self.loop.time()
        if self.task is not None:
            deadline = self.busy_since + self.server.send_timeout
            if now >= deadline:
                log.info(
                    "closing connection from %s: answer not sent within %.0f s",
                    self.peer,
                    now - self.busy_since,
                )
                self.task.cancel()
                return
        else:
            deadline = self.waiting_since + self.server.idle_timeout
            if now >= deadline:
                log.debug("closing idle connection from %s", self.peer)
                transport.close()
                return
        self.timer = self.loop.call_at(deadline, self._on_timer)

    def close_when_idle(self) -> None:
        """Close now if no answer is in progress, else right after it (graceful stop)."""
        self.closing = True
        if self.task is None and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.task is not None and not self.task.done() and self.task is not asyncio.current_task():
            self.task.cancel()
        if self.transport is not None:
            self.transport.abort()


def _peer_name(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
