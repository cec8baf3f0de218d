"""The HTTP/3 blob server (reflector.md §4.5): `/get/{hash}?trace=...` and `/has/{hash}` over QUIC."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from urllib.parse import parse_qsl

from prism.blob import is_valid_hash
from prism.hostport import HostPort, bind_socket
from prism.http.get import (
    BlobGetter,
    Failed,
    Found,
    GetOutcome,
    Missing,
    ProtectedCheck,
    Refused,
    failure_answer,
)
from prism.http.queue import RequestQueue
from prism.http.quic import (
    ConnectionTerminated,
    H3Connection,
    H3Error,
    H3Event,
    HeadersReceived,
    ListenerLimits,
    ProtocolNegotiated,
    QuicConnection,
    QuicEvent,
    QuicListener,
    ServerConnection,
    open_udp_endpoint,
    unsent,
)
from prism.http.tls import DEFAULT_DATAGRAM_SIZE, quic_configuration
from prism.stats import ErrorType, ServerSnapshot, ServerStats
from prism.store.arrival import sendable_pieces
from prism.store.base import BlobRef, BlobStore, StoreError

H3_INTERNAL_ERROR = 0x0102
"""RFC 9114 §8.1: the stream is reset when a blob being sent fails to arrive or to verify."""

log = logging.getLogger("prism.http")

LBRYCRD_ADDRESS = "bJxKvpD96kaJLriqVajZ7SaQTsWWyrGQct"
TRUE_VALUES = frozenset({"1", "t", "T", "TRUE", "true", "True"})
"""What Go's strconv.ParseBool reads as true."""


class Http3BlobServer:
    """Serves blobs of `store` over HTTP/3 on UDP `port`. `start()`, `.port`, `stop(grace)`."""

    def __init__(
        self,
        store: BlobStore,
        host: str = "0.0.0.0",
        port: int = 5568,
        *,
        cert_file: str | None = None,
        key_file: str | None = None,
        protected: ProtectedCheck | None = None,
        queue: RequestQueue | None = None,
        request_queue_size: int = 200,
        max_datagram_size: int = DEFAULT_DATAGRAM_SIZE,
        limits: ListenerLimits | None = None,
    ) -> None:
        self.store = store
        self.host = host
        self._port = port
        self.configuration = quic_configuration(False, cert_file, key_file, max_datagram_size)
        self.protected = protected
        self.queue = queue or RequestQueue(request_queue_size)
        self.stats = ServerStats("http3")
        self.getter = BlobGetter(store, self.queue, self.stats, protected, None, "http3", arriving=True)
        self.tasks: set[asyncio.Task[None]] = set()
        self.limits = limits or ListenerLimits()
        self.listener: QuicListener | None = None

    @property
    def port(self) -> int:
        if self.listener is not None and self.listener.transport is not None:
            return int(self.listener.transport.get_extra_info("sockname")[1])
        return self._port

    async def start(self) -> None:
        listener = QuicListener(self.configuration, self._connection, self.limits)
        sock = bind_socket(self.host, self._port, socket.SOCK_DGRAM)  # dual-stack for an IPv6 --host
        try:
            await open_udp_endpoint(lambda: listener, sock)
        except BaseException:
            sock.close()
            raise
        self.listener = listener
        log.info("HTTP/3 blob server listening on %s (udp)", HostPort(self.host, self.port))

    async def stop(self, grace: float = 5.0) -> None:
        """Let requests in flight finish (and their bytes leave) within `grace`, then close."""
        listener = self.listener
        if listener is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=grace)
        while loop.time() < deadline and any(  # noqa: ASYNC110
            unsent(c._quic, loop.time()) for c in listener.connections
        ):
            await asyncio.sleep(0.02)
        listener.close()
        self.listener = None

    def _connection(self, quic: QuicConnection, listener: QuicListener) -> ServerConnection:
        return _H3ServerProtocol(quic, listener, self)

    def snapshot(self) -> ServerSnapshot:
        return self.stats.snapshot(queue_waiting=self.queue.waiting)

    async def answer(self, proto: _H3ServerProtocol, stream_id: int, method: str, path: str) -> None:
        route, _, qs = path.partition("?")
        parts = route.split("/")
        if len(parts) != 3 or parts[1] not in ("get", "has"):
            proto.respond(stream_id, 404, b"not found")
            return
        blob_hash = parts[2]
        if not is_valid_hash(blob_hash):
            self.stats.error(ErrorType.INVALID_BLOB_HASH)
            proto.respond(stream_id, 400, b"invalid blob hash: want 96 lowercase hex characters")
            return
        if parts[1] == "has":
            await self._has(proto, stream_id, blob_hash)
            return
        trace = dict(parse_qsl(qs, keep_blank_values=True)).get("trace", "") in TRUE_VALUES

        async def respond(outcome: GetOutcome) -> None:
            await self._respond(proto, stream_id, outcome, trace)

        await self.getter.get(blob_hash, respond)

    async def _respond(
        self, proto: _H3ServerProtocol, stream_id: int, outcome: GetOutcome, trace: bool
    ) -> None:
        if isinstance(outcome, Found):
            ref = outcome.ref
            if ref.arrival is not None:
                await self._send_arriving(proto, stream_id, ref, trace)
                return
            data = await _read_blob(ref)
            headers = [(b"content-length", str(len(data)).encode())]
            if trace:
                headers.append((b"via", ref.trace.to_json().encode()))
            proto.respond(stream_id, 200, data, headers)
            self.stats.sent(len(data))
        elif isinstance(outcome, Missing):
            proto.respond(stream_id, 404, b"blob not found")
        elif isinstance(outcome, Failed):
            proto.respond(stream_id, *_failure(outcome.error))
        elif outcome is Refused.PROTECTED:
            proto.respond(stream_id, 403, b"requested blob is protected")
        else:
            proto.respond(stream_id, 503, b"server busy, retry later")

    async def _send_arriving(
        self, proto: _H3ServerProtocol, stream_id: int, ref: BlobRef, trace: bool
    ) -> None:
        """Send a blob whose bytes are still arriving, each piece as it lands; the stream ends only
        once the blob is verified, and is reset (the client gets no blob) if it fails."""
        arrival = ref.arrival
        assert arrival is not None
        headers = [(b"content-length", str(ref.size).encode())]
        if trace:
            headers.append((b"via", ref.trace.to_json().encode()))
        if not proto.start_response(stream_id, 200, headers):
            return
        view = memoryview(arrival.buffer)
        try:
            async for start, end in sendable_pieces(arrival):
                if not proto.send_body(stream_id, view[start:end], end_stream=end == ref.size):
                    return  # the stream or the connection went away
        except StoreError as e:  # the arrival's own failure
            self.stats.error(e)
            self.getter.log_failure(ref.hash, e)
            proto.reset(stream_id)
            return
        self.stats.sent(ref.size)

    async def _has(self, proto: _H3ServerProtocol, stream_id: int, blob_hash: str) -> None:
        try:
            found = await self.store.has(blob_hash)
        except Exception as e:
            self.stats.error(e)
            more = self.getter.repeats.suffix(type(e).__name__, time.monotonic())
            if more is not None:
                log.warning("HTTP/3 has %s: %s%s", blob_hash[:16], e, more)
            proto.respond(stream_id, *_failure(e))
            return
        available = "true" if found else "false"
        body = f'{{"lbrycrd_address":"{LBRYCRD_ADDRESS}","is_available":{available}}}'
        proto.respond(
            stream_id, 200 if found else 404, body.encode(), [(b"content-type", b"application/json")]
        )


