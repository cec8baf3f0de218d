"""The HTTP blob server (reflector.md §4.4): `GET`/`HEAD /blob?hash=...&edge_token=...`.

A lean asyncio Protocol around the sans-IO codec in `h1.py` rather than a general web
framework: a blob answer is one header write followed by `sendfile` straight from the
open file a disk store handed back, so a 2 MiB blob costs a handful of system calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from logging import DEBUG
from typing import Any

from prism.admission import Admission
from prism.blob import is_valid_hash
from prism.hostport import HostPort
from prism.http.get import (
    BlobGetter,
    Failed,
    Found,
    GetOutcome,
    Missing,
    ProtectedCheck,
    Refused,
    access_log,
    failure_answer,
)
from prism.http.h1 import (
    BlobResponse,
    HttpParseError,
    Request,
    RequestParser,
    http_date,
    plan_blob_response,
    render_head,
)
from prism.http.negcache import NegativeCache
from prism.http.queue import RequestQueue
from prism.sendfile import SEND_BUFFER, BlobSender
from prism.stats import ErrorType, ServerSnapshot
from prism.store.base import BlobRef, BlobStore, StoreError, arrived, immediate_getter
from prism.tcpserver import AdmittedConnection, TcpBlobServer

log = logging.getLogger("prism.http")

MAX_PIPELINED = 16
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)
"""The answer to a connection refused at the cap: fixed bytes, sent without reading the request."""

RECEIVE_SIZE = 64 * 1024
"""Bytes read from a connection at once (a request head is at most `MAX_HEAD_SIZE`)."""

_date: tuple[int, str] = (0, "")


def current_date() -> str:
    """The Date header of now, formatted at most once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, http_date(now))
    return _date[1]


