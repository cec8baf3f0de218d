"""A small sans-IO HTTP/1.1 request codec for the blob server (GET and HEAD only).

Bytes go in with `feed`, complete requests come out; responses are rendered to header
bytes so the shell can follow them with `sendfile` or a plain write. Only what a blob
server needs: no request bodies (a request announcing one is refused), no chunked input.

Lines may end with a bare LF as well as CRLF: nginx accepts that, and RFC 9112 §2.2 allows it
(a bare CR anywhere in the head is refused with 400). Every malformed input raises
`HttpParseError` and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import parse_qsl

MAX_HEAD_SIZE = 16 * 1024
"""Largest request line plus headers we accept."""

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_MAX_NUMBER_DIGITS = 19
"""A decimal with more significant digits is beyond any blob size (and int() refuses 4,300+ digits)."""
_HUGE = 1 << 63

REASONS = {
    200: "OK",
    204: "No Content",
    206: "Partial Content",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Payload Too Large",
    416: "Range Not Satisfiable",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class HttpParseError(ValueError):
    """The client sent something that is not a request we serve; `status` is the answer to give."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Lower-cased names; repeated headers are joined with ", "."""
    keep_alive: bool


class RequestParser:
    """Feed bytes, get `Request`s. Raises HttpParseError on malformed input."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> list[Request]:
        if not self._buf:
            # The common case, one whole CRLF head in one read, its blank line the first: parsed
            # without buffering it first, and found with `find` (the regex costs 4x as much).
            chunk = bytes(data)
            end = len(chunk) - 4
            if (
                0 <= end <= MAX_HEAD_SIZE
                and chunk.find(b"\n\r\n") == end + 1
                and chunk[end] == 13  # "\r"
                and b"\n\n" not in chunk
            ):
                return [parse_head(chunk[:end])]
            data = chunk
        self._buf += data
        out: list[Request] = []
        while True:
            m = _HEAD_END.search(self._buf)
            if m is None:
                if len(self._buf) > MAX_HEAD_SIZE:
                    raise HttpParseError(431, "request head too large")
                return out
            if m.start() > MAX_HEAD_SIZE:
                raise HttpParseError(431, "request head too large")
            head = bytes(self._buf[: m.start()])
            del self._buf[: m.end()]
            out.append(parse_head(head))

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a complete request."""
        return len(self._buf)


def decimal(text: str) -> int | None:
    """The value of a string of ASCII digits (capped at 2**63: no blob is that large), else None.

    `str.isdigit` alone accepts "²" and other Unicode digits that `int` then refuses.
    """
    if not text.isascii() or not text.isdigit():
        return None
    significant = text.lstrip("0")
    return _HUGE if len(significant) > _MAX_NUMBER_DIGITS else int(significant or "0")


