"""The TCP listener every TCP server of prism accepts through (peer, HTTP, reflector receiver).

prism accepts connections itself instead of through `loop.create_server`, so that:
- every new connection passes the process's `Admission` (caps from the file limit; at the cap the
  longest-idle connection is shed, else the new one is refused with a fixed answer and closed);
- a connection without a request for `first_request_timeout` seconds is closed;
- running out of descriptors (EMFILE) pauses accepting briefly and is counted, not logged per
  failed accept (asyncio's own loop logs a traceback for each one, up to a backlog's worth per tick);
- what was shed or refused is logged once per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from prism.admission import Admission, connection_cap
from prism.hostport import HostPort, bind_socket
from prism.logs import RepeatFilter
from prism.stats import ServerStats
from prism.store.base import BlobStore

log = logging.getLogger("prism.app")

ACCEPT_BATCH = 64
"""Connections accepted per wake-up of the listening socket, so other work keeps its turn."""
SWEEP_INTERVAL = 0.25
SWEEP_BATCH = 64
"""Connections closed per sweep at most: a burst accepted together expires over several turns."""
EMFILE_PAUSE = 0.1
"""Seconds accepting pauses after running out of descriptors."""
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Sheddable(Protocol):
    """A connection the listener may close to make room: `shed` aborts it, now or once connected."""

    def shed(self) -> None: ...


class AdmittedConnection:
    """Mixin of the connection classes: closing on the Admission's behalf, before or after connecting."""

    transport: asyncio.Transport | None
    _shed: bool = False

    def shed(self) -> None:
        self._shed = True
        if self.transport is not None:
            self.transport.abort()

    def refuse_if_shed(self, transport: asyncio.Transport) -> bool:
        """In `connection_made`: True (and the transport aborted) if it was shed before connecting."""
        if self._shed:
            transport.abort()
        return self._shed


C = TypeVar("C", bound=asyncio.BaseProtocol)


class TcpListener(Generic[C]):
    """Accepts on `host`:`port` through `admission` (its own, capped at `max_connections`, if None)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        admission: Admission[Any] | None = None,
        max_connections: int | None = None,
        refusal: bytes = b"",
    ) -> None:
        self.host = host
        self.port = port
        """The port asked for (0: any), then the bound one once started."""
        cap = max_connections if max_connections is not None else connection_cap()
        self.admission: Admission[Any] = admission if admission is not None else Admission(cap)
        self.refusal = refusal
        """Sent (best effort) to a refused connection before it is closed: a 503 for HTTP."""
        self.connections: set[C] = set()
        self._sock: socket.socket | None = None
        self._factory: Callable[[], C] | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._pending: set[asyncio.Task[Any]] = set()
        self._repeats = RepeatFilter(window=60.0)

    @property
    def listening(self) -> bool:
        return self._sock is not None

    async def _listen(self, connection: Callable[[], C]) -> None:
        """Bind and start accepting, each connection made by `connection()`."""
        loop = asyncio.get_running_loop()
        sock = bind_socket(self.host, self.port)
        try:
            sock.listen(1024)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._factory = connection
        self.port = int(sock.getsockname()[1])
        loop.add_reader(sock.fileno(), self._accept_ready)
        self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep)

    def _close_listener(self) -> None:
        """Stop accepting (connections already open stay)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    @property
    def address(self) -> HostPort:
        """Where it listens, bracketed for IPv6 in logs."""
        return HostPort(self.host, self.port)

    def on_refused(self) -> None:
        """Hook: a connection was refused at the cap."""

    # -- accepting ----------------------------------------------------------------------

    def _accept_ready(self) -> None:
        sock = self._sock
        for _ in range(ACCEPT_BATCH):
            if sock is None:
                return
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                break
            except OSError as e:
                if e.errno in _OUT_OF_RESOURCES:
                    self._out_of_descriptors()
                else:
                    self._log_once(f"accept on {self.address} failed: {e}")
                break
            self._accepted(conn, addr)
        self._report()

    def _accepted(self, conn: socket.socket, peer: Any) -> None:
        loop = asyncio.get_running_loop()
        assert self._factory is not None
        protocol = self._factory()
        conn.setblocking(False)  # accept() hands out a blocking socket; a refusal must not wait
        decision = self.admission.admit(protocol, loop.time())
        if decision.shed is not None:
            decision.shed.shed()
        if not decision.admitted:
            self.on_refused()
            with contextlib.suppress(OSError):
                if self.refusal:
                    conn.send(self.refusal)
            conn.close()
            return
        make_transport = getattr(loop, "_make_socket_transport", None)
        if make_transport is not None:
            # What asyncio's own servers do: the transport is made at once. The public
            # `connect_accepted_socket` wraps the same call in a task, two coroutines and a
            # future, and asks the kernel for the peer's address that accept() just gave us:
            # about a third of a connection's cost (docs/architecture.md).
            try:
                make_transport(conn, protocol, extra={"peername": peer})
            except Exception as e:
                conn.close()
                self.admission.closed(protocol)
                self._log_once(f"setting up a connection on {self.address} failed: {e}")
            return
        task = loop.create_task(loop.connect_accepted_socket(lambda: protocol, conn))
        self._pending.add(task)
        task.add_done_callback(lambda t: self._connected(t, protocol))

    def _connected(self, task: asyncio.Task[Any], protocol: C) -> None:
        self._pending.discard(task)
        if task.cancelled() or task.exception() is not None:
            self.admission.closed(protocol)  # never connected: connection_lost will not run

    def _out_of_descriptors(self) -> None:
        """accept() ran out of descriptors: free the oldest fresh connection, pause accepting briefly."""
        loop = asyncio.get_running_loop()
        victim = self.admission.out_of_descriptors()
        if victim is not None:
            victim.shed()
        if self._sock is not None:
            loop.remove_reader(self._sock.fileno())
            loop.call_later(EMFILE_PAUSE, self._resume_accepting)

    def _resume_accepting(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().add_reader(self._sock.fileno(), self._accept_ready)

    def _sweep(self) -> None:
        """Close connections that sent no request in time; report; again in a second."""
        loop = asyncio.get_running_loop()
        for conn in self.admission.expired(loop.time(), SWEEP_BATCH):
            conn.shed()
        self._report()
        self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep) if self._sock is not None else None

    def _report(self) -> None:
        line = self.admission.report(asyncio.get_running_loop().time())
        if line is not None:
            log.warning("%s", line)

    def _log_once(self, message: str) -> None:
        more = self._repeats.suffix(message, asyncio.get_running_loop().time())
        if more is not None:
            log.warning("%s%s", message, more)


class TcpBlobServer(TcpListener[C]):
    """Serves `store` on `host`:`port` with connections of type C; subclasses add the protocol.

    A connection idle for `idle_timeout` seconds, or whose answer makes no progress for
    `send_timeout` seconds, is closed.
    """

    def __init__(
        self,
        store: BlobStore,
        host: str,
        port: int,
        *,
        protocol: str,
        idle_timeout: float,
        send_timeout: float,
        admission: Admission[Any] | None = None,
        max_connections: int | None = None,
        refusal: bytes = b"",
    ) -> None:
        super().__init__(host, port, admission=admission, max_connections=max_connections, refusal=refusal)
        self.store = store
        self.idle_timeout = idle_timeout
        self.send_timeout = send_timeout
        self.stats = ServerStats(protocol)

    def on_refused(self) -> None:
        self.stats.refused += 1