class HttpBlobServer(TcpBlobServer["HttpConnection"]):
    """Serves blobs of `store` over HTTP/1.1. `start()`, then `.port`; `stop(grace)`."""

    def __init__(
        self,
        store: BlobStore,
        host: str = "0.0.0.0",
        port: int = 5569,
        *,
        edge_token: str = "",
        protected: ProtectedCheck | None = None,
        queue: RequestQueue | None = None,
        request_queue_size: int = 200,
        idle_timeout: float = 60.0,
        send_timeout: float = 60.0,
        negative_cache: NegativeCache | None = None,
        admission: Admission[Any] | None = None,
        max_connections: int | None = None,
    ) -> None:
        super().__init__(
            store,
            host,
            port,
            protocol="http",
            idle_timeout=idle_timeout,
            send_timeout=send_timeout,
            admission=admission,
            max_connections=max_connections,
            refusal=REFUSAL,
        )
        self.edge_token = edge_token
        self.protected = protected
        self.queue = queue or RequestQueue(request_queue_size)
        self.negative_cache = negative_cache if negative_cache is not None else NegativeCache()
        self.getter = BlobGetter(
            store, self.queue, self.stats, protected, self.negative_cache, "http", arriving=True
        )
        self.get_now = immediate_getter(store)
        self.scratch = bytearray(RECEIVE_SIZE)
        """Where every connection receives: each read is parsed before the next one."""

    async def start(self) -> None:
        await self._listen(lambda: HttpConnection(self))
        log.info("HTTP blob server listening on %s", self.address)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, close idle connections, let requests in flight finish within `grace`."""
        if not self.listening:
            return
        self._close_listener()
        for conn in list(self.connections):
            conn.close_when_idle()
        busy = [c.until_idle() for c in self.connections if c.busy]
        if busy:
            _done, pending = await asyncio.wait(busy, timeout=grace)
            if pending:
                log.warning("HTTP: %d transfer(s) still running after %.1fs; aborting", len(pending), grace)
        for conn in list(self.connections):
            conn.abort()

    def log_unexpected(self, doing: str, error: Exception) -> None:
        """An error no code path expects: one line per class and window (the traceback at DEBUG)."""
        more = self.getter.repeats.suffix(f"unexpected {type(error).__name__}", time.monotonic())
        if more is not None:
            log.error("HTTP: unexpected error %s: %s: %s%s", doing, type(error).__name__, error, more)
        log.debug("HTTP: unexpected error %s", doing, exc_info=error)

    def snapshot(self) -> ServerSnapshot:
        return self.stats.snapshot(queue_waiting=self.queue.waiting, connections=len(self.connections))

    # -- request handling -------------------------------------------------------------------

    async def handle(self, conn: HttpConnection, req: Request) -> None:
        conn.head_request = req.method == "HEAD"
        if req.path != "/blob":
            await conn.send_simple(404, b"not found\n", req.keep_alive)
            return
        if req.method not in ("GET", "HEAD"):
            await conn.send_simple(405, b"method not allowed\n", req.keep_alive, [("Allow", "GET, HEAD")])
            return
        blob_hash = req.query.get("hash", "")
        if not is_valid_hash(blob_hash):
            self.stats.error(ErrorType.INVALID_BLOB_HASH)
            await conn.send_simple(
                400, b"invalid blob hash: want 96 lowercase hex characters\n", req.keep_alive
            )
            return
        if req.method == "HEAD":
            await self._head(conn, req, blob_hash)
        else:
            await self._get(conn, req, blob_hash)

    async def _head(self, conn: HttpConnection, req: Request, blob_hash: str) -> None:
        try:
            found = await self.store.has(blob_hash)
        except Exception as e:
            self.stats.error(e)
            more = self.getter.repeats.suffix(type(e).__name__, time.monotonic())
            if more is not None:
                log.warning("HTTP HEAD %s: %s%s", blob_hash[:16], e, more)
            status, body, headers = failure_answer(e)
            await conn.send_simple(status, body, req.keep_alive, headers, head_only=True)
            return
        await conn.send_simple(204 if found else 404, b"", req.keep_alive, head_only=True)

    def _may_be_protected(self, req: Request) -> bool:
        """Whether the protected-content check applies: it does unless the request has the edge token."""
        return self.protected is not None and req.query.get("edge_token", "") != self.edge_token

    async def _get(self, conn: HttpConnection, req: Request, blob_hash: str) -> None:
        async def respond(outcome: GetOutcome) -> None:
            await self._respond(conn, req, outcome)

        protected = self._may_be_protected(req)
        await self.getter.get(blob_hash, respond, may_be_protected=protected, client=conn.peer_name)

    def answer_now(self, conn: HttpConnection, req: Request) -> bool:
        """Answer a GET of a blob the store hands over at once (a hit) without a task.

        False, with nothing done, when `handle` must answer; True when the answer is out or
        its rest is going out from the socket's writable edges (`conn.finish_in_background`).
        Every other request, and a hit the checks of `handle` could refuse (protected content,
        a full queue), takes `handle`'s way: a check added to `handle` or `BlobGetter` needs its
        condition here too.
        """
        get_now = self.get_now
        if get_now is None or req.method != "GET" or req.path != "/blob" or access_log.isEnabledFor(DEBUG):
            return False
        blob_hash = req.query.get("hash", "")
        if not is_valid_hash(blob_hash) or blob_hash in self.negative_cache or self._may_be_protected(req):
            return False
        queue = self.queue
        if not queue.try_acquire():
            return False
        try:
            ref = get_now(blob_hash)
        except Exception:  # handle meets it again, and answers it
            ref = None
        if ref is None:
            queue.release()
            return False
        try:
            done, count = self._start_blob(conn, req, ref)
        except BaseException:
            self._blob_out(ref, 0, False)
            raise
        if done:
            self._blob_out(ref, count, True)
            conn.answered(req.keep_alive)
        else:
            conn.finish_in_background(partial(self._blob_out, ref, count), req.keep_alive)
        return True

    def _blob_out(self, ref: BlobRef, count: int, sent: bool) -> None:
        """An answer `answer_now` started has ended: its file and queue slot are freed."""
        ref.close()
        self.queue.release()
        if sent and count:
            self.stats.sent(count)

    def _start_blob(
        self, conn: HttpConnection, req: Request, ref: BlobRef, plan: BlobResponse | None = None
    ) -> tuple[bool, int]:
        """Start the answer to a GET of `ref`: (all sent, body bytes); `conn.sender.finish()` if not."""
        if plan is None:
            plan = plan_blob_response(req.headers, ref.size, ref.hash, ref.trace.to_json())
        head = render_head(plan.status, plan.headers, req.keep_alive, current_date())
        return conn.sender.start(head, ref, plan.start, plan.count), plan.count

    async def _send_arriving(
        self, conn: HttpConnection, req: Request, ref: BlobRef, plan: BlobResponse
    ) -> None:
        """Send a blob whose bytes are still arriving (`BlobSender.send_arriving`); if it fails to
        arrive or to verify, the connection is aborted with the body cut short."""
        head = render_head(plan.status, plan.headers, req.keep_alive, current_date())
        try:
            await conn.sender.send_arriving(head, ref)
        except StoreError as e:  # the arrival's own failure (a send that fails raises OSError)
            self.stats.error(e)
            self.getter.log_failure(ref.hash, e)
            conn.pending.clear()  # the requests behind it go with the connection
            conn.abort()
            return
        self.stats.sent(ref.size)

    async def _respond(self, conn: HttpConnection, req: Request, outcome: GetOutcome) -> None:
        keep_alive = req.keep_alive
        if isinstance(outcome, Found):
            ref = outcome.ref
            plan = plan_blob_response(req.headers, ref.size, ref.hash, ref.trace.to_json())
            if ref.arrival is not None:
                if plan.status == 200:
                    await self._send_arriving(conn, req, ref, plan)
                    return
                if plan.count:  # a range: answered from the whole blob
                    try:
                        await arrived(ref)
                    except Exception as e:
                        self.stats.error(e)
                        self.getter.log_failure(ref.hash, e)
                        status, body, headers = failure_answer(e)
                        await conn.send_simple(status, body, keep_alive, headers)
                        return
            done, count = self._start_blob(conn, req, ref, plan)
            if not done:
                await conn.sender.finish()
            if count:  # (none for 304, 416)
                self.stats.sent(count)
        elif isinstance(outcome, Missing):
            await conn.send_simple(404, b"", keep_alive, [("Via", outcome.trace.to_json())])
        elif isinstance(outcome, Failed):
            status, body, headers = failure_answer(outcome.error)
            headers.append(("Via", outcome.trace.to_json()))
            await conn.send_simple(status, body, keep_alive, headers)
        elif outcome is Refused.PROTECTED:
            await conn.send_simple(403, b"requested blob is protected", keep_alive)
        else:
            await conn.send_simple(503, b"server busy, retry later\n", keep_alive, [("Retry-After", "1")])


class HttpConnection(AdmittedConnection, asyncio.BufferedProtocol):
    """One client connection: parses requests and answers them one at a time, in order.

    A buffered protocol receiving into its server's one scratch buffer: each read is parsed
    before the next, and asyncio's own reads would allocate 256 KiB per request (measured 17 µs
    of CPU per `recv` of a request head, more than the rest of a request's parsing).
    """

    def __init__(self, server: HttpBlobServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.parser = RequestParser()
        self.pending: deque[Request] = deque()
        self.task: asyncio.Task[None] | None = None
        self.sending = False
        """The rest of an answer is going out without a task (`finish_in_background`)."""
        self._idle_waiter: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None
        self.sender: BlobSender
        self.closed = False
        self.reading_paused = False
        self._idle: asyncio.TimerHandle | None = None
        self.idle_since = 0.0
        """When the last answer went out (or the connection was made)."""
        self._close_after_idle = False
        self.head_request = False

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self.refuse_if_shed(transport):
            return
        self.transport = transport
        self.sender = BlobSender(
            transport,
            SEND_BUFFER,
            write_buffer_high=SEND_BUFFER,
            send_timeout=self.server.send_timeout,
            cork=True,
        )
        self.server.connections.add(self)
        self.idle_since = self.loop.time()
        self._arm_idle(self.server.idle_timeout)

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.server.scratch

    def buffer_updated(self, nbytes: int) -> None:
        try:
            requests = self.parser.feed(memoryview(self.server.scratch)[:nbytes])
        except Exception as exc:
            # A parse error is the codec's HttpParseError; anything else is a codec bug that a
            # flood must not turn into a traceback per request: answered the same, logged once.
            e = exc if isinstance(exc, HttpParseError) else HttpParseError(400, "bad request")
            if e is not exc:
                self.server.log_unexpected("parsing a request", exc)
            self.server.stats.error(e)
            if not self.busy and self.transport is not None:
                body = f"{e}\n".encode()
                headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
                head = render_head(e.status, headers, False, current_date())
                self.transport.write(head + body)
                self.transport.close()
            else:
                self.abort()
            return
        if not requests:
            return
        busy = self.busy
        if not busy and len(requests) == 1 and not self.pending:
            try:
                if self.server.answer_now(self, requests[0]):
                    return
            except Exception as e:
                self._failed(e)
                return
        self.pending.extend(requests)
        if len(self.pending) >= MAX_PIPELINED and self.transport is not None:
            self.transport.pause_reading()
            self.reading_paused = True
        if not busy:
            self._start_serving()

    @property
    def busy(self) -> bool:
        """An answer is in progress (in a task, or going out from writable edges)."""
        return self.task is not None or self.sending

    def _start_serving(self) -> None:
        self.server.admission.busy(self)
        self.task = self.loop.create_task(self._serve())

    def answered(self, keep_alive: bool) -> None:
        """An answer is out: the connection waits on its client again (or closes)."""
        if not keep_alive:
            self.close()
            return
        self.idle_since = self.loop.time()
        self.server.admission.idle(self, self.idle_since)

    def finish_in_background(self, ended: Callable[[bool], None], keep_alive: bool) -> None:
        """The socket took part of an answer: the rest goes from its writable edges, then
        `ended(sent)` frees what the answer held and the connection goes on."""
        self.sending = True
        self.server.admission.busy(self)
        self.sender.resume(partial(self._rest_sent, ended, keep_alive))

    def _rest_sent(
        self, ended: Callable[[bool], None], keep_alive: bool, error: BaseException | None
    ) -> None:
        self.sending = False
        try:
            ended(error is None)
            if self.closed:
                return
            if error is not None:
                self._failed(error if isinstance(error, Exception) else ConnectionResetError(str(error)))
            elif not keep_alive or self._close_after_idle:
                self.close()
            elif self.pending:
                self._start_serving()  # (it wakes `until_idle` once those are answered too)
            else:
                self.answered(True)
        finally:
            if self.task is None:
                self._wake_idle_waiter()

    def until_idle(self) -> asyncio.Future[None]:
        """Done once the answer in progress has ended."""
        if self._idle_waiter is None:
            self._idle_waiter = self.loop.create_future()
            if not self.busy:
                self._wake_idle_waiter()
        return self._idle_waiter

    def _wake_idle_waiter(self) -> None:
        waiter, self._idle_waiter = self._idle_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._disarm_idle()
        self.server.admission.closed(self)
        if self.transport is None:
            return  # shed before it connected
        self.sender.connection_lost()
        self.server.connections.discard(self)
        if self.task is not None:
            self.task.cancel()  # (holds nothing before its first step: requests only)
        self._wake_idle_waiter()

    def pause_writing(self) -> None:
        self.sender.pause_writing()

    def resume_writing(self) -> None:
        self.sender.resume_writing()

    def peer_name(self) -> str:
        """The client's HOST:PORT, for the access log."""
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        return str(HostPort(*peer[:2])) if peer else "-"

    # serving

    async def _serve(self) -> None:
        """Answer the pending requests in order."""
        try:
            while self.pending and not self.closed:
                req = self.pending.popleft()
                if self.reading_paused and len(self.pending) < MAX_PIPELINED // 2 and self.transport:
                    self.transport.resume_reading()
                    self.reading_paused = False
                await self.server.handle(self, req)
                if not req.keep_alive:
                    self.close()
                    return
        except asyncio.CancelledError:
            self.abort()
        except Exception as e:
            self._failed(e)
        finally:
            self.task = None
            self._wake_idle_waiter()
            self.idle_since = self.loop.time()
            self.server.admission.idle(self, self.idle_since)
        if self._close_after_idle:
            self.close()

    def _failed(self, error: Exception) -> None:
        """Answering failed: the connection is aborted (a client that left is no news)."""
        if isinstance(error, (ConnectionError, TimeoutError, OSError)):
            self.server.stats.error(error)
            log.debug("HTTP connection dropped: %s", error)
        else:
            self.server.log_unexpected("serving a request", error)
        self.abort()

    async def send_simple(
        self,
        status: int,
        body: bytes,
        keep_alive: bool,
        headers: list[tuple[str, str]] | None = None,
        head_only: bool = False,
    ) -> None:
        hdrs = list(headers or [])
        if status not in (204, 304):
            if body:
                hdrs.insert(0, ("Content-Type", "text/plain; charset=utf-8"))
            hdrs.append(("Content-Length", str(len(body))))
        data = render_head(status, hdrs, keep_alive, current_date())
        if not (head_only or self.head_request):
            data += body
        await self.sender.write(data)

    # lifecycle

    def _arm_idle(self, delay: float) -> None:
        if not self.closed:
            self._idle = self.loop.call_later(delay, self._check_idle)

    def _disarm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _check_idle(self) -> None:
        # One timer per connection, re-armed when it fires rather than at every request: an
        # answer costs a time stamp, not a timer cancelled and scheduled again.
        self._idle = None
        timeout = self.server.idle_timeout
        if self.busy:
            self._arm_idle(timeout)  # busy: its send has a watchdog of its own
            return
        left = self.idle_since + timeout - self.loop.time()
        if left <= 0:
            self.close()
        else:
            self._arm_idle(left)

    def close_when_idle(self) -> None:
        self._close_after_idle = True
        if not self.busy:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()
