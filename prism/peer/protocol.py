"""Sans-IO codec of the LBRY peer protocol (blob download over TCP).

Requests and response headers are bare JSON objects with no delimiter (reflector.md §4.1);
a response header announcing a blob is followed directly by the raw blob bytes. Nothing here
touches a socket: the server and client shells feed received bytes in and write out the bytes
this module returns, h11 style. Every malformed input raises `PeerProtocolError` and nothing
else, so a shell can close just the offending connection with the error's reason; a shell that
calls the codec out of turn gets `PeerLocalError`. JSON objects are framed by
`prism.jsonframe.JsonFramer`, shared with the reflector codec.

Differences from reflector.go, on purpose (docs/peer-protocol.md has the full list):

* The request size limit is 64 KiB. reflector.go writes `64 * (2 ^ 10)`, which in Go is XOR
  and gives 512 bytes, so it drops availability queries for more than a few hashes.
* The end of a JSON object is found by tracking nesting outside strings (linear in the input)
  instead of re-parsing the whole buffer at every `}`; for well-formed JSON the split point is
  the same. A balanced object that is not valid JSON is rejected at once instead of waiting for
  more bytes that could never make it valid.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from prism.blob import MAX_BLOB_SIZE, is_valid_hash
from prism.jsonframe import NEED_DATA as NEED_DATA
from prism.jsonframe import BlobData as BlobData
from prism.jsonframe import JsonFramer, loads_object
from prism.jsonframe import NeedData as NeedData

MAX_REQUEST_SIZE = 64 * 1024
"""Largest request accepted, in bytes (reflector.go intended this; it enforces 512 by a bug)."""

MAX_HEADER_SIZE = 64 * 1024
"""Largest response header the client accepts (a many-hash availability answer can be long)."""

GO_HEADER_LIMIT = 512
"""reflector.go's client reads a response header with this limit: single-blob answers stay below."""

MAX_NESTING = 16
"""Deeper JSON is never a valid peer message; refusing it early keeps json.loads off deep recursion."""

LBRYCRD_ADDRESS = "bJxKvpD96kaJLriqVajZ7SaQTsWWyrGQct"
"""The payment address reflector.go hard-codes in every answer (payments are a stub)."""

RATE_ACCEPTED = "RATE_ACCEPTED"
RATE_TOO_LOW = "RATE_TOO_LOW"
RATE_UNSET = "RATE_UNSET"

BLOB_NOT_FOUND = "blob not found"


