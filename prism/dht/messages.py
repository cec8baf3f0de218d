"""DHT datagrams: the three message types, the four RPCs' arguments and results, compact addresses.

Sans-IO: bytes in, plain values out (lbry-wire.md §5.2-5.3, reflector.md §4.6). Everything prism sends uses
integer top-level keys (lbry-sdk's form, which reflector.go also reads); both key forms are decoded.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any, TypeGuard

from prism.blob import validate_hash
from prism.dht.bencode import BencodeError, DhtCodecError, decode, encode

NODE_ID_LENGTH = 48
RPC_ID_LENGTH = 20
COMPACT_PEER_LENGTH = 54
PROTOCOL_VERSION = 1
MSG_SIZE_LIMIT = 1400
"""Largest datagram prism sends (lbry-sdk refuses to send more)."""
RECV_SIZE_LIMIT = 8192
"""Largest datagram prism decodes (reflector.go's answers may reach its 4096-byte read buffer)."""

REQUEST = 0
RESPONSE = 1
ERROR = 2

PING = b"ping"
STORE = b"store"
FIND_NODE = b"findNode"
FIND_VALUE = b"findValue"
METHODS = frozenset((PING, STORE, FIND_NODE, FIND_VALUE))

PONG = b"pong"
STORED_OK = b"OK"
VALUE_ERROR = b"<class 'ValueError'>"
ATTRIBUTE_ERROR = b"<class 'AttributeError'>"
INVALID_TOKEN = b"Invalid token"


def to_key(value: str | bytes) -> bytes:
    """A 48-byte DHT key from a 96-hex blob hash (or the raw bytes)."""
    if isinstance(value, bytes):
        if len(value) != NODE_ID_LENGTH:
            raise ValueError("DHT keys are 48 bytes")
        return value
    return bytes.fromhex(validate_hash(value))


class MessageError(DhtCodecError):
    """A well-formed bencode value that is not a valid DHT message or RPC argument list."""


@dataclass(frozen=True, slots=True)
class Request:
    rpc_id: bytes
    node_id: bytes
    method: bytes
    args: list[Any]


@dataclass(frozen=True, slots=True)
class Response:
    rpc_id: bytes
    node_id: bytes
    result: Any


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    rpc_id: bytes
    node_id: bytes
    exc_type: bytes
    message: bytes


Message = Request | Response | ErrorMessage

_KEY_ALIASES = {b"0": 0, b"1": 1, b"2": 2, b"3": 3, b"4": 4}


def decode_message(data: bytes) -> Message:
    """Parse one datagram. Raises only DhtCodecError (BencodeError or MessageError)."""
    if len(data) > RECV_SIZE_LIMIT:
        raise MessageError("datagram too large")
    raw = decode(data)
    if not isinstance(raw, dict):
        raise MessageError("datagram is not a dictionary")
    msg: dict[int, Any] = {}
    for k, v in raw.items():
        if isinstance(k, bytes):
            k = _KEY_ALIASES.get(k, k)
        msg[k] = v
    kind = msg.get(0)
    rpc_id = msg.get(1)
    node_id = msg.get(2)
    if not isinstance(rpc_id, bytes) or len(rpc_id) != RPC_ID_LENGTH:
        raise MessageError("rpc id must be 20 bytes")
    if not isinstance(node_id, bytes) or len(node_id) != NODE_ID_LENGTH:
        raise MessageError("node id must be 48 bytes")
    if kind == REQUEST:
        method = msg.get(3)
        if not isinstance(method, bytes):
            raise MessageError("request method must be a string")
        args = msg.get(4, [])
        if not isinstance(args, list):
            raise MessageError("request arguments must be a list")
        return Request(rpc_id, node_id, method, args)
    if kind == RESPONSE:
        if 3 not in msg:
            raise MessageError("response without a result")
        return Response(rpc_id, node_id, msg[3])
    if kind == ERROR:
        exc_type = msg.get(3, b"")
        if not isinstance(exc_type, bytes):
            raise MessageError("error type must be a string")
        text = msg.get(4, b"")
        if isinstance(text, list):  # reflector.go's form: a (usually empty) list of strings
            text = b" ".join(t for t in text if isinstance(t, bytes))
        if not isinstance(text, bytes):
            raise MessageError("error message must be a string")
        return ErrorMessage(rpc_id, node_id, exc_type, text)
    raise MessageError("unknown message type")


# --- encoding -------------------------------------------------------------------------------------------

_REQ_HEAD = b"di0ei0ei1e20:"
RESPONSE_HEAD = b"di0ei1ei1e20:"
"""How a response datagram starts; then the 20-byte rpc id, `id_part(node_id)`, `i3e`, the result, `e`."""
_ERR_HEAD = b"di0ei2ei1e20:"


def id_part(node_id: bytes) -> bytes:
    return b"i2e48:" + node_id


def _datagram(head: bytes, rpc_id: bytes, node_id: bytes, string3: bytes, encoded4: bytes) -> bytes:
    """A request or error datagram: a string at key 3 (method or exception type), anything at key 4."""
    return b"".join(
        (head, rpc_id, id_part(node_id), b"i3e%d:" % len(string3), string3, b"i4e", encoded4, b"e")
    )


def encode_request(
    rpc_id: bytes, node_id: bytes, method: bytes, args: list[Any], *, legacy: bool = False
) -> bytes:
    """A request datagram in lbry-sdk's form (integer keys).

    `legacy=True` gives reflector.go's own form instead (string keys `1:0`..`1:4`, and a dictionary allowed
    in the middle of the argument list): only for the legacy `store` sent to reflector.go nodes.
    """
    if legacy:
        return b"".join(
            (
                b"d1:0i0e1:120:",
                rpc_id,
                b"1:248:",
                node_id,
                b"1:3%d:" % len(method),
                method,
                b"1:4",
                encode(args, allow_inner_dicts=True),
                b"e",
            )
        )
    return _datagram(_REQ_HEAD, rpc_id, node_id, method, encode(args))


def encode_response_raw(rpc_id: bytes, node_id: bytes, result_encoded: bytes) -> bytes:
    """A response datagram around an already-bencoded result."""
    return b"".join((RESPONSE_HEAD, rpc_id, id_part(node_id), b"i3e", result_encoded, b"e"))


def encode_response(rpc_id: bytes, node_id: bytes, result: Any) -> bytes:
    return encode_response_raw(rpc_id, node_id, encode(result))


def encode_error(rpc_id: bytes, node_id: bytes, exc_type: bytes, message: bytes) -> bytes:
    """An error in lbry-sdk's form (key 4 is a string), which reflector.go also tolerates."""
    return _datagram(_ERR_HEAD, rpc_id, node_id, exc_type, b"%d:%s" % (len(message), message))


# --- request arguments (client side) ------------------------------------------------------------------

_PV_DICT = {b"protocolVersion": PROTOCOL_VERSION}


def ping_args() -> list[Any]:
    return [dict(_PV_DICT)]


def find_node_args(key: bytes) -> list[Any]:
    return [key, dict(_PV_DICT)]


def find_value_args(key: bytes, page: int = 0) -> list[Any]:
    return [key, {b"p": page, b"protocolVersion": PROTOCOL_VERSION}]


def store_args_flat(blob_hash: bytes, token: bytes, tcp_port: int, node_id: bytes) -> list[Any]:
    """lbry-sdk's store layout: [hash, token, port, publisher id, age 0, {protocolVersion: 1}]."""
    return [blob_hash, token, tcp_port, node_id, 0, dict(_PV_DICT)]


def store_args_legacy(blob_hash: bytes, token: bytes, tcp_port: int, node_id: bytes) -> list[Any]:
    """reflector.go's layout, with our own id as lbryid and as the publisher (never 48 zero bytes)."""
    return [blob_hash, {b"lbryid": node_id, b"port": tcp_port, b"token": token}, node_id, 0]


# --- request arguments (server side) ------------------------------------------------------------------


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def split_options(args: list[Any]) -> tuple[list[Any], dict[Any, Any] | None]:
    """Positional arguments and the trailing options dict lbry-sdk appends (None if absent)."""
    if args and isinstance(args[-1], dict):
        return args[:-1], args[-1]
    return args, None


def parse_find_args(args: list[Any]) -> tuple[bytes, int, int | None]:
    """(key, page, protocolVersion or None) of a findNode / findValue request."""
    positional, opts = split_options(args)
    if not positional or not isinstance(positional[0], bytes) or len(positional[0]) != NODE_ID_LENGTH:
        raise MessageError("key must be 48 bytes")
    page = 0
    version = None
    if opts is not None:
        p = opts.get(b"p", 0)
        page = p if _is_int(p) and 0 <= p < 256 else 0
        v = opts.get(b"protocolVersion")
        version = v if _is_int(v) else None
    return positional[0], page, version


@dataclass(frozen=True, slots=True)
class StoreArgs:
    blob_hash: bytes
    token: bytes
    tcp_port: int
    publisher_id: bytes
    legacy: bool


def parse_store_args(args: list[Any]) -> StoreArgs:
    """Both store layouts: flat (lbry-sdk) and legacy 4-element (reflector.go)."""
    positional, _opts = split_options(args)
    if len(args) >= 2 and isinstance(args[1], dict):
        # legacy: [hash, {lbryid, port, token}, publisher id, self_store]
        if len(args) < 3:
            raise MessageError("legacy store needs hash, value and publisher id")
        blob_hash, value, publisher = args[0], args[1], args[2]
        token = value.get(b"token")
        port = value.get(b"port")
        legacy = True
    else:
        if len(positional) < 4:
            raise MessageError("store needs hash, token, port and publisher id")
        blob_hash, token, port, publisher = positional[0], positional[1], positional[2], positional[3]
        legacy = False
    if not isinstance(blob_hash, bytes) or len(blob_hash) != NODE_ID_LENGTH:
        raise MessageError("blob hash must be 48 bytes")
    if not isinstance(token, bytes):
        raise MessageError("token must be a string")
    if not _is_int(port) or not 1 <= port <= 65535:
        raise MessageError("port must be an integer in 1..65535")
    if not isinstance(publisher, bytes) or len(publisher) != NODE_ID_LENGTH:
        raise MessageError("publisher id must be 48 bytes")
    return StoreArgs(blob_hash, token, port, publisher, legacy)


# --- contacts and compact addresses ------------------------------------------------------------------


def encode_contact_triple(node_id: bytes, ip: str, port: int) -> bytes:
    """`[id, "a.b.c.d", udp_port]` as bencode (what findNode / findValue answers list)."""
    ip_b = ip.encode()
    return b"l48:%s%d:%si%dee" % (node_id, len(ip_b), ip_b, port)


def parse_contact_triples(value: Any) -> list[tuple[bytes, str, int]]:
    """Valid `[id, ip, port]` triples of a findNode / findValue answer; malformed entries are skipped."""
    out: list[tuple[bytes, str, int]] = []
    if not isinstance(value, list):
        return out
    for item in value:
        if not isinstance(item, list) or len(item) < 3:
            continue
        node_id, ip, port = item[0], item[1], item[2]
        if not isinstance(node_id, bytes) or len(node_id) != NODE_ID_LENGTH:
            continue
        if not isinstance(ip, bytes) or not _is_int(port) or not 0 < port < 65536:
            continue
        text = canonical_ipv4(ip)
        if text is not None:
            out.append((node_id, text, port))
    return out


@functools.lru_cache(maxsize=4096)
def canonical_ipv4(ip: bytes) -> str | None:
    """A dotted IPv4 address in its canonical form; None if it is not one. (Cached: the same contacts come
    back in answer after answer, and parsing dominated a busy announcer's profile.)"""
    try:
        return str(ipaddress.IPv4Address(ip.decode("ascii")))
    except ValueError:  # includes UnicodeDecodeError
        return None


def encode_compact_peer(ip: str, tcp_port: int, node_id: bytes) -> bytes:
    """4-byte IPv4 ‖ 2-byte big-endian TCP port ‖ 48-byte node id."""
    return socket.inet_aton(ip) + tcp_port.to_bytes(2, "big") + node_id


def decode_compact_peer(data: bytes) -> tuple[str, int, bytes]:
    """(ip, tcp_port, node_id) of a 54-byte compact address."""
    if not isinstance(data, bytes) or len(data) != COMPACT_PEER_LENGTH:
        raise MessageError("compact address must be 54 bytes")
    return socket.inet_ntoa(data[:4]), int.from_bytes(data[4:6], "big"), data[6:]


@dataclass(frozen=True, slots=True)
class FindValueResult:
    token: bytes | None
    contacts: list[tuple[bytes, str, int]]
    peers: list[tuple[str, int, bytes]]
    pages: int
    protocol_version: int | None


def parse_find_value_result(result: Any, key: bytes) -> FindValueResult:
    """A findValue answer in either form (lbry-sdk's with p/protocolVersion, or reflector.go's)."""
    if not isinstance(result, dict):
        raise MessageError("findValue result must be a dictionary")
    token = result.get(b"token")
    if not isinstance(token, bytes):
        token = None
    peers: list[tuple[str, int, bytes]] = []
    raw_peers = result.get(key)
    if isinstance(raw_peers, list):
        for item in raw_peers:
            try:
                peers.append(decode_compact_peer(item))
            except MessageError:
                continue
    pages = result.get(b"p", 0)
    version = result.get(b"protocolVersion")
    return FindValueResult(
        token,
        parse_contact_triples(result.get(b"contacts")),
        peers,
        pages if _is_int(pages) else 0,
        version if _is_int(version) else None,
    )


def try_decode(data: bytes) -> Message | None:
    """decode_message, or None for anything malformed."""
    try:
        return decode_message(data)
    except (BencodeError, MessageError):
        return None
