"""The one module that imports the QUIC library, and prism's UDP shell around it.

The library is qh3 (a fork of aioquic with a Rust core, chosen by `bench/http3.py`; see
docs/architecture.md). `PRISM_QUIC=aioquic` swaps in aioquic, whose API is the same, so the
benchmark can measure both in one run (`PRISM_QUIC_GSO=0` likewise keeps asyncio's one-datagram-
per-call transport); nothing else in prism names either library.

`QuicListener` is the server side of the shell: it owns the table of connections (a dict by
connection ID with each connection's IDs kept beside it, so a close costs O(its IDs)),
caps connections and handshakes in progress, and drops new Initials at a cap before any
cryptography runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from prism.memory import MALLOC_TRIM

LIBRARY = os.environ.get("PRISM_QUIC", "qh3")
"""Which QUIC library is in use: "qh3" (the default) or "aioquic"."""

if TYPE_CHECKING or LIBRARY != "aioquic":
    from qh3.asyncio.protocol import QuicConnectionProtocol
    from qh3.h3.connection import H3_ALPN, H3Connection
    from qh3.h3.events import DataReceived, H3Event, HeadersReceived
    from qh3.h3.exceptions import H3Error
    from qh3.quic.configuration import QuicConfiguration
    from qh3.quic.connection import QuicConnection as _QuicConnection
    from qh3.quic.connection import QuicConnectionError
    from qh3.quic.events import (
        ConnectionIdIssued,
        ConnectionIdRetired,
        ConnectionTerminated,
        HandshakeCompleted,
        ProtocolNegotiated,
        QuicEvent,
        StreamReset,
    )
    from qh3.quic.packet import encode_quic_version_negotiation

    class QuicConnection(_QuicConnection):
        """qh3's connection, minus the per-packet logging work it does with no logger attached."""

        def _log_packets(self, event: str, data: bytes) -> None:
            # qh3 2.1 parses and slices every packet it sends to hand it to `_log_packet`, which
            # then finds no logger: about a tenth of a busy server's CPU (bench/http3.py profile).
            if self._quic_logger is not None:
                super()._log_packets(event, data)

else:  # pragma: no cover - the comparison run of bench/http3.py
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.h3.connection import H3_ALPN, H3Connection
    from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
    from aioquic.h3.exceptions import H3Error
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection, QuicConnectionError
    from aioquic.quic.connection import QuicConnection as _QuicConnection
    from aioquic.quic.events import (
        ConnectionIdIssued,
        ConnectionIdRetired,
        ConnectionTerminated,
        HandshakeCompleted,
        ProtocolNegotiated,
        QuicEvent,
        StreamReset,
    )
    from aioquic.quic.packet import encode_quic_version_negotiation

__all__ = [
    "H3_ALPN",
    "ConnectionTerminated",
    "DataReceived",
    "H3Connection",
    "H3Error",
    "H3Event",
    "HandshakeCompleted",
    "HeadersReceived",
    "ProtocolNegotiated",
    "QuicConfiguration",
    "QuicConnection",
    "QuicConnectionProtocol",
    "QuicEvent",
    "StreamReset",
]

log = logging.getLogger("prism.http")


class _QuietPeerClose(logging.Filter):
    """qh3 logs every peer's ordinary close as a WARNING on its "quic" logger: drop those."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Native peer close")


logging.getLogger("quic").addFilter(_QuietPeerClose())

UDP_BUFFER = 4 * 1024 * 1024
"""Socket buffers large enough for a burst of QUIC packets carrying a 2 MiB blob."""

CID_LENGTH = 8
"""Connection IDs this server issues (the libraries' default)."""

MIN_INITIAL_SIZE = 1200
"""A client's first datagram is padded to at least this (RFC 9000 §14.1); smaller ones are dropped."""

_VERSION_2 = 0x6B3343CF

TRIM_AFTER_CLOSES = 256
"""Connections closed since memory was last handed back before the listener does it again."""


def tune_udp_socket(sock: Any) -> None:
    """Large UDP buffers: a burst of QUIC packets for a 2 MiB blob must not overflow them."""
    if sock is None:
        return
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, UDP_BUFFER)


@dataclass(frozen=True, slots=True)
class QuicHeader:
    """What routing needs from a datagram's first packet (RFC 8999 invariants)."""

    destination_cid: bytes
    source_cid: bytes
    version: int | None
    """None for a short-header packet."""
    is_initial: bool


def parse_header(data: bytes, cid_length: int = CID_LENGTH) -> QuicHeader | None:
    """The invariant header of `data`'s first packet, or None if it is not a QUIC packet."""
    if not data:
        return None
    if not data[0] & 0x80:  # short header: the DCID has the length we chose
        if not data[0] & 0x40 or len(data) < 1 + cid_length:  # the fixed bit is always set
            return None
        return QuicHeader(bytes(data[1 : 1 + cid_length]), b"", None, False)
    if len(data) < 7:
        return None
    version = int.from_bytes(data[1:5], "big")
    dlen = data[5]
    if dlen > 20 or len(data) < 7 + dlen:
        return None
    dcid = bytes(data[6 : 6 + dlen])
    slen = data[6 + dlen]
    if slen > 20 or len(data) < 7 + dlen + slen:
        return None
    scid = bytes(data[7 + dlen : 7 + dlen + slen])
    kind = (data[0] & 0x30) >> 4
    initial = kind == (1 if version == _VERSION_2 else 0)
    return QuicHeader(dcid, scid, version, initial)


