"""The one way a server sends a header and a blob on a TCP connection (peer and HTTP servers).

A blob on disk goes out with `os.sendfile` straight from the open file its `BlobRef` carries,
corked with its header so both leave in full segments (as nginx's `tcp_nopush`); a large
`SO_SNDBUF` lets one call move a whole 2 MiB blob. Whatever the socket does not take at once is
left to `loop.sendfile`. Blobs in memory are written to the transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

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

    __slots__ = ("_lost", "_paused", "_waiter", "cork", "fd", "loop", "send_timeout", "sock", "transport")

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
        self.fd = -1
        self._paused = False
        self._lost = False
        self._waiter: asyncio.Future[None] | None = None
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
        self._lost = True
        self._wake(ConnectionResetError("connection lost"))

    def _wake(self, error: Exception | None) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

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
        """`head`, then bytes `start`..`start+count` of the blob; raises OSError if the file is short."""
        transport = self.transport
        if self._lost or transport.is_closing():
            raise ConnectionResetError("connection closed")
        if ref.file is None:
            data = ref.read()
            transport.write(head)
            whole = start == 0 and count == len(data)
            transport.write(data if whole else memoryview(data)[start : start + count])
            await self.drain()
            return
        # Cork so the header and the first bytes of the body leave in full segments, not as a
        # lone small header packet (measured: ~40% more throughput with 64 connections).
        drained = transport.get_write_buffer_size() == 0
        cork = drained and self.cork
        if cork:
            self._cork(True)
        try:
            transport.write(head)
            sent = self._sendfile_now(ref.file.fileno(), start, count) if drained else 0
        finally:
            if cork:
                self._cork(False)
        if sent < count:
            sent += await self._sendfile_later(ref, start + sent, count - sent)
        if sent != count:
            raise OSError(f"blob {ref.hash[:8]}: file ended after {sent} of {count} bytes")

    def _sendfile_now(self, file_fd: int, offset: int, count: int) -> int:
        """Zero-copy send of as much as the socket takes right now (the header is still in the
        transport's buffer only if the kernel refused it, and then this sends nothing)."""
        if self.fd < 0 or self.transport.get_write_buffer_size():
            return 0
        sent = 0
        try:
            while sent < count:
                n = os.sendfile(self.fd, file_fd, offset + sent, count - sent)
                if n == 0:
                    break  # the file is shorter than its BlobRef says; the caller reports it
                sent += n
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            raise ConnectionResetError(f"sendfile: {e}") from e
        return sent

    async def _sendfile_later(self, ref: BlobRef, offset: int, count: int) -> int:
        assert ref.file is not None
        try:
            return await asyncio.wait_for(
                self.loop.sendfile(self.transport, ref.file, offset, count, fallback=True), self.send_timeout
            )
        except RuntimeError as e:  # "Transport is closing": the client went away
            raise ConnectionResetError(str(e)) from e

    def _cork(self, on: bool) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1 if on else 0)