def parse_head(head: bytes) -> Request:
    """One request line and its headers (without the blank line), CRLF or bare-LF separated."""
    text = head.decode("latin-1").replace("\r\n", "\n")
    if "\r" in text:
        raise HttpParseError(400, "bare CR in request head")
    lines = text.split("\n")
    # Tolerate leading empty lines (RFC 9112 §2.2).
    while lines and not lines[0]:
        lines.pop(0)
    if not lines:
        raise HttpParseError(400, "empty request")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise HttpParseError(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        if version.startswith("HTTP/"):
            raise HttpParseError(505, "unsupported HTTP version")
        raise HttpParseError(400, "malformed request line")
    if not method.isalpha() or not method.isupper():
        raise HttpParseError(400, "malformed method")
    if not target.startswith("/"):
        raise HttpParseError(400, "request target must be an absolute path")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or " " in name:
            raise HttpParseError(400, "malformed header line")
        key = name.lower()
        value = value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if "transfer-encoding" in headers:
        raise HttpParseError(400, "request bodies are not accepted")
    if "content-length" in headers:
        length = decimal(headers["content-length"])
        if length is None:
            raise HttpParseError(400, "bad Content-Length")
        if length != 0:
            raise HttpParseError(413, "request bodies are not accepted")
    conn = headers.get("connection", "").lower()
    if version == "HTTP/1.1":
        keep_alive = "close" not in conn
    else:
        keep_alive = "keep-alive" in conn
    path, _, qs = target.partition("?")
    return Request(method, target, path, parse_query(qs), headers, keep_alive)


def parse_query(qs: str) -> dict[str, str]:
    """The fields of a query string (the last of repeated names wins), as `parse_qsl` reads them."""
    if not qs:
        return {}
    if "%" in qs or "+" in qs:
        return dict(parse_qsl(qs, keep_blank_values=True))
    # Nothing to decode (every blob request): what parse_qsl gives, without its per-field work.
    fields = {}
    for field in qs.split("&"):
        if field:
            name, _, value = field.partition("=")
            fields[name] = value
    return fields


def render_head(status: int, headers: list[tuple[str, str]], keep_alive: bool, date: str) -> bytes:
    """Status line and headers (with `date` as Date, and Connection), ending with the blank line."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}", f"Date: {date}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def http_date(unix_seconds: int) -> str:
    """The IMF-fixdate (RFC 9110 §5.6.7) of a Unix time."""
    return formatdate(unix_seconds, usegmt=True)


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """A single `bytes=` range as (start, end_inclusive), None if unsatisfiable.

    Raises ValueError when the header is not a single byte range we understand (the
    caller then ignores it and sends the whole blob, as RFC 9110 allows).
    """
    unit, sep, spec = value.partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        raise ValueError("unsupported Range")
    first, dash, last = spec.strip().partition("-")
    if not dash:
        raise ValueError("malformed Range")
    if first == "":
        n = decimal(last)
        if n is None:
            raise ValueError("malformed Range")
        if n == 0:
            return None
        return max(0, size - n), size - 1
    start = decimal(first)
    end = decimal(last) if last else size - 1
    if start is None or end is None:
        raise ValueError("malformed Range")
    if start >= size:
        return None
    if end < start:
        raise ValueError("malformed Range")
    return start, min(end, size - 1)


IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass(frozen=True, slots=True)
class BlobResponse:
    """How to answer a GET of a blob: status and headers, then `count` bytes of it from `start`."""

    status: int
    headers: list[tuple[str, str]]
    start: int
    count: int


def plan_blob_response(headers: dict[str, str], size: int, blob_hash: str, via: str) -> BlobResponse:
    """The answer to a GET of a blob of `size` bytes given the request `headers` (lower-cased).

    `If-None-Match` naming the hash (or `*`) gives 304; a satisfiable single `bytes=` Range gives
    206, an unsatisfiable one 416; a Range we do not understand is ignored (RFC 9110 allows it).
    """
    base = [
        ("Content-Type", "application/octet-stream"),
        ("Content-Disposition", f"filename={blob_hash}"),
        ("ETag", f'"{blob_hash}"'),
        ("Cache-Control", IMMUTABLE),
        ("Accept-Ranges", "bytes"),
        ("Via", via),
    ]
    inm = headers.get("if-none-match")
    if inm is not None and (blob_hash in inm or inm.strip() == "*"):
        return BlobResponse(304, base[2:], 0, 0)
    status, start, count = 200, 0, size
    rng = headers.get("range")
    if rng is not None:
        try:
            span = parse_range(rng, size)
        except ValueError:
            span = (0, size - 1)  # not a range we understand: send it all
        if span is None:
            return BlobResponse(416, [("Content-Range", f"bytes */{size}"), ("Content-Length", "0")], 0, 0)
        if span != (0, size - 1):
            status, start, count = 206, span[0], span[1] - span[0] + 1
            base.append(("Content-Range", f"bytes {span[0]}-{span[1]}/{size}"))
    base.append(("Content-Length", str(count)))
    return BlobResponse(status, base, start, count)