async def _read_blob(ref: BlobRef) -> bytes:
    """The blob's bytes; a file is read on a worker thread so the loop keeps serving meanwhile."""
    if ref.file is None:
        return ref.read()
    return await asyncio.to_thread(ref.read)


class _H3ServerProtocol(ServerConnection):
    def __init__(self, quic: QuicConnection, listener: QuicListener, blob_server: Http3BlobServer) -> None:
        super().__init__(quic, listener)
        self.blob_server = blob_server
        self._http: H3Connection | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        super().quic_event_received(event)
        if isinstance(event, ProtocolNegotiated):
            self._http = H3Connection(self._quic)
        elif isinstance(event, ConnectionTerminated):
            self._http = None  # its buffers go now, not when the last reference does
            return
        if self._http is None:
            return
        try:
            h3_events = self._http.handle_event(event)
        except H3Error:
            self.blob_server.stats.error(ErrorType.QUIC_PROTOCOL_VIOLATION)
            return
        for h3_event in h3_events:
            self._h3_event(h3_event)

    def _h3_event(self, event: H3Event) -> None:
        if not isinstance(event, HeadersReceived):
            return  # request bodies are ignored
        headers = dict(event.headers)
        method = headers.get(b":method", b"").decode("latin-1")
        path = headers.get(b":path", b"").decode("latin-1")
        task = asyncio.get_running_loop().create_task(
            self._answer(event.stream_id, method, path), name=f"h3 {path[:40]}"
        )
        self.blob_server.tasks.add(task)
        task.add_done_callback(self.blob_server.tasks.discard)

    async def _answer(self, stream_id: int, method: str, path: str) -> None:
        try:
            await self.blob_server.answer(self, stream_id, method, path)
        except Exception:
            log.exception("HTTP/3: error answering %s", path[:120])

    def respond(
        self, stream_id: int, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        hdrs = list(headers or [])
        if not any(k == b"content-length" for k, _ in hdrs):
            hdrs.append((b"content-length", str(len(body)).encode()))
        if self.start_response(stream_id, status, hdrs):
            self.send_body(stream_id, body, end_stream=True)

    def start_response(self, stream_id: int, status: int, headers: list[tuple[bytes, bytes]]) -> bool:
        """Send the response's headers; False when the stream or the connection went away."""
        if self._http is None:
            return False
        try:
            self._http.send_headers(stream_id, [(b":status", str(status).encode()), *headers])
        except Exception as e:  # the stream or connection went away meanwhile
            log.debug("HTTP/3: cannot answer stream %d: %s", stream_id, e)
            return False
        return True

    def send_body(self, stream_id: int, data: bytes | memoryview, end_stream: bool) -> bool:
        """Send body bytes (and send them now); False when the stream or the connection went away."""
        if self._http is None:
            return False
        try:
            self._http.send_data(stream_id, data, end_stream=end_stream)
            self.transmit()
        except Exception as e:
            log.debug("HTTP/3: cannot answer stream %d: %s", stream_id, e)
            return False
        return True

    def reset(self, stream_id: int) -> None:
        """Abandon a response part-way: the client gets an error, not a short body it could keep."""
        try:
            self._quic.reset_stream(stream_id, H3_INTERNAL_ERROR)
            self.transmit()
        except Exception as e:
            log.debug("HTTP/3: cannot reset stream %d: %s", stream_id, e)


def _failure(error: BaseException) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """HTTP/1.1's generic answer to a failed lookup (the detail stays in the log), as HTTP/3 fields.

    reflector.go answers 400 with the error text; its http3 client treats any status but 200 and
    404 as an error, so the status can say what HTTP/1.1 says (503 while the database is down).
    """
    status, body, headers = failure_answer(error)
    return status, body, [(k.lower().encode(), v.encode()) for k, v in headers]