async def open_udp_endpoint(
    factory: Callable[[], asyncio.DatagramProtocol], sock: socket.socket
) -> tuple[asyncio.DatagramTransport, asyncio.DatagramProtocol]:
    """An asyncio transport over the bound UDP `sock`.

    With qh3 on Linux it is qh3's batching transport: outgoing datagrams of one flight go out
    in one `sendmsg` with `UDP_SEGMENT` (GSO) and incoming ones are read with `recvmmsg`/GRO,
    falling back to one datagram per call where the kernel refuses; otherwise asyncio's own.
    """
    tune_udp_socket(sock)
    loop = asyncio.get_running_loop()
    if LIBRARY != "aioquic" and os.environ.get("PRISM_QUIC_GSO", "1") != "0":
        from qh3.asyncio._transport import create_optimized_datagram_transport

        return await create_optimized_datagram_transport(loop, factory, sock=sock)
    return await loop.create_datagram_endpoint(factory, sock=sock)


def unsent(quic: _QuicConnection, now: float) -> bool:
    """True while the connection still has stream bytes queued or awaiting acknowledgement."""
    if LIBRARY != "aioquic":
        return quic.get_send_buffer_size() > 0 or quic.should_wait_for_ack(now)
    streams: dict[int, Any] = quic._streams  # type: ignore[attr-defined]
    # Only request streams (client-initiated bidirectional); control streams never finish.
    return any(sid % 4 == 0 and not s.sender.is_finished for sid, s in streams.items())


def release(quic: _QuicConnection) -> None:
    """Let a terminated connection be freed by reference counting, at once.

    qh3 2.1's connection, its native core and its TLS bridge refer to each other through
    callbacks, so without this the connection and its native buffers wait for a full collection
    of the heap: a long pause once thousands of connections have closed. After termination the
    connection needs neither (qh3 checks for a missing core).
    """
    if LIBRARY == "aioquic":
        return
    bridge = getattr(quic, "_tls", None)
    for part in ("_tls", "_core"):
        if hasattr(quic, part):
            setattr(quic, part, None)
    if bridge is not None and hasattr(bridge, "__dict__"):
        bridge.__dict__.clear()  # the bridge and its TLS context hold each other


class ServerConnection(QuicConnectionProtocol):
    """One server-side QUIC connection; `QuicListener` keeps its connection IDs in `cids`."""

    def __init__(self, quic: QuicConnection, listener: QuicListener) -> None:
        super().__init__(quic)
        self.listener = listener
        self.cids: set[bytes] = set()
        self.handshaking = True
        self.handshake_timer: asyncio.TimerHandle | None = None

    def transmit(self) -> None:
        try:
            super().transmit()
        except QuicConnectionError as e:
            # qh3 2.1's packet builder refuses part of the handshake flight an aioquic client
            # asks for ("packet builder capacity exhausted": its first queued frame does not fit
            # the packet). The build is transactional and loses nothing; the client's
            # retransmission (about a second later) gets the handshake through.
            self.listener.library_errors += 1
            log.debug("HTTP/3: QUIC library could not build a packet (retried later): %s", e)

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionIdIssued):
            self.listener.route(event.connection_id, self)
        elif isinstance(event, ConnectionIdRetired):
            self.listener.unroute(event.connection_id, self)
        elif isinstance(event, HandshakeCompleted):
            self.listener.handshake_done(self)
        elif isinstance(event, ConnectionTerminated):
            self.listener.forget(self)


@dataclass(slots=True)
class ListenerLimits:
    """Caps that keep a flood of connections from taking the event loop or the memory."""

    max_connections: int = 4096
    max_handshakes: int = 256
    """Handshakes in progress: each costs a key exchange and a certificate signature."""
    handshake_timeout: float = 4.0
    """A connection still handshaking after this long is forgotten (reflector.md §4.5's handshake
    idle timeout), so Initials from clients that vanish cannot hold the handshake slots."""


