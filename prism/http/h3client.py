"""An HTTP/3 client that keeps ONE QUIC connection open and multiplexes GETs over it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

from prism.hostport import bind_socket, parse_host_port
from prism.http.quic import (
    ConnectionTerminated,
    DataReceived,
    H3Connection,
    H3Event,
    HeadersReceived,
    QuicConnection,
    QuicConnectionProtocol,
    QuicEvent,
    StreamReset,
    open_udp_endpoint,
)
from prism.http.tls import DEFAULT_DATAGRAM_SIZE, quic_configuration

log = logging.getLogger("prism.http")


class Http3Error(ConnectionError):
    """The QUIC connection failed or a request on it did."""


@dataclass(slots=True)
class Http3Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[Http3Response]
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    """The body as received, joined once at the end (no growing buffer copied again and again)."""


STALL_CHECK = 2.0
"""Seconds of silence, with a response awaited, before a PING asks whether the server is still
there: an upstream killed without closing its connections never says so, and QUIC's idle
timeout (20 s) would keep every request failing until then."""


class _Dead(Exception):
    """The server did not answer a PING: the connection is gone."""


class _H3ClientProtocol(QuicConnectionProtocol):
    def __init__(self, quic: QuicConnection) -> None:
        super().__init__(quic)
        self.http = H3Connection(self._quic)
        self.pending: dict[int, _Pending] = {}
        self.terminated = False
        self.clock = asyncio.get_running_loop().time
        self.heard = self.clock()
        """When a datagram last arrived from the server."""

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        self.heard = self.clock()
        super().datagram_received(data, addr)

    def datagrams_received(self, data: list[bytes], addr: Any) -> None:
        self.heard = self.clock()
        super().datagrams_received(data, addr)

    def fail_all(self, err: Exception) -> None:
        self.terminated = True
        for p in self.pending.values():
            if not p.future.done():
                p.future.set_exception(err)
        self.pending.clear()

    def request(self, authority: str, path: str) -> asyncio.Future[Http3Response]:
        stream_id = self._quic.get_next_available_stream_id()
        self.http.send_headers(
            stream_id,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", path.encode()),
                (b"user-agent", b"prism"),
            ],
            end_stream=True,
        )
        fut: asyncio.Future[Http3Response] = asyncio.get_running_loop().create_future()
        self.pending[stream_id] = _Pending(fut)
        self.transmit()
        return fut

    def cancel(self, fut: asyncio.Future[Http3Response]) -> None:
        for sid, p in list(self.pending.items()):
            if p.future is fut:
                del self.pending[sid]
                with contextlib.suppress(Exception):
                    self._quic.reset_stream(sid, 0x10C)  # H3_REQUEST_CANCELLED
                    self.transmit()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            self.fail_all(Http3Error(f"HTTP/3 connection closed: {event.reason_phrase or event.error_code}"))
            return
        if isinstance(event, StreamReset):
            reset = self.pending.pop(event.stream_id, None)
            if reset is not None and not reset.future.done():
                reset.future.set_exception(Http3Error(f"stream reset by server (code {event.error_code})"))
            return
        for h3_event in self.http.handle_event(event):
            self._h3_event(h3_event)

    def _h3_event(self, event: H3Event) -> None:
        if not isinstance(event, HeadersReceived | DataReceived):
            return  # no other event concerns a response
        p = self.pending.get(event.stream_id)
        if p is None:
            return
        if isinstance(event, HeadersReceived):
            for k, v in event.headers:
                key = k.decode("latin-1")
                if key == ":status":
                    # A malformed status (not three ASCII digits) becomes 0: an upstream error.
                    p.status = int(v) if len(v) == 3 and v.isdigit() else 0
                else:
                    p.headers[key] = v.decode("latin-1")
        elif isinstance(event, DataReceived):
            p.chunks.append(event.data)
        if event.stream_ended:
            del self.pending[event.stream_id]
            if not p.future.done():
                p.future.set_result(Http3Response(p.status, p.headers, b"".join(p.chunks)))


class Http3Client:
    """GETs over one persistent QUIC connection to `host:port`, reconnecting when it drops.

    Certificates are not verified (reflector.go's client skips verification too: the
    blob's hash, checked by the caller, is what authenticates the content).
    """

    def __init__(
        self, address: str, timeout: float = 30.0, max_datagram_size: int = DEFAULT_DATAGRAM_SIZE
    ) -> None:
        self.host, self.port = parse_host_port(address, what="HTTP/3 address")
        self.authority = address
        self.timeout = timeout
        self.max_datagram_size = max_datagram_size
        self._protocol: _H3ClientProtocol | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._lock = asyncio.Lock()
        self.connects = 0

    async def _connected(self) -> _H3ClientProtocol:
        proto = self._protocol
        if proto is not None and not proto.terminated:
            return proto
        async with self._lock:
            if self._protocol is not None and not self._protocol.terminated:
                return self._protocol
            await self._drop()
            self._protocol = await asyncio.wait_for(self._connect(), self.timeout)
            self.connects += 1
            return self._protocol

    async def _connect(self) -> _H3ClientProtocol:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
        family, _, _, _, addr = infos[0]
        config = quic_configuration(True, max_datagram_size=self.max_datagram_size)
        config.verify_mode = ssl.CERT_NONE
        config.server_name = self.host
        connection = QuicConnection(configuration=config)
        sock = bind_socket("::" if family == socket.AF_INET6 else "0.0.0.0", 0, socket.SOCK_DGRAM)
        transport, protocol = await open_udp_endpoint(lambda: _H3ClientProtocol(connection), sock)
        assert isinstance(protocol, _H3ClientProtocol)
        try:
            protocol.connect(addr)
            await protocol.wait_connected()
        except BaseException:
            transport.close()
            raise
        self._transport = transport
        return protocol

    async def get(self, path: str) -> Http3Response:
        """GET `path`; on a connection found dead (no answer to a PING) it is sent once more on a new one."""
        for attempt in range(2):
            proto = await self._connected()
            fut = proto.request(self.authority, path)
            try:
                return await self._response(proto, fut)
            except _Dead:
                proto.cancel(fut)
                proto.fail_all(Http3Error("HTTP/3 server stopped answering"))
                if attempt:
                    raise Http3Error(f"HTTP/3 server {self.authority} stopped answering") from None
            except (TimeoutError, asyncio.CancelledError):
                proto.cancel(fut)
                raise
        raise AssertionError("unreachable")

    async def _response(self, proto: _H3ClientProtocol, fut: asyncio.Future[Http3Response]) -> Http3Response:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError
            try:
                return await asyncio.wait_for(asyncio.shield(fut), min(left, STALL_CHECK))
            except TimeoutError:
                if loop.time() - proto.heard < STALL_CHECK:
                    continue
            try:
                await asyncio.wait_for(proto.ping(), STALL_CHECK)
            except (TimeoutError, ConnectionError):
                raise _Dead from None

    async def _drop(self) -> None:
        if self._protocol is not None and not self._protocol.terminated:
            with contextlib.suppress(Exception):
                self._protocol.close()
                await asyncio.wait_for(self._protocol.wait_closed(), 1.0)
        if self._transport is not None:
            self._transport.close()
        self._protocol = None
        self._transport = None

    async def close(self) -> None:
        async with self._lock:
            await self._drop()
