"""Sans-IO codec of serf's agent RPC (protocol 5): msgpack objects over one TCP stream.

Every request is a header `{"Command", "Seq"}` optionally followed by a body; every response is a header
`{"Seq", "Error"}` optionally followed by a body. Whether a body follows depends on the command (and, for
some, on the error), so the codec remembers what each pending `Seq` asked for. A `stream` request is
answered by one bodiless header, then one header and body per event until `stop` for that `Seq` is
acknowledged.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from typing import Any

import msgpack

RPC_VERSION = 1
MEMBER_EVENTS = "member-join,member-leave,member-failed,member-update,member-reap"


class SerfCodecError(Exception):
    """The agent sent something this codec does not understand."""


class Reply(enum.Enum):
    """What follows a response header."""

    HEADER = "header"
    """Nothing (handshake, leave, stop)."""
    BODY = "body"
    """A body when the header has no error (members)."""
    BODY_ALWAYS = "body always"
    """A body even with an error (join)."""
    STREAM = "stream"
    """A bodiless acknowledgement, then a header and a body per event."""


COMMANDS: dict[str, Reply] = {
    "handshake": Reply.HEADER,
    "members": Reply.BODY,
    "join": Reply.BODY_ALWAYS,
    "leave": Reply.HEADER,
    "stream": Reply.STREAM,
    "stop": Reply.HEADER,
    "stats": Reply.BODY,
}


@dataclass(frozen=True, slots=True)
class Response:
    """The answer to one request (`body` None when the command has none, or on error)."""

    seq: int
    error: str
    body: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event of the stream opened by request `seq`."""

    seq: int
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Member:
    """A member as `members` and member events report it."""

    name: str
    addr: str
    port: int
    status: str
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> Member:
        addr = raw.get("Addr", b"")
        if isinstance(addr, bytes) and len(addr) == 16 and addr[:12] == b"\0" * 10 + b"\xff\xff":
            addr = addr[12:]  # an IPv4-mapped IPv6 address
        if isinstance(addr, bytes) and len(addr) == 4:
            text = ".".join(str(b) for b in addr)
        elif isinstance(addr, bytes) and len(addr) == 16:
            text = str(ipaddress.IPv6Address(addr))
        else:
            text = str(addr)
        return cls(
            name=str(raw.get("Name", "")),
            addr=text,
            port=int(raw.get("Port", 0)),
            status=str(raw.get("Status", "")),
            tags={str(k): str(v) for k, v in (raw.get("Tags") or {}).items()},
        )


Event = Response | StreamEvent


class SerfCodec:
    """Requests to bytes, received bytes to `Response` and `StreamEvent`s."""

    def __init__(self) -> None:
        self._seq = 0
        self._pending: dict[int, Reply] = {}
        self._streams: set[int] = set()
        self._stops: dict[int, int] = {}
        """Seq of a pending `stop` -> the stream it stops."""
        self._unpacker = msgpack.Unpacker(
            raw=False, unicode_errors="surrogateescape", max_buffer_size=64 << 20
        )
        self._header: dict[str, Any] | None = None
        """A header whose body has not arrived yet."""

    def request(self, command: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
        """(seq, bytes to send) of one request."""
        reply = COMMANDS.get(command)
        if reply is None:
            raise ValueError(f"unsupported serf command {command!r}")
        seq = self._seq
        self._seq += 1
        self._pending[seq] = reply
        if command == "stop" and body is not None:
            self._stops[seq] = int(body["Stop"])
        data = msgpack.packb({"Command": command, "Seq": seq})
        if body is not None:
            data += msgpack.packb(body)
        return seq, data

    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes; return every complete response and event."""
        self._unpacker.feed(data)
        out: list[Event] = []
        for obj in self._unpacker:
            if not isinstance(obj, dict):
                raise SerfCodecError(f"expected a map from the serf agent, got {type(obj).__name__}")
            event = self._object(obj)
            if event is not None:
                out.append(event)
        return out

    def _object(self, obj: dict[str, Any]) -> Event | None:
        header = self._header
        if header is not None:  # the body of the header before
            self._header = None
            seq = int(header["Seq"])
            if seq in self._streams:
                return StreamEvent(seq, obj)
            return Response(seq, str(header.get("Error") or ""), obj)
        if "Seq" not in obj:
            raise SerfCodecError("a serf response header without Seq")
        seq = int(obj["Seq"])
        error = str(obj.get("Error") or "")
        if seq in self._streams and seq not in self._pending:
            self._header = obj
            return None
        reply = self._pending.pop(seq, None)
        if reply is None:
            raise SerfCodecError(f"a serf response to an unknown request {seq}")
        if reply is Reply.BODY_ALWAYS or (reply is Reply.BODY and not error):
            self._header = obj  # the body comes next
            return None
        if reply is Reply.STREAM and not error:
            self._streams.add(seq)
        stopped = self._stops.pop(seq, None)
        if stopped is not None and not error:
            self._streams.discard(stopped)
        return Response(seq, error)
