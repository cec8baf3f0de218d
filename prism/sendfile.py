"""The one way a server sends a header and a blob on a TCP connection (peer and HTTP servers).

A blob on disk goes out with `os.sendfile` straight from the open file its `BlobRef` carries,
its header sent just before with MSG_MORE so both leave in full segments (as nginx's
`tcp_nopush`); a large `SO_SNDBUF` lets one call move a whole 2 MiB blob. Whatever the socket
does not take at once goes out from a callback on the socket's writable edges (edge-triggered,
as nginx): one `os.sendfile` each time the socket becomes writable again, and no task unless
the caller awaits (`resume` calls back). (asyncio's `loop.sendfile` retried into the full socket
and registered and unregistered the writer on every step: with 1,000 connections about 9
sendfile and 17 epoll_ctl calls per blob, 79% of the sendfiles failing with EAGAIN.) Blobs in
memory are written to the transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import weakref
from collections.abc import Callable

from prism.store.arrival import sendable_pieces
from prism.store.base import BlobRef

SEND_BUFFER = 4 * 1024 * 1024
"""SO_SNDBUF asked for each connection, so one sendfile call can usually move a whole 2 MiB blob."""


class BlobSender:
    """Owns the sending side of one connection; its Protocol forwards the write-flow callbacks.

    `send_buffer` sizes SO_SNDBUF (None leaves the kernel's); `write_buffer_high` sets the
    transport's high-water mark (None keeps asyncio's). A send or a wait for the peer to read that
    makes no progress for `send_timeout` seconds raises TimeoutError (None: wait as long as it
    takes, for a server whose own watchdog ends slow answers). `cork` holds the header back until
    the body joins it: fewer, fuller segments, which costs the sender CPU but saves the receiver
    more (HTTP corks; the peer server, measured on its own CPU by bench/peer.py, does not).
    """

    __slots__ = (
        "_can_own_writer",
        "_lost",
        "_paused",
        "_rest",
        "_sending",
        "_waiter",
        "cork",
        "fd",
        "loop",
        "raw",
        "send_timeout",
        "sock",
        "transport",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        send_buffer: int | None = SEND_BUFFER,
        write_buffer_high: int | None = None,
        send_timeout: float | None = None,
        cork: bool = False,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.send_timeout = send_timeout
        self.cork = cork
        self.transport = transport
        self.sock: socket.socket | None = transport.get_extra_info("socket")
        # The socket itself, for `send(head, MSG_MORE)`: asyncio hands out a wrapper without
        # `send`. Where there is none, the header goes through the transport with TCP_CORK.
        self.raw: socket.socket | None = getattr(self.sock, "_sock", None) if _HAS_MSG_MORE else None
        self.fd = -1
        self._paused = False
        self._lost = False
        self._waiter: asyncio.Future[None] | None = None
        self._rest: _Body | None = None  # what `start` left for `finish` or `resume`
        self._sending: _Sending | None = None  # the rest of a body, going from writable edges
        self._can_own_writer = _HAS_EPOLL
        if self.sock is not None:
            self.fd = self.sock.fileno()
            if send_buffer:
                with contextlib.suppress(OSError):
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        if write_buffer_high is not None:
            transport.set_write_buffer_limits(high=write_buffer_high)

    # --- forwarded from the Protocol ---------------------------------------------------------

    @property
    def write_paused(self) -> bool:
        return self._paused

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake(None)

    def connection_lost(self) -> None:
        """The socket is about to close: a body in progress stops (its writer is removed now,
        before the descriptor can be reused) and its sender raises ConnectionResetError."""
        self._lost = True
        self._wake(ConnectionResetError("connection lost"))
        if self._sending is not None:
            self._sending.end(ConnectionResetError("connection lost"))

    def _wake(self, error: Exception | None) -> None:
        _settle(self._waiter, error)

    # --- sending -----------------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait until the transport takes writes again; ConnectionResetError if the connection ends."""
        while self._paused:
            if self._lost:
                raise ConnectionResetError("connection lost")
            self._waiter = self.loop.create_future()
            try:
                await asyncio.wait_for(self._waiter, self.send_timeout)
            finally:
                self._waiter = None

    async def write(self, data: bytes | memoryview) -> None:
        """Write `data`, then wait while the peer is slow to read it."""
        if self._lost or self.transport.is_closing():
            raise ConnectionResetError("connection closed")
        self.transport.write(data)
        await self.drain()

    async def send(self, head: bytes, ref: BlobRef, start: int, count: int) -> None:
        """`head`, then bytes `start`..`start+count` of the blob; raises OSError if the file is short.

        Returns once the kernel holds every byte. The caller keeps `ref` open until then and
        closes it (once) afterwards, whether this returns or raises.
        """
        if not self.start(head, ref, start, count):
            await self.finish()

    async def send_arriving(self, head: bytes, ref: BlobRef) -> None:
        """`head`, then the whole of a blob whose bytes are still arriving (`ref.arrival`), each
        piece as it lands.

        The last byte goes only once the blob is verified. If it fails, this raises the arrival's
        error with the body cut short: the caller must abort the connection, so that the client
        holds a short body, never a whole wrong one.
        """
        arrival = ref.arrival
        assert arrival is not None
        await self.write(head)
        view = memoryview(arrival.buffer)
        async for start, end in sendable_pieces(arrival):
            await self.write(view[start:end])

    def start(self, head: bytes, ref: BlobRef, start: int, count: int) -> bool:
        """The part of `send` that needs no waiting: True when every byte is out, else `finish()`
        sends the rest (a server answers a hit without a task this way). Raises as `send` does."""
        transport = self.transport
        if self._lost or transport.is_closing():
            raise ConnectionResetError("connection closed")
        if ref.file is None or self.fd < 0 or not self._can_own_writer:
            transport.write(head)
            transport.write(_body_bytes(ref, start, count))
            return not self._paused
        body = _Body(ref.file.fileno(), start, count)
        if transport.get_write_buffer_size() == 0:
            # MSG_MORE holds the header back until the body joins it, so both leave in full
            # segments (as nginx's `tcp_nopush`; ~40% more throughput with 64 connections):
            # a flag on the send made anyway, where TCP_CORK costs two more system calls.
            if self._send_head(head, self.cork and count > 0) and self._push(body):
                return True
        else:
            transport.write(head)
        self._rest = body
        return False

    def _send_head(self, head: bytes, more: bool) -> bool:
        """Send `head` on an idle socket; True when all of it went (the rest waits in the transport)."""
        raw = self.raw
        if raw is None:
            if more:
                self._cork(True)
            try:
                self.transport.write(head)
            finally:
                if more:
                    self._cork(False)
            return self.transport.get_write_buffer_size() == 0
        try:
            n = raw.send(head, _MSG_MORE if more else 0)
        except (BlockingIOError, InterruptedError):
            n = 0
        except ConnectionError as e:
            raise ConnectionResetError(f"send: {e}") from e
        if n == len(head):
            return True
        self.transport.write(head[n:])
        return False

    async def finish(self) -> None:
        """Send what `start` left: the rest of the body, or the transport's buffer."""
        body, self._rest = self._rest, None
        if self._lost:  # (its descriptor may belong to another connection by now)
            raise ConnectionResetError("connection lost")
        if body is None:
            await self.drain()
            return
        if self.transport.get_write_buffer_size():
            await self._flushed()  # the body must follow what the transport still holds
        done: asyncio.Future[None] = self.loop.create_future()
        self._send_rest(body, lambda error: _settle(done, error))
        try:
            await done
        finally:
            if self._sending is not None:  # cancelled while sending
                self._sending.end(None, notify=False)

    def resume(self, done: Callable[[BaseException | None], None]) -> None:
        """`finish` without a task: `done(None)` once every byte is out, `done(error)` when the
        send fails, makes no progress for `send_timeout` or the connection is lost. `done` is
        called exactly once, and never before this returns."""
        body = self._rest
        if body is None or self._lost or self.transport.get_write_buffer_size():
            # Waiting on the transport first (or failing): the rare way, in a task.
            task = self.loop.create_task(self.finish())
            task.add_done_callback(
                lambda t: done(ConnectionResetError("cancelled") if t.cancelled() else t.exception())
            )
            return
        self._rest = None
        self._send_rest(body, done)

    def _push(self, body: _Body) -> bool:
        """Move what the socket takes now; True once everything is out (raises on failure)."""
        try:
            while body.count:
                n = os.sendfile(self.fd, body.file_fd, body.offset, body.count)
                if n == 0:
                    sent = body.total - body.count
                    raise OSError(f"blob file ended after {sent} of {body.total} bytes")
                body.offset += n
                body.count -= n
                if body.count:
                    return False  # a short write means the socket is full: no EAGAIN round trip
        except (BlockingIOError, InterruptedError):
            return False
        except ConnectionError as e:
            raise ConnectionResetError(f"sendfile: {e}") from e
        return True

    def _send_rest(self, body: _Body, done: Callable[[BaseException | None], None]) -> None:
        """Send the rest from the socket's writable edges: each is one `os.sendfile`, and a full
        socket waits for the next edge instead of being retried."""
        self._sending = _Sending(self, body, done)
        _WritableEdges.of(self.loop).watch(self.fd, self._sending.writable)

    async def _flushed(self) -> None:
        """Wait until the transport's own buffer is empty (a zero high-water mark makes it
        pause the protocol now and resume it once the last byte is out)."""
        transport = self.transport
        low, high = transport.get_write_buffer_limits()
        transport.set_write_buffer_limits(high=0, low=0)
        try:
            await self.drain()
        finally:
            transport.set_write_buffer_limits(high=high, low=low)

    def _cork(self, on: bool) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1 if on else 0)


