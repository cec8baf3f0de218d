"""Sans-IO HTTP/1.1 response reading for prism's own client (`prism.http.client`).

One `ResponseReader` per request. The shell asks it where the next received bytes should go
(`recv_buffer`) and tells it how many arrived there (`received`), then `eof` when the peer
closes. A body with a Content-Length is received straight into its final buffer (from the
`alloc` callable): no chunk list, no join. Chunked and close-delimited bodies go through the
reader's small scratch buffer and are copied into a growing body (prism's servers never send
them; other servers may). Everything a hostile server can get wrong raises `ResponseError`
with what was wrong: an oversize head, a bad status line or header, a bad or oversize length,
a truncated body.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

MAX_HEAD = 64 * 1024
"""Bytes of status line plus headers accepted before giving up on a response."""

SCRATCH = 64 * 1024
"""Bytes received at once while reading a head, a chunked or a close-delimited body."""

MAX_CHUNK_LINE = 1024
"""Bytes of one chunk-size line (size, extensions) or trailer line accepted."""


class ResponseError(Exception):
    """The server sent something that is not a valid HTTP/1.1 response (or not all of one)."""


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """A parsed status line and header block; header names lower-cased, in order."""

    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]

    def get(self, name: str, default: str = "") -> str:
        """The first value of header `name` (lower case), or `default`."""
        for key, value in self.headers:
            if key == name:
                return value
        return default


class _State(enum.Enum):
    HEAD = 1
    LENGTH = 2
    CHUNK_SIZE = 3
    CHUNK_DATA = 4
    CHUNK_CRLF = 5
    TRAILERS = 6
    UNTIL_CLOSE = 7
    DONE = 8


Alloc = Callable[[int], bytearray]
"""Returns a writable buffer of exactly the given length for a body of that length."""


def _new_buffer(size: int) -> bytearray:
    return bytearray(size)


def request_bytes(method: str, target: str, host: str, headers: list[tuple[str, str]] | None = None) -> bytes:
    """A request without a body, asking for keep-alive (HTTP/1.1's default)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers or []]
    for line in lines:
        if "\r" in line or "\n" in line:
            raise ValueError(f"line break in a request line or header: {line!r}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class ResponseReader:
    """Reads one response to a request of `method`; see the module docstring for the protocol.

    After `complete`, `head` and `body` hold the response and `keep_alive` says whether the
    connection may carry another request. `max_body` bounds the body (Content-Length or the
    bytes actually sent) and `alloc` supplies the buffer of a body whose length is announced.
    `scratch` (whose contents are not kept between `received` calls) may be shared by readers
    used one after another, as on one connection.
    """

    def __init__(
        self,
        method: str = "GET",
        *,
        max_body: int,
        alloc: Alloc | None = None,
        max_head: int = MAX_HEAD,
        scratch: bytearray | None = None,
    ) -> None:
        self.method = method
        self.max_body = max_body
        self.max_head = max_head
        self._alloc = alloc or _new_buffer
        self._state = _State.HEAD
        self._scratch = scratch if scratch else bytearray(SCRATCH)
        """Receives heads, chunked and close-delimited bodies; a connection lends its own."""
        self._pending = bytearray()
        """Received bytes not parsed yet (a partial head or chunk line)."""
        self.head: ResponseHead | None = None
        self.body: bytearray = bytearray()
        self._filled = 0
        self._chunk_left = 0
        self.keep_alive = False
        self.received_any = False
        """True once any byte arrived: a reused connection that fails before may be retried."""
        self.extra = False
        """Bytes arrived after the response ended: the connection cannot be reused."""

    @property
    def complete(self) -> bool:
        return self._state is _State.DONE

    @property
    def receiving_in_place(self) -> bool:
        """The head is in and the body (with a Content-Length) is arriving into `body`, its final buffer."""
        return self._state is _State.LENGTH

    @property
    def body_received(self) -> int:
        """Bytes of the body in so far."""
        return self._filled if self._state is _State.LENGTH else len(self.body)

    def recv_buffer(self) -> memoryview:
        """Where the next received bytes go (never empty)."""
        if self._state is _State.LENGTH:
            return memoryview(self.body)[self._filled :]
        return memoryview(self._scratch)

    def received(self, n: int) -> None:
        """`n` bytes were written at the start of the last `recv_buffer()`."""
        if n <= 0:
            return
        self.received_any = True
        if self._state is _State.LENGTH:
            self._filled += n
            if self._filled == len(self.body):
                self._state = _State.DONE
            return
        if self._state is _State.DONE:
            self.extra = True
            self.keep_alive = False
            return
        self._pending += memoryview(self._scratch)[:n]
        self._parse()

    def feed(self, data: bytes) -> None:
        """Process `data` as if received (for tests and callers without a receive buffer)."""
        view = memoryview(data)
        while view:
            buf = self.recv_buffer()
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            view = view[n:]
            self.received(n)

    def eof(self) -> None:
        """The peer closed its side: completes a close-delimited body, else raises if incomplete."""
        state = self._state
        if state is _State.DONE:
            return
        if state is _State.UNTIL_CLOSE:
            self._state = _State.DONE
            self.keep_alive = False
            return
        if state is _State.HEAD:
            raise ResponseError(
                "connection closed before a response"
                if not self.received_any
                else "connection closed in the middle of the response head"
            )
        if state is _State.LENGTH:
            raise ResponseError(f"connection closed after {self._filled} of {len(self.body)} body bytes")
        raise ResponseError("connection closed in the middle of a chunked body")

    # -- parsing --------------------------------------------------------------------------

    def _parse(self) -> None:
        while True:
            state = self._state
            if state is _State.HEAD:
                if not self._parse_head():
                    return
            elif state is _State.LENGTH:
                self._take_length()
                return
            elif state is _State.UNTIL_CLOSE:
                self._append(self._pending)
                self._pending.clear()
                return
            elif state is _State.CHUNK_SIZE:
                if not self._parse_chunk_size():
                    return
            elif state is _State.CHUNK_DATA:
                if not self._pending:
                    return
                n = min(self._chunk_left, len(self._pending))
                self._append(memoryview(self._pending)[:n])
                del self._pending[:n]
                self._chunk_left -= n
                if self._chunk_left == 0:
                    self._state = _State.CHUNK_CRLF
            elif state is _State.CHUNK_CRLF:
                if len(self._pending) < 2:
                    return
                if self._pending[:2] != b"\r\n":
                    raise ResponseError("chunk data not followed by CRLF")
                del self._pending[:2]
                self._state = _State.CHUNK_SIZE
            elif state is _State.TRAILERS:
                if not self._parse_trailer():
                    return
            else:  # DONE with bytes left over
                if self._pending:
                    self.extra = True
                    self.keep_alive = False
                    self._pending.clear()
                return

    def _line(self, limit: int, what: str) -> bytes | None:
        end = self._pending.find(b"\r\n")
        if end < 0:
            if len(self._pending) > limit:
                raise ResponseError(f"{what} longer than {limit} bytes")
            return None
        if end > limit:
            raise ResponseError(f"{what} longer than {limit} bytes")
        line = bytes(self._pending[:end])
        del self._pending[: end + 2]
        return line

    def _parse_head(self) -> bool:
        end = self._pending.find(b"\r\n\r\n")
        if end < 0:
            if len(self._pending) > self.max_head:
                raise ResponseError(f"response head longer than {self.max_head} bytes")
            return False
        if end + 4 > self.max_head:
            raise ResponseError(f"response head longer than {self.max_head} bytes")
        block = bytes(self._pending[:end])
        del self._pending[: end + 4]
        head = parse_head(block)
        if 100 <= head.status < 200:
            if head.status == 101:
                raise ResponseError("unexpected 101 Switching Protocols")
            return True  # an interim answer (100 Continue): the real one follows
        self.head = head
        self._start_body(head)
        return True

    def _start_body(self, head: ResponseHead) -> None:
        connection = {t.strip().lower() for t in head.get("connection").split(",")}
        if head.version == "HTTP/1.1":
            self.keep_alive = "close" not in connection
        else:
            self.keep_alive = "keep-alive" in connection
        if self.method == "HEAD" or head.status in (204, 304):
            self._finish_empty()
            return
        encodings = [v for k, v in head.headers if k == "transfer-encoding"]
        if encodings:
            codings = [t.strip().lower() for v in encodings for t in v.split(",") if t.strip()]
            if codings != ["chunked"]:
                raise ResponseError(f"unsupported Transfer-Encoding {', '.join(encodings)!r}")
            if any(k == "content-length" for k, _ in head.headers):
                self.keep_alive = False  # both framings: chunked wins, the connection is suspect
            self._state = _State.CHUNK_SIZE
            return
        length = content_length(head)
        if length is None:
            self.keep_alive = False
            self._state = _State.UNTIL_CLOSE
            return
        if length > self.max_body:
            raise ResponseError(f"Content-Length {length} is more than the {self.max_body} bytes accepted")
        if length == 0:
            self._finish_empty()
            return
        self.body = self._alloc(length)
        if len(self.body) != length:
            raise ValueError(f"alloc({length}) returned {len(self.body)} bytes")
        self._filled = 0
        self._state = _State.LENGTH

    def _finish_empty(self) -> None:
        self._state = _State.DONE

    def _take_length(self) -> None:
        n = min(len(self.body) - self._filled, len(self._pending))
        self.body[self._filled : self._filled + n] = memoryview(self._pending)[:n]
        del self._pending[:n]
        self._filled += n
        if self._filled == len(self.body):
            self._state = _State.DONE
            if self._pending:
                self.extra = True
                self.keep_alive = False
                self._pending.clear()

    def _append(self, data: bytes | bytearray | memoryview) -> None:
        if len(self.body) + len(data) > self.max_body:
            raise ResponseError(f"body longer than the {self.max_body} bytes accepted")
        self.body += data

    def _parse_chunk_size(self) -> bool:
        line = self._line(MAX_CHUNK_LINE, "chunk-size line")
        if line is None:
            return False
        size_text = line.split(b";", 1)[0].strip()
        if not size_text or not all(c in b"0123456789abcdefABCDEF" for c in size_text) or len(size_text) > 16:
            raise ResponseError(f"bad chunk size {line[:40]!r}")
        size = int(size_text, 16)
        if len(self.body) + size > self.max_body:
            raise ResponseError(f"body longer than the {self.max_body} bytes accepted")
        if size == 0:
            self._state = _State.TRAILERS
        else:
            self._chunk_left = size
            self._state = _State.CHUNK_DATA
        return True

    def _parse_trailer(self) -> bool:
        line = self._line(MAX_CHUNK_LINE, "trailer line")
        if line is None:
            return False
        if line == b"":
            self._state = _State.DONE
        return True


def parse_head(block: bytes) -> ResponseHead:
    """Status line and headers (without the blank line that ends them)."""
    try:
        text = block.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise ResponseError("undecodable response head") from None
    lines = text.split("\r\n")
    status_line = lines[0]
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or parts[0] not in ("HTTP/1.1", "HTTP/1.0"):
        raise ResponseError(f"bad status line {status_line[:80]!r}")
    code = parts[1]
    if len(code) != 3 or not (code.isascii() and code.isdigit()):
        raise ResponseError(f"bad status code in {status_line[:80]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            raise ResponseError("obsolete header line folding")
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or any(c in name for c in " \t\n"):
            raise ResponseError(f"bad header line {line[:80]!r}")
        if "\n" in value or "\x00" in value:
            raise ResponseError(f"bad header value in {line[:80]!r}")
        headers.append((name.lower(), value.strip(" \t")))
    return ResponseHead(parts[0], int(code), parts[2] if len(parts) > 2 else "", headers)


def content_length(head: ResponseHead) -> int | None:
    """The announced body length, None when there is none; raises on a malformed or conflicting one."""
    values = {v.strip() for k, value in head.headers if k == "content-length" for v in value.split(",")}
    if not values:
        return None
    if len(values) > 1:
        raise ResponseError(f"conflicting Content-Length values {sorted(values)}")
    (value,) = values
    if not value.isdigit() or not value.isascii() or len(value) > 18:
        raise ResponseError(f"bad Content-Length {value[:40]!r}")
    return int(value)
