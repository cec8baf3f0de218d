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

JSON objects are framed by `prism.jsonframe.JsonFramer` (shared with the peer codec), so an
object split across reads is buffered and bytes that follow an object (a pipelined request,
the first blob bytes) are kept. Bad bytes from the other side raise ReflectorProtocolError;
calling the codec out of turn raises ReflectorLocalError.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass

from prism.blob import MAX_BLOB_SIZE, BlobError, validate_hash, validate_size
from prism.jsonframe import NEED_DATA, BlobData, JsonFramer, NeedData

SUPPORTED_VERSIONS = (0, 1)
"""Wire values: 0 is "reflector v1", 1 is "reflector v2" (adds the sd-blob step)."""

MAX_REQUEST_SIZE = 8192
"""Largest JSON request the receiver buffers (a real offer is under 200 bytes)."""

MAX_ANSWER_SIZE = 2_000_000
"""Largest JSON answer the client buffers (lbry-sdk's limit; bounds `needed_blobs`)."""


class ReflectorProtocolError(Exception):
    """The peer broke the protocol; `reason` says how. The connection must be closed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ReflectorLocalError(RuntimeError):
    """The local caller used the codec wrongly (h11's LocalProtocolError): a bug here, not the peer's."""


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


def _framer(max_size: int, what: str) -> JsonFramer:
    # Whitespace between objects and NaN are tolerated, as lbry-sdk's json.loads-based server does.
    return JsonFramer(max_size, what, ReflectorProtocolError, skip_whitespace=True, allow_constants=True)


def compact(obj: dict[str, object]) -> bytes:
    """reflector.go's form: Go encoding/json, no spaces."""
    return json.dumps(obj, separators=(",", ":")).encode()


def spaced(obj: dict[str, object]) -> bytes:
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
        self._json = _framer(max_request_size, "request")
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

    def _next_object(self) -> dict[str, object] | None:
        try:
            return self._json.next_object()
        except ReflectorProtocolError:
            self.state = ReceiverState.CLOSED
            raise

    def body_bytes_received(self, n: int) -> None:
        """The shell read `n` body bytes itself (never more than `body_remaining`)."""
        if self.state is not ReceiverState.BODY or n > self.body_remaining or n < 0:
            raise ReflectorLocalError(f"{n} body bytes reported in state {self.state.value}")
        self.body_remaining -= n

    def send_version(self, version: int) -> bytes:
        self._expect(ReceiverState.ANSWER_VERSION)
        self.version = version
        self.state = ReceiverState.OFFER
        return compact({"version": version})

    def send_offer_answer(self, send: bool, needed_blobs: Sequence[str] = ()) -> bytes:
        """`{"send_sd_blob":..,"needed_blobs":[..]}` (needed omitted when empty) or `{"send_blob":..}`."""
        self._expect(ReceiverState.ANSWER_OFFER)
        offer = self.offer
        assert offer is not None
        if offer.is_sd:
            obj: dict[str, object] = {"send_sd_blob": send}
            if needed_blobs:
                obj["needed_blobs"] = list(needed_blobs)
        else:
            if needed_blobs:
                raise ReflectorLocalError("needed_blobs only answers an sd blob offer")
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
            raise ReflectorLocalError(f"no blob is being received (state {self.state.value})")
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
        _expect(self.state, state)


def parse_handshake(obj: dict[str, object]) -> Handshake:
    if "version" not in obj:
        raise ReflectorProtocolError("handshake is missing protocol version")
    version = obj["version"]
    if not _strict_int(version) or version not in SUPPORTED_VERSIONS:
        raise ReflectorProtocolError(f"protocol version not supported: {version!r}")
    return Handshake(version)


def parse_offer(obj: dict[str, object]) -> BlobOffer:
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
        self._json = _framer(max_answer_size, "answer")
        self.state = ClientState.HANDSHAKE
        self.offered_version: int | None = None
        self.version: int | None = None
        self.offer: BlobOffer | None = None

    def send_handshake(self, version: int = 1) -> bytes:
        self._expect(ClientState.HANDSHAKE)
        if version not in SUPPORTED_VERSIONS:
            raise ReflectorLocalError(f"unsupported reflector version {version}")
        self.offered_version = version
        self.state = ClientState.AWAIT_VERSION
        return spaced({"version": version})

    def send_offer(self, blob_hash: str, size: int, *, is_sd: bool = False) -> bytes:
        self._expect(ClientState.READY)
        try:
            validate_hash(blob_hash)
            validate_size(size)
        except BlobError as e:
            raise ReflectorLocalError(f"cannot offer that blob: {e}") from None
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

    def _version_answer(self, obj: dict[str, object]) -> VersionAnswer:
        version = obj.get("version")
        if not _strict_int(version) or version not in SUPPORTED_VERSIONS:
            raise ReflectorProtocolError(f"bad handshake answer {obj!r}")
        self.version = version
        self.state = ClientState.READY
        return VersionAnswer(version)

    def _offer_answer(self, obj: dict[str, object]) -> OfferAnswer:
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

    def _received_answer(self, obj: dict[str, object]) -> ReceivedAnswer:
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
        _expect(self.state, state)


def _expect(state: ReceiverState | ClientState, wanted: ReceiverState | ClientState) -> None:
    if state is not wanted:
        raise ReflectorLocalError(f"cannot do that now: state is {state.value}, not {wanted.value}")


def _short(obj: dict[str, object]) -> str:
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
    "NeedData",
    "OfferAnswer",
    "ReceivedAnswer",
    "ReceiverConnection",
    "ReceiverState",
    "ReflectorLocalError",
    "ReflectorProtocolError",
    "VersionAnswer",
    "compact",
    "parse_handshake",
    "parse_offer",
    "spaced",
]