_HAS_EPOLL = hasattr(select, "epoll")
_HAS_MSG_MORE = hasattr(socket, "MSG_MORE")
_MSG_MORE = getattr(socket, "MSG_MORE", 0)
"""Without it (not Linux), a blob on disk goes through the transport (pread + write)."""


class _WritableEdges:
    """Edge-triggered writability of the sockets with a body pending, for one event loop.

    The loop's selector is level-triggered: a socket that the kernel reports writable but whose
    `sendfile` still fails (under TCP memory pressure with many connections, most of the time)
    would wake the loop again at once, and asyncio's writer API re-registers the socket at each
    step. Like nginx (EPOLLET), a second epoll reports only the moments a socket becomes
    writable; the loop watches that one epoll descriptor as a reader.
    """

    _per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _WritableEdges] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.epoll = select.epoll()
        self.callbacks: dict[int, Callable[[], None]] = {}
        loop.add_reader(self.epoll.fileno(), self._ready)
        weakref.finalize(loop, self.epoll.close)

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _WritableEdges:
        edges = cls._per_loop.get(loop)
        if edges is None:
            edges = cls._per_loop[loop] = cls(loop)
        return edges

    def watch(self, fd: int, callback: Callable[[], None]) -> None:
        """Call `callback` each time `fd` becomes writable (at once if it is writable now)."""
        self.callbacks[fd] = callback
        try:
            self.epoll.register(fd, select.EPOLLOUT | select.EPOLLET)
        except FileExistsError:  # left from a body that ended without unwatch (defensive)
            self.epoll.modify(fd, select.EPOLLOUT | select.EPOLLET)

    def unwatch(self, fd: int, callback: Callable[[], None]) -> None:
        if self.callbacks.get(fd) == callback:  # (bound methods: equal, not identical)
            del self.callbacks[fd]
            with contextlib.suppress(OSError, ValueError):  # already closed: epoll forgot it
                self.epoll.unregister(fd)

    def _ready(self) -> None:
        for fd, _events in self.epoll.poll(0):
            callback = self.callbacks.get(fd)
            if callback is not None:
                callback()