class QuicListener(asyncio.DatagramProtocol):
    """Routes datagrams to connections by destination connection ID; makes connections for Initials."""

    def __init__(
        self,
        configuration: QuicConfiguration,
        make_connection: Callable[[QuicConnection, QuicListener], ServerConnection],
        limits: ListenerLimits | None = None,
    ) -> None:
        self.configuration = configuration
        self.make_connection = make_connection
        self.limits = limits or ListenerLimits()
        self.table: dict[bytes, ServerConnection] = {}
        self.connections: set[ServerConnection] = set()
        self.handshakes = 0
        self.refused = 0
        """Initials dropped at a cap."""
        self.library_errors = 0
        """Exceptions the QUIC library raised: packets it could not build, connections dropped."""
        self.closed_since_trim = 0
        self._trim: asyncio.TimerHandle | None = None
        self._trim_task: asyncio.Task[None] | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # asyncio's own is not a subclass

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._feed(self._connection_for(data, addr), [data], addr)

    def datagrams_received(self, datagrams: list[bytes], addr: Any) -> None:
        """A batch from one address (qh3's transport): runs of one connection are fed together."""
        run: list[bytes] = []
        owner: ServerConnection | None = None
        for data in datagrams:
            conn = self._connection_for(data, addr)
            if conn is not owner and run:
                self._feed(owner, run, addr)
                run = []
            owner = conn
            if conn is not None:
                run.append(data)
        if run:
            self._feed(owner, run, addr)

    def _feed(self, conn: ServerConnection | None, run: list[bytes], addr: Any) -> None:
        if conn is None:
            return
        try:
            if len(run) == 1 or not hasattr(conn, "datagrams_received"):
                for data in run:
                    conn.datagram_received(data, addr)
            else:
                conn.datagrams_received(run, addr)
        except Exception as e:  # one connection's failure must not reach the shared UDP transport
            self.library_errors += 1
            log.warning("HTTP/3: dropping a connection after a QUIC library error: %s", e)
            self.forget(conn)

    def _connection_for(self, data: bytes, addr: Any) -> ServerConnection | None:
        header = parse_header(data, self.configuration.connection_id_length)
        if header is None:
            return None
        conn = self.table.get(header.destination_cid)
        if conn is not None:
            return conn
        if header.version is None:
            return None
        if header.version not in self.configuration.supported_versions:
            if self.transport is not None and header.version != 0:
                packet = encode_quic_version_negotiation(
                    source_cid=header.destination_cid,
                    destination_cid=header.source_cid,
                    supported_versions=self.configuration.supported_versions,
                )
                self.transport.sendto(packet, addr)
            return None
        if not header.is_initial or len(data) < MIN_INITIAL_SIZE:
            return None
        return self._accept(header)

    def _accept(self, header: QuicHeader) -> ServerConnection | None:
        if (
            len(self.connections) >= self.limits.max_connections
            or self.handshakes >= self.limits.max_handshakes
        ):
            self.refused += 1  # dropped before any cryptography; the client retries or gives up
            return None
        quic = QuicConnection(
            configuration=self.configuration,
            original_destination_connection_id=header.destination_cid,
        )
        conn = self.make_connection(quic, self)
        assert self.transport is not None
        conn.connection_made(self.transport)
        self.connections.add(conn)
        self.handshakes += 1
        self.route(header.destination_cid, conn)
        self.route(quic.host_cid, conn)
        loop = asyncio.get_running_loop()
        conn.handshake_timer = loop.call_later(self.limits.handshake_timeout, self._handshake_expired, conn)
        return conn

    def _handshake_expired(self, conn: ServerConnection) -> None:
        if conn.handshaking and conn in self.connections:
            self.forget(conn)

    def route(self, cid: bytes, conn: ServerConnection) -> None:
        self.table[cid] = conn
        conn.cids.add(cid)

    def unroute(self, cid: bytes, conn: ServerConnection) -> None:
        if self.table.get(cid) is conn:
            del self.table[cid]
        conn.cids.discard(cid)

    def handshake_done(self, conn: ServerConnection) -> None:
        if conn.handshaking:
            conn.handshaking = False
            self.handshakes -= 1
        if conn.handshake_timer is not None:
            conn.handshake_timer.cancel()  # and with it, the timer's reference to the connection
            conn.handshake_timer = None

    def forget(self, conn: ServerConnection) -> None:
        """Drop a terminated connection: its own IDs only, never a scan of the table."""
        for cid in conn.cids:
            if self.table.get(cid) is conn:
                del self.table[cid]
        conn.cids.clear()
        release(conn._quic)
        self.handshake_done(conn)
        self.connections.discard(conn)
        self.closed_since_trim += 1
        calm = self.closed_since_trim >= TRIM_AFTER_CLOSES or not self.connections
        if calm and self._trim is None and MALLOC_TRIM is not None:
            # Once closes have calmed down for a second, hand freed heap back to the system:
            # the QUIC core's buffers live in C/Rust malloc, which otherwise keeps them.
            self._trim = asyncio.get_running_loop().call_later(1.0, self._start_trim)

    def _start_trim(self) -> None:
        task = asyncio.get_running_loop().create_task(self._give_memory_back())
        self._trim_task = task  # keeps a reference until done

    async def _give_memory_back(self) -> None:
        self.closed_since_trim = 0
        if MALLOC_TRIM is not None:
            await asyncio.to_thread(MALLOC_TRIM)
        self._trim = None

    def close(self) -> None:
        if self._trim is not None:
            self._trim.cancel()
        for conn in list(self.connections):
            with contextlib.suppress(Exception):
                conn.close()
        if self.transport is not None:
            self.transport.close()
