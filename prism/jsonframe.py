"""Sans-IO pieces shared by the peer and reflector codecs: the JSON object framer, NEED_DATA, BlobData.

Both protocols send bare JSON objects with no delimiter, sometimes followed by raw blob bytes.
`JsonFramer` cuts one object at a time off the front of a growing buffer and keeps whatever
follows it (a pipelined request, the first bytes of a blob body) for the caller to take.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

_OPEN_BRACE = 0x7B  # {
_QUOTE = 0x22
_BACKSLASH = 0x5C
_OPENERS = (0x7B, 0x5B)  # { [
_WHITESPACE = b" \t\r\n"
# Outside a string only brackets and quotes matter; inside one only quotes and backslashes.
_STRUCTURAL = re.compile(rb'[{}\[\]"]')
_IN_STRING = re.compile(rb'["\\]')


class NeedData(enum.Enum):
    """Returned by a codec's `next_event` when more bytes must be fed first (h11's NEED_DATA)."""

    NEED_DATA = "need data"


NEED_DATA = NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class BlobData:
    """Raw bytes of the blob being received, in order (a shell may also read them itself)."""

    data: bytes


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


class JsonFramer:
    """Accumulates bytes and cuts complete top-level JSON objects off the front, incrementally.

    The end of an object is found by tracking bracket depth outside strings, resuming where the
    last scan stopped, so an object that trickles in byte by byte costs linear time in total;
    for well-formed JSON the split point is the one a full parser would find. Errors (not an
    object, too large, too deep, invalid JSON or UTF-8) are raised as `error(reason)`, the
    codec's own remote-error type; after one the framer is dead and raises it again.

    `skip_whitespace` drops whitespace between objects (otherwise an object must start exactly
    where the previous one ended); `max_nesting` bounds the bracket depth; `allow_constants`
    accepts NaN and Infinity as Python's json does.
    """

    __slots__ = (
        "_depth",
        "_error",
        "_escape",
        "_in_string",
        "_make_error",
        "_scan_pos",
        "allow_constants",
        "buffer",
        "max_nesting",
        "max_size",
        "skip_whitespace",
        "what",
    )

    def __init__(
        self,
        max_size: int,
        what: str,
        error: Callable[[str], Exception],
        *,
        skip_whitespace: bool = False,
        max_nesting: int | None = None,
        allow_constants: bool = False,
    ) -> None:
        self.buffer = bytearray()
        self.max_size = max_size
        self.what = what
        self.skip_whitespace = skip_whitespace
        self.max_nesting = max_nesting
        self.allow_constants = allow_constants
        self._make_error = error
        self._error: Exception | None = None
        self._scan_pos = 0
        self._depth = 0
        self._in_string = False
        self._escape = False

    def __len__(self) -> int:
        return len(self.buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self.buffer += data

    def take(self, n: int) -> bytes:
        """Remove and return up to `n` raw bytes from the front (between objects only)."""
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out

    def next_object(self) -> dict[str, object] | None:
        """The next complete JSON object, or None if more bytes are needed."""
        if self._error is not None:
            raise self._error
        try:
            return self._next_object()
        except Exception as e:
            self._error = e
            raise

    def _next_object(self) -> dict[str, object] | None:
        buf = self.buffer
        if self.skip_whitespace and self._scan_pos == 0:
            start = 0
            while start < len(buf) and buf[start] in _WHITESPACE:
                start += 1
            del buf[:start]
        if not buf:
            return None
        if buf[0] != _OPEN_BRACE:
            raise self._make_error(
                f"expected a JSON object: {self.what} must start with '{{', got {bytes(buf[:16])!r}"
            )
        # Fast path: the buffer is exactly one whole object (the usual case, one message per read).
        if self._scan_pos == 0 and buf[-1] == 0x7D and len(buf) <= self.max_size:
            value = self._try_whole(buf)
            if value is not None:
                buf.clear()
                return value
        end = self._scan(buf)
        if end < 0:
            if len(buf) > self.max_size:
                raise self._make_error(f"{self.what} is too large: larger than {self.max_size} bytes")
            return None
        if end > self.max_size:
            raise self._make_error(f"{self.what} is too large: larger than {self.max_size} bytes ({end})")
        raw = bytes(buf[:end])
        del buf[:end]
        return loads_object(raw, self.what, self._make_error, allow_constants=self.allow_constants)

    def _try_whole(self, buf: bytearray) -> dict[str, object] | None:
        try:
            value = _loads(buf, self.allow_constants)
        except (UnicodeDecodeError, ValueError, RecursionError):
            return None  # not exactly one valid object: the scan below finds out what it is
        return value if isinstance(value, dict) else None

    def _scan(self, buf: bytearray) -> int:
        """End offset (exclusive) of the first object in `buf`, or -1 when it is not complete yet."""
        pos, depth, in_string, escape = self._scan_pos, self._depth, self._in_string, self._escape
        size = min(len(buf), self.max_size + 1)
        while pos < size:
            if escape:  # the byte after a backslash inside a string, whatever it is
                escape = False
                pos += 1
                continue
            m = (_IN_STRING if in_string else _STRUCTURAL).search(buf, pos, size)
            if m is None:
                pos = size
                break
            pos = m.end()
            c = buf[pos - 1]
            if in_string:
                escape = c == _BACKSLASH
                in_string = escape
            elif c == _QUOTE:
                in_string = True
            elif c in _OPENERS:
                depth += 1
                if self.max_nesting is not None and depth > self.max_nesting:
                    raise self._make_error(f"{self.what} nests deeper than {self.max_nesting} levels")
            else:
                depth -= 1
                if depth <= 0:
                    self._reset()
                    return pos
        self._scan_pos, self._depth, self._in_string, self._escape = pos, depth, in_string, escape
        return -1

    def _reset(self) -> None:
        self._scan_pos = 0
        self._depth = 0
        self._in_string = False
        self._escape = False


def _loads(raw: bytes | bytearray, allow_constants: bool) -> object:
    text = raw.decode("utf-8")
    if allow_constants:
        return json.loads(text)
    return json.loads(text, parse_constant=_reject_constant)


def loads_object(
    raw: bytes | bytearray,
    what: str,
    error: Callable[[str], Exception],
    *,
    allow_constants: bool = False,
) -> dict[str, object]:
    """Decode one complete JSON object (strict UTF-8); anything else raises `error(reason)`."""
    try:
        value = _loads(raw, allow_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise error(f"invalid json {what} {_preview(raw)}: {e}") from None
    if not isinstance(value, dict):
        raise error(f"expected a JSON object: {what} is {_preview(raw)}")
    return value


def _preview(raw: bytes | bytearray, limit: int = 80) -> str:
    shown = repr(bytes(raw[:limit]))
    return shown + ("..." if len(raw) > limit else "")
