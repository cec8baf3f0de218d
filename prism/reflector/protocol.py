"""Sans-IO codec of the reflector upload protocol (reflector.md §4.3, lbry-wire.md §4).

Both directions exchange bare JSON objects with no delimiter; after a "send" answer the
client writes exactly the announced number of raw blob bytes. The two connection classes
here only turn bytes into events and events into bytes (in the style of h11): the asyncio
shells in `receiver.py` and `client.py` move the bytes.

* `ReceiverConnection` is the server side. It answers in reflector.go's compact form
  (`{"version":1}`, `{"send_sd_blob":false,"needed_blobs":[...]}`, ...).
* `ClientConnection` is the uploader. It writes lbry-sdk's form
  (`json.dumps(sort_keys=True)`: `{"blob_hash": "...", "blob_size": 16}`) and reads both
  server forms.

A JSON object is framed by scanning for the `}` that closes the outermost `{` (outside
strings), then decoding exactly that span, so an object split across reads is buffered and
bytes that follow an object (a pipelined request, the first blob bytes) are kept.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass

from prism.blob import MAX_BLOB_SIZE, BlobError, validate_hash, validate_size

SUPPORTED_VERSIONS = (0, 1)
"""Wire values: 0 is "reflector v1", 1 is "reflector v2" (adds the sd-blob step)."""

MAX_REQUEST_SIZE = 8192
"""Largest JSON request the receiver buffers (a real offer is under 200 bytes)."""

MAX_ANSWER_SIZE = 2_000_000
"""Largest JSON answer the client buffers (lbry-sdk's limit; bounds `needed_blobs`)."""

_WHITESPACE = b" \t\r\n"
# Outside a string only braces and quotes matter; inside one only quotes and backslashes.
_OUTSIDE = re.compile(rb'[{}"]')
_INSIDE = re.compile(rb'["\\]')


class ReflectorProtocolError(Exception):
    """The peer broke the protocol; `reason` says how. The connection must be closed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True)
class Handshake:
    """Client -> server: `{"version": V}`."""

    version: int


@dataclass(frozen=True, slots=True)
class BlobOffer:
    """Client -> server: an offer of one blob (`is_sd` for `sd_blob_hash`/`sd_blob_size`)."""

    blob_hash: str
    size: int
    is_sd: bool


@dataclass(frozen=True, slots=True)
class BlobData:
    """Raw bytes of the blob being received, in order (the shell may also read them itself)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class BlobComplete:
    """All announced bytes of the offered blob have arrived."""

    offer: BlobOffer


@dataclass(frozen=True, slots=True)
class VersionAnswer:
    """Server -> client: `{"version": V}`."""

    version: int


@dataclass(frozen=True, slots=True)
class OfferAnswer:
    """Server -> client: `send_blob` / `send_sd_blob` (with `needed_blobs` for an sd offer)."""

    send: bool
    is_sd: bool
    needed_blobs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReceivedAnswer:
    """Server -> client: `received_blob` / `received_sd_blob`."""

    received: bool
    is_sd: bool


class NeedData(enum.Enum):
    """Returned by `next_event` when more bytes must be fed first."""

    NEED_DATA = "need data"


NEED_DATA = NeedData.NEED_DATA


# ---------------------------------------------------------------------------------------
# JSON framing


class JsonObjectBuffer:
    """Accumulates bytes and cuts complete top-level JSON objects off the front.

    Scanning resumes where it stopped, so feeding an object byte by byte costs linear time.
    """

    def __init__(self, max_object_size: int) -> None:
        self.max_object_size = max_object_size
        self._buf = bytearray()
        self._pos = 0  # scan position inside the current object
        self._depth = 0
        self._in_string = False
        self._started = False

    def __len__(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    def take(self, n: int) -> bytes:
        """Remove and return up to `n` raw bytes from the front (only between objects)."""
        if self._started:
            raise RuntimeError("cannot take raw bytes in the middle of a JSON object")
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def next_object(self) -> dict | None:
        """The next complete JSON object, or None if more bytes are needed.

        Raises ReflectorProtocolError for anything that is not a JSON object or is too large.
        """
        buf = self._buf
        if not self._started:
            start = 0
            while start < len(buf) and buf[start] in _WHITESPACE:
                start += 1
            if start:
                del buf[:start]
            if not buf:
                return None
            if buf[0] != 0x7B:  # "{"
                raise ReflectorProtocolError(f"expected a JSON object, got bytes {bytes(buf[:16])!r}")
            self._started = True
            self._depth = 1
            self._pos = 1
            self._in_string = False
        end = self._scan()
        if end is None:
            if len(buf) > self.max_object_size:
                raise ReflectorProtocolError(
                    f"JSON message larger than {self.max_object_size} bytes without an end"
                )
            return None
        if end > self.max_object_size:
            raise ReflectorProtocolError(f"JSON message of {end} bytes exceeds {self.max_object_size}")
        raw = bytes(buf[:end])
        del buf[:end]
        self._started = False
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise ReflectorProtocolError(f"invalid JSON message {_preview(raw)}: {e}") from None
        if not isinstance(obj, dict):
            raise ReflectorProtocolError(f"expected a JSON object, got {_preview(raw)}")
        return obj

    def _scan(self) -> int | None:
        """Index just past the `}` closing the current object, or None if not buffered yet."""
        buf = self._buf
        pos = self._pos
        limit = min(len(buf), self.max_object_size + 1)
        while True:
            if self._in_string:
                m = _INSIDE.search(buf, pos, limit)
                if m is None:
                    self._pos = limit
                    return None
                if buf[m.start()] == 0x5C:  # backslash escapes the next byte
                    if m.start() + 1 >= limit:
                        self._pos = m.start()
                        return None
                    pos = m.start() + 2
                    continue
                self._in_string = False
                pos = m.start() + 1
                continue
            m = _OUTSIDE.search(buf, pos, limit)
            if m is None:
                self._pos = limit
                return None
            c = buf[m.start()]
            pos = m.start() + 1
            if c == 0x22:  # '"'
                self._in_string = True
            elif c == 0x7B:
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 0:
                    self._pos = pos
                    return pos


def _preview(raw: bytes, limit: int = 80) -> str:
    shown = repr(raw[:limit])
    return shown + ("..." if len(raw) > limit else "")


def compact(obj: dict) -> bytes:
    """reflector.go's form: Go encoding/json, no spaces."""
    return json.dumps(obj, separators=(",", ":")).encode()


def spaced(obj: dict) -> bytes:
    """lbry-sdk's client form: `json.dumps(sort_keys=True)` with default separators."""
    return json.dumps(obj, sort_keys=True).encode()


def _strict_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------
# Server side


class ReceiverState(enum.Enum):
    HANDSHAKE = "handshake"  # waiting for {"version": V}
    ANSWER_VERSION = "answer version"  # the shell must call send_version
    OFFER = "offer"  # waiting for a blob offer
    ANSWER_OFFER = "answer offer"  # the shell must call send_offer_answer
    BODY = "body"  # receiving blob bytes
    ANSWER_RECEIVED = "answer received"  # the shell must call send_received
    CLOSED = "closed"


class ReceiverConnection:
    """Server side of one reflector connection.

    Feed bytes with `receive_data`, pull events with `next_event`, and answer each event with
    the matching `send_*` method, which returns the bytes to write. During a blob body the
    shell may read bytes itself (into its own buffer) after draining `BlobData` events, and
    report them with `body_bytes_received`.
    """

    def __init__(self, max_request_size: int = MAX_REQUEST_SIZE) -> None:
        self._json = JsonObjectBuffer(max_request_size)
        self.state = ReceiverState.HANDSHAKE
        self.version: int | None = None
        self.offer: BlobOffer | None = None
        self.body_remaining = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet turned into events."""
        return len(self._json)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        if self.state is ReceiverState.CLOSED:
            return
        self._json.feed(data)

    def next_event(self) -> Handshake | BlobOffer | BlobData | BlobComplete | NeedData:
        """The next event, or NEED_DATA. Raises ReflectorProtocolError on bad input."""
        state = self.state
        if state is ReceiverState.BODY:
            if self.body_remaining == 0:
                assert self.offer is not None
                self.state = ReceiverState.ANSWER_RECEIVED
                return BlobComplete(self.offer)
            if not len(self._json):
                return NEED_DATA
            data = self._json.take(self.body_remaining)
            self.body_remaining -= len(data)
            return BlobData(data)
        if state is ReceiverState.HANDSHAKE:
            obj = self._next_object()
            if obj is None:
                return NEED_DATA
            event = parse_handshake(obj)
            self.state = ReceiverState.ANSWER_VERSION
            return event
        if state is ReceiverState.OFFER:
            obj = self._next_object()
            if obj is None:
                return NEED_DATA
            self.offer = parse_offer(obj)
            self.state = ReceiverState.ANSWER_OFFER
            return self.offer
        # Waiting for the shell to answer: nothing new comes out until it does.
        return NEED_DATA

    def _next_object(self) -> dict | None:
        try:
            return self._json.next_object()
        except ReflectorProtocolError:
            self.state = ReceiverState.CLOSED
            raise

    def body_bytes_received(self, n: int) -> None:
        """The shell read `n` body bytes itself (never more than `body_remaining`)."""
        if self.state is not ReceiverState.BODY or n > self.body_remaining or n < 0:
            raise RuntimeError(f"{n} body bytes reported in state {self.state.value}")
        self.body_remaining -= n

    def send_version(self, version: int) -> bytes:
        self._expect(ReceiverState.ANSWER_VERSION)
        self.version = version
        self.state = ReceiverState.OFFER
        return compact({"version": version})

    def send_offer_answer(self, send: bool, needed_blobs: list[str] | tuple[str, ...] = ()) -> bytes:
        """`{"send_sd_blob":..,"needed_blobs":[..]}` (needed omitted when empty) or `{"send_blob":..}`."""
        self._expect(ReceiverState.ANSWER_OFFER)
        offer = self.offer
        assert offer is not None
        if offer.is_sd:
            obj: dict = {"send_sd_blob": send}
            if needed_blobs:
                obj["needed_blobs"] = list(needed_blobs)
        else:
            if needed_blobs:
                raise ValueError("needed_blobs only answers an sd blob offer")
            obj = {"send_blob": send}
        if send:
            self.state = ReceiverState.BODY
            self.body_remaining = offer.size
        else:
            self.state = ReceiverState.OFFER
            self.offer = None
        return compact(obj)

    def send_received(self, received: bool) -> bytes:
        """`{"received_sd_blob":..}` / `{"received_blob":..}`; after False the connection is over."""
        if self.state not in (ReceiverState.ANSWER_RECEIVED, ReceiverState.BODY):
            raise RuntimeError(f"no blob is being received (state {self.state.value})")
        offer = self.offer
        assert offer is not None
        key = "received_sd_blob" if offer.is_sd else "received_blob"
        self.offer = None
        self.body_remaining = 0
        self.state = ReceiverState.OFFER if received else ReceiverState.CLOSED
        return compact({key: received})

    def close(self) -> None:
        self.state = ReceiverState.CLOSED

    def _expect(self, state: ReceiverState) -> None:
        if self.state is not state:
            raise RuntimeError(f"cannot answer now: state is {self.state.value}, not {state.value}")


def parse_handshake(obj: dict) -> Handshake:
    if "version" not in obj:
        raise ReflectorProtocolError("handshake is missing protocol version")
    version = obj["version"]
    if not _strict_int(version) or version not in SUPPORTED_VERSIONS:
        raise ReflectorProtocolError(f"protocol version not supported: {version!r}")
    return Handshake(version)


def parse_offer(obj: dict) -> BlobOffer:
    """A validated blob offer: 96-hex hash, integer size in 1..2097152."""
    if obj.get("sd_blob_hash"):
        is_sd, hash_key, size_key = True, "sd_blob_hash", "sd_blob_size"
    elif "blob_hash" in obj:
        is_sd, hash_key, size_key = False, "blob_hash", "blob_size"
    elif "sd_blob_hash" in obj:
        raise ReflectorProtocolError("blob hash is empty")
    else:
        raise ReflectorProtocolError(f"not a blob offer: keys {sorted(obj)[:8]}")
    try:
        blob_hash = validate_hash(obj[hash_key])
        if size_key not in obj:
            raise ReflectorProtocolError(f"offer is missing {size_key}")
        size = validate_size(obj[size_key])
    except BlobError as e:
        raise ReflectorProtocolError(str(e)) from None
    return BlobOffer(blob_hash, size, is_sd)


# ---------------------------------------------------------------------------------------
# Client side


class ClientState(enum.Enum):
    HANDSHAKE = "handshake"  # the shell must send the handshake
    AWAIT_VERSION = "await version"
    READY = "ready"  # the shell may offer a blob
    AWAIT_OFFER_ANSWER = "await offer answer"
    BODY = "body"  # the shell must write the blob bytes, then call body_sent
    AWAIT_RECEIVED = "await received"
    CLOSED = "closed"


class ClientConnection:
    """Client side of one reflector connection: lbry-sdk's request bytes, both answer forms."""

    def __init__(self, max_answer_size: int = MAX_ANSWER_SIZE) -> None:
        self._json = JsonObjectBuffer(max_answer_size)
        self.state = ClientState.HANDSHAKE
        self.offered_version: int | None = None
        self.version: int | None = None
        self.offer: BlobOffer | None = None

    def send_handshake(self, version: int = 1) -> bytes:
        self._expect(ClientState.HANDSHAKE)
        if version not in SUPPORTED_VERSIONS:
            raise ValueError(f"unsupported reflector version {version}")
        self.offered_version = version
        self.state = ClientState.AWAIT_VERSION
        return spaced({"version": version})

    def send_offer(self, blob_hash: str, size: int, *, is_sd: bool = False) -> bytes:
        self._expect(ClientState.READY)
        validate_hash(blob_hash)
        validate_size(size)
        self.offer = BlobOffer(blob_hash, size, is_sd)
        self.state = ClientState.AWAIT_OFFER_ANSWER
        if is_sd:
            return spaced({"sd_blob_hash": blob_hash, "sd_blob_size": size})
        return spaced({"blob_hash": blob_hash, "blob_size": size})

    def body_sent(self) -> None:
        """The shell wrote the offered blob's bytes."""
        self._expect(ClientState.BODY)
        self.state = ClientState.AWAIT_RECEIVED

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self._json.feed(data)

    def next_event(self) -> VersionAnswer | OfferAnswer | ReceivedAnswer | NeedData:
        state = self.state
        if state not in (
            ClientState.AWAIT_VERSION,
            ClientState.AWAIT_OFFER_ANSWER,
            ClientState.AWAIT_RECEIVED,
        ):
            if len(self._json) and state is not ClientState.CLOSED:
                self.state = ClientState.CLOSED
                raise ReflectorProtocolError(f"server sent unexpected bytes in state {state.value}")
            return NEED_DATA
        try:
            obj = self._json.next_object()
        except ReflectorProtocolError:
            self.state = ClientState.CLOSED
            raise
        if obj is None:
            return NEED_DATA
        try:
            if state is ClientState.AWAIT_VERSION:
                return self._version_answer(obj)
            if state is ClientState.AWAIT_OFFER_ANSWER:
                return self._offer_answer(obj)
            return self._received_answer(obj)
        except ReflectorProtocolError:
            self.state = ClientState.CLOSED
            raise

    def _version_answer(self, obj: dict) -> VersionAnswer:
        version = obj.get("version")
        if not _strict_int(version) or version not in SUPPORTED_VERSIONS:
            raise ReflectorProtocolError(f"bad handshake answer {obj!r}")
        self.version = version
        self.state = ClientState.READY
        return VersionAnswer(version)

    def _offer_answer(self, obj: dict) -> OfferAnswer:
        offer = self.offer
        assert offer is not None
        key = "send_sd_blob" if offer.is_sd else "send_blob"
        send = obj.get(key)
        if not isinstance(send, bool):
            raise ReflectorProtocolError(f"expected {key!r} in answer, got {_short(obj)}")
        needed: tuple[str, ...] = ()
        if offer.is_sd:
            raw = obj.get("needed_blobs")
            if raw is None:
                raw = []
            if not isinstance(raw, list):
                raise ReflectorProtocolError(f"needed_blobs is not a list: {_short(obj)}")
            try:
                needed = tuple(validate_hash(h) for h in raw)
            except BlobError as e:
                raise ReflectorProtocolError(f"bad hash in needed_blobs: {e}") from None
        self.state = ClientState.BODY if send else ClientState.READY
        if not send:
            self.offer = None
        return OfferAnswer(send, offer.is_sd, needed)

    def _received_answer(self, obj: dict) -> ReceivedAnswer:
        offer = self.offer
        assert offer is not None
        key = "received_sd_blob" if offer.is_sd else "received_blob"
        received = obj.get(key)
        if not isinstance(received, bool):
            raise ReflectorProtocolError(f"expected {key!r} in answer, got {_short(obj)}")
        self.offer = None
        self.state = ClientState.READY
        return ReceivedAnswer(received, offer.is_sd)

    def _expect(self, state: ClientState) -> None:
        if self.state is not state:
            raise RuntimeError(f"cannot do that now: state is {self.state.value}, not {state.value}")


def _short(obj: dict) -> str:
    text = json.dumps(obj)
    return text if len(text) <= 120 else text[:117] + "..."


__all__ = [
    "MAX_ANSWER_SIZE",
    "MAX_BLOB_SIZE",
    "MAX_REQUEST_SIZE",
    "NEED_DATA",
    "SUPPORTED_VERSIONS",
    "BlobComplete",
    "BlobData",
    "BlobOffer",
    "ClientConnection",
    "ClientState",
    "Handshake",
    "JsonObjectBuffer",
    "OfferAnswer",
    "ReceivedAnswer",
    "ReceiverConnection",
    "ReceiverState",
    "ReflectorProtocolError",
    "VersionAnswer",
    "compact",
    "parse_handshake",
    "parse_offer",
    "spaced",
]