class PeerProtocolError(ValueError):
    """Bytes that are not a valid peer-protocol message; `reason` says why, for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PeerLocalError(RuntimeError):
    """The local caller used the codec wrongly (h11's LocalProtocolError): a bug here, not the peer's."""


def _framer(max_size: int, what: str) -> JsonFramer:
    return JsonFramer(max_size, what, PeerProtocolError, max_nesting=MAX_NESTING)


def _loads_object(raw: bytes, what: str) -> dict[str, object]:
    return loads_object(raw, what, PeerProtocolError)


# --- requests ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlobRequest:
    """One composite request; every part is optional (None = key absent)."""

    requested_blobs: tuple[str, ...] | None = None
    lbrycrd_address: bool | None = None
    blob_data_payment_rate: float | None = None
    requested_blob: str | None = None

    @property
    def is_plain_download(self) -> bool:
        """The shape lbry-sdk's client sends: availability of exactly the blob it downloads."""
        blobs = self.requested_blobs
        return blobs is not None and len(blobs) == 1 and blobs[0] == self.requested_blob


def decode_request(raw: bytes) -> BlobRequest:
    """Decode one complete request object (keys as reflector.go reads them; unknown keys ignored)."""
    return _request_from_object(_loads_object(raw, "request"))


def _request_from_object(obj: dict[str, object]) -> BlobRequest:
    blobs = obj.get("requested_blobs")
    if blobs is not None:
        if not isinstance(blobs, list):
            raise PeerProtocolError("invalid request: requested_blobs is not a list")
        for h in blobs:
            if not is_valid_hash(h):
                raise PeerProtocolError(f"invalid blob hash in requested_blobs: {_short(h)}")
        blobs = tuple(blobs)
    address = obj.get("lbrycrd_address")
    if address is not None and not isinstance(address, bool):
        raise PeerProtocolError("invalid request: lbrycrd_address is not a boolean")
    rate = _payment_rate(obj.get("blob_data_payment_rate"))
    blob = obj.get("requested_blob")
    if blob is not None:
        if not isinstance(blob, str):
            raise PeerProtocolError("invalid request: requested_blob is not a string")
        if blob == "":
            blob = None  # reflector.go treats an empty hash as "no download requested"
        elif not is_valid_hash(blob):
            raise PeerProtocolError(f"invalid blob hash in requested_blob: {_short(blob)}")
    return BlobRequest(blobs, address, rate, blob)


def _payment_rate(value: object) -> float | None:
    """The offered rate as a float; a number no float64 holds is refused, as Go's json refuses it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PeerProtocolError("invalid request: blob_data_payment_rate is not a number")
    try:
        rate = float(value)
    except OverflowError:
        rate = math.inf
    if not math.isfinite(rate):  # json reads 1e400 as inf
        raise PeerProtocolError("invalid request: blob_data_payment_rate is out of range")
    return rate


class RequestParser:
    """Incremental request parser for one connection (server side).

    Feed bytes with `receive_data`; call `next_request` until it returns None (more bytes
    needed). Requests may arrive split across reads or several in one read. Each request must
    start with `{` exactly where the previous one ended (no whitespace between, as in
    reflector.go). After a PeerProtocolError the parser is dead and keeps raising it.
    """

    __slots__ = ("_error", "_framer")

    def __init__(self, max_request_size: int = MAX_REQUEST_SIZE) -> None:
        self._framer = _framer(max_request_size, "request")
        self._error: PeerProtocolError | None = None

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self._framer.feed(data)

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as a request."""
        return len(self._framer)

    def next_request(self) -> BlobRequest | None:
        if self._error is not None:
            raise self._error
        try:
            obj = self._framer.next_object()
            return None if obj is None else _request_from_object(obj)
        except PeerProtocolError as e:
            self._error = e
            raise

    def check_eof(self) -> None:
        """Call when the peer closed: raises if it stopped in the middle of a request."""
        if self._framer.buffer:
            raise PeerProtocolError(f"connection closed in the middle of a request ({self.buffered} bytes)")


def encode_request(blob_hash: str) -> bytes:
    """lbry-sdk's download request, byte for byte (lbry-wire.md §3.1; 295 bytes for one hash)."""
    return json.dumps(
        {
            "requested_blobs": [blob_hash],
            "lbrycrd_address": True,
            "blob_data_payment_rate": 0.0,
            "requested_blob": blob_hash,
        }
    ).encode()


def encode_availability_request(blob_hashes: Sequence[str]) -> bytes:
    """lbry-sdk's availability sub-request on its own (both lbry-sdk and reflector.go answer it)."""
    return json.dumps({"requested_blobs": list(blob_hashes), "lbrycrd_address": True}).encode()


# --- responses -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IncomingBlob:
    """The `incoming_blob` part of a response. `error` set means no bytes follow."""

    blob_hash: str
    length: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class BlobResponse:
    """One response header; `incoming_blob.length` raw bytes follow it when there is no error."""

    lbrycrd_address: str | None = None
    available_blobs: tuple[str, ...] | None = None
    blob_data_payment_rate: str | None = None
    incoming_blob: IncomingBlob | None = None

    @property
    def body_length(self) -> int:
        """Number of raw blob bytes that follow this header."""
        ib = self.incoming_blob
        if ib is None or ib.error is not None:
            return 0
        return ib.length


def rate_answer(offered: float) -> str:
    """reflector.go's price answer: any non-negative rate is accepted."""
    return RATE_ACCEPTED if offered >= 0 else RATE_TOO_LOW


def _go_string(s: str) -> str:
    # Go's encoding/json writes UTF-8 as is but escapes <, >, & and U+2028/U+2029.
    return (
        json.dumps(s, ensure_ascii=False)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


_HEAD = b'{"lbrycrd_address":"' + LBRYCRD_ADDRESS.encode() + b'","available_blobs":['
_RATE_KEY = b'],"blob_data_payment_rate":"'
_NO_RATE = b"]"
_INCOMING_FOUND = b',"incoming_blob":{"blob_hash":"'
_LENGTH = b'","length":'
_TAIL = b"}}"
_INCOMING_NOT_FOUND = b',"incoming_blob":{"error":"blob not found","blob_hash":"","length":0}}'
_RATES = {RATE_ACCEPTED: RATE_ACCEPTED.encode(), RATE_TOO_LOW: RATE_TOO_LOW.encode()}
# lbry-sdk's plain download, found: everything but the two hashes and the length is constant.
_PLAIN_FOUND_MID = _RATE_KEY + b'RATE_ACCEPTED"' + _INCOMING_FOUND


def encode_found_header(blob_hash: str, length: int) -> bytes:
    """Header answering lbry-sdk's plain download request for a blob we have (the hot path)."""
    h = blob_hash.encode()
    return b"".join((_HEAD, b'"', h, b'"', _PLAIN_FOUND_MID, h, _LENGTH, str(length).encode(), _TAIL))


def encode_response(
    available_blobs: Sequence[str],
    payment_rate: str | None = None,
    incoming_blob: IncomingBlob | None = None,
) -> bytes:
    """A response header exactly as reflector.go (Classic) writes it (reflector.md §4.2).

    Key order lbrycrd_address, available_blobs (always present), blob_data_payment_rate (only
    when asked), incoming_blob (only when a blob was requested); compact separators. A missing
    blob is `{"error":"blob not found","blob_hash":"","length":0}`.
    """
    parts = [_HEAD]
    if available_blobs:
        parts.append(b'"' + b'","'.join(h.encode() for h in available_blobs) + b'"')
    if payment_rate is not None:
        parts += (_RATE_KEY, _RATES.get(payment_rate) or payment_rate.encode(), b'"')
    else:
        parts.append(_NO_RATE)
    if incoming_blob is None:
        parts.append(b"}")
    elif incoming_blob.error is None:
        parts += (
            _INCOMING_FOUND,
            incoming_blob.blob_hash.encode(),
            _LENGTH,
            str(incoming_blob.length).encode(),
        )
        parts.append(_TAIL)
    elif incoming_blob.error == BLOB_NOT_FOUND and not incoming_blob.blob_hash and not incoming_blob.length:
        parts.append(_INCOMING_NOT_FOUND)
    else:
        inner = f'"error":{_go_string(incoming_blob.error)},' if incoming_blob.error else ""
        inner += f'"blob_hash":{_go_string(incoming_blob.blob_hash)},"length":{incoming_blob.length}'
        parts.append(b',"incoming_blob":{' + inner.encode() + b"}}")
    return b"".join(parts)


def decode_response(raw: bytes) -> BlobResponse:
    """Decode one complete response header, in lbry-sdk's or reflector.go's form (any key order)."""
    return _response_from_object(_loads_object(raw, "response"))


def _response_from_object(obj: dict[str, object]) -> BlobResponse:
    address = obj.get("lbrycrd_address")
    if address is not None and not isinstance(address, str):
        raise PeerProtocolError("invalid response: lbrycrd_address is not a string")
    available = obj.get("available_blobs")
    if available is not None:
        if not isinstance(available, list) or not all(isinstance(h, str) for h in available):
            raise PeerProtocolError("invalid response: available_blobs is not a list of strings")
        available = tuple(available)
    rate = obj.get("blob_data_payment_rate")
    if rate is not None and not isinstance(rate, str):
        raise PeerProtocolError("invalid response: blob_data_payment_rate is not a string")
    incoming = obj.get("incoming_blob")
    return BlobResponse(address, available, rate, None if incoming is None else _decode_incoming(incoming))


def _decode_incoming(value: object) -> IncomingBlob:
    if not isinstance(value, dict):
        raise PeerProtocolError("invalid response: incoming_blob is not an object")
    error = value.get("error")
    if error is not None and not isinstance(error, str):
        error = str(error)
    blob_hash = value.get("blob_hash", "")
    length = value.get("length", 0)
    if not isinstance(blob_hash, str):
        raise PeerProtocolError("invalid response: incoming_blob.blob_hash is not a string")
    if isinstance(length, bool) or not isinstance(length, int):
        raise PeerProtocolError("invalid response: incoming_blob.length is not an integer")
    if error:
        return IncomingBlob(blob_hash, length, error)
    if not 0 < length <= MAX_BLOB_SIZE:
        raise PeerProtocolError(f"invalid response: incoming blob length {length} outside 1..{MAX_BLOB_SIZE}")
    return IncomingBlob(blob_hash, length, None)


@dataclass(frozen=True, slots=True)
class BlobComplete:
    """Every announced byte of `incoming` has arrived; the next bytes are a response header."""

    incoming: IncomingBlob


class ResponseParser:
    """Incremental response parser for one connection (client side), h11 style.

    Feed bytes with `receive_data` and pull events with `next_event`: a `BlobResponse` header;
    when it announces a blob, `BlobData` events with the bytes that came with it and then
    `BlobComplete`. A shell that reads the body into its own buffer drains the `BlobData`
    events, reads `body_remaining` bytes itself and reports them with `body_bytes_received`.
    """

    __slots__ = ("_framer", "_incoming", "body_remaining")

    def __init__(self, max_header_size: int = MAX_HEADER_SIZE) -> None:
        self._framer = _framer(max_header_size, "response")
        self._incoming: IncomingBlob | None = None  # the blob whose body is being received
        self.body_remaining = 0

    @property
    def in_body(self) -> bool:
        """Whether the bytes expected next belong to a blob body (up to its `BlobComplete`)."""
        return self._incoming is not None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned in an event."""
        return len(self._framer)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self._framer.feed(data)

    def next_event(self) -> BlobResponse | BlobData | BlobComplete | NeedData:
        """The next event, or NEED_DATA. Raises PeerProtocolError on a malformed header."""
        incoming = self._incoming
        if incoming is not None:
            if self.body_remaining == 0:
                self._incoming = None
                return BlobComplete(incoming)
            if not self._framer.buffer:
                return NEED_DATA
            data = self._framer.take(self.body_remaining)
            self.body_remaining -= len(data)
            return BlobData(data)
        obj = self._framer.next_object()
        if obj is None:
            return NEED_DATA
        response = _response_from_object(obj)
        if response.body_length:
            self._incoming = response.incoming_blob
            self.body_remaining = response.body_length
        return response

    def body_bytes_received(self, n: int) -> None:
        """The shell read `n` body bytes itself, after draining the `BlobData` events."""
        if self._incoming is None or self._framer.buffer or not 0 <= n <= self.body_remaining:
            raise PeerLocalError(
                f"{n} body bytes reported with {self.body_remaining} expected and {self.buffered} buffered"
            )
        self.body_remaining -= n


def _short(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 110 else shown[:107] + "..."