def _settle(future: asyncio.Future[None] | None, error: BaseException | None) -> None:
    if future is not None and not future.done():
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


class _Body:
    """What is left of one answer's body: a range of an open file."""

    __slots__ = ("count", "file_fd", "offset", "total")

    def __init__(self, file_fd: int, offset: int, count: int) -> None:
        self.file_fd = file_fd
        self.offset = offset
        self.count = count
        self.total = count


class _Sending:
    """The rest of one body going out from a socket's writable edges, with its watchdog: no
    byte moved for `send_timeout` seconds fails it with TimeoutError (progress only stamps a
    time; the one timer re-arms itself when it fires)."""

    __slots__ = ("body", "done", "handle", "last", "sender")

    def __init__(self, sender: BlobSender, body: _Body, done: Callable[[BaseException | None], None]) -> None:
        self.sender = sender
        self.body = body
        self.done: Callable[[BaseException | None], None] | None = done
        self.handle: asyncio.TimerHandle | None = None
        timeout = sender.send_timeout
        if timeout is not None:
            self.last = sender.loop.time()
            self.handle = sender.loop.call_at(self.last + timeout, self._fire)

    def writable(self) -> None:
        if self.done is None:
            return
        try:
            finished = self.sender._push(self.body)
        except Exception as e:
            self.end(e)
            return
        if finished:
            self.end(None)
        elif self.handle is not None:
            self.last = self.sender.loop.time()

    def end(self, error: BaseException | None, notify: bool = True) -> None:
        """Stop watching (before the socket closes: its descriptor may be reused), then tell."""
        done, self.done = self.done, None
        if done is None:
            return
        sender = self.sender
        sender._sending = None
        _WritableEdges.of(sender.loop).unwatch(sender.fd, self.writable)
        if self.handle is not None:
            self.handle.cancel()
        if notify:
            done(error)

    def _fire(self) -> None:
        timeout = self.sender.send_timeout
        assert timeout is not None
        deadline = self.last + timeout
        if self.sender.loop.time() >= deadline:
            self.end(TimeoutError("send made no progress"))
        else:
            self.handle = self.sender.loop.call_at(deadline, self._fire)


def _body_bytes(ref: BlobRef, start: int, count: int) -> bytes | memoryview:
    """Bytes `start`..`start+count` of a blob in memory, or of its file on a loop that cannot
    lend us the socket."""
    if ref.file is not None:
        data = os.pread(ref.file.fileno(), count, start)
        if len(data) != count:
            raise OSError(f"blob {ref.hash[:8]}: file ended after {len(data)} of {count} bytes")
        return data
    data = ref.read()
    return data if start == 0 and count == len(data) else memoryview(data)[start : start + count]
