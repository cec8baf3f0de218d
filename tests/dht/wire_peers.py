"""Test peers built byte-exactly from the specs, independent of prism's codec.

- `LbrySdkStylePeer`: lbry-sdk's datagrams (lbry-wire.md §5): integer keys, a trailing protocolVersion dict,
  the flat store, 48-byte SHA-384 tokens over (secret ‖ IPv4), errors with a string at key 4, and lbry-sdk's
  decoder quirk (a dictionary does not consume its closing `e`, so it ends the enclosing list).
- `ReflectorGoStylePeer`: reflector.go's datagrams (reflector.md §4.6): string keys `1:0`, no options dict,
  the legacy 4-element store, 32-byte SHA-256 tokens over (id ‖ IP ‖ port ‖ secret), `invalid-token` errors.

Both run on a real UDP socket on 127.0.0.1. Neither is the real program: they are built from the specs so the
wire bytes are checked exactly (mocks of nodes that cannot run here).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from typing import Any

# --- an independent bencode, with lbry-sdk's dictionary quirk on decode ---------------------------------


def benc(v: Any) -> bytes:
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, str):
        return benc(v.encode())
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, list):
        return b"l" + b"".join(benc(x) for x in v) + b"e"
    if isinstance(v, dict):
        return b"d" + b"".join(benc(k) + benc(v[k]) for k in sorted(v)) + b"e"
    raise TypeError(type(v))


def _sdk_decode(x: bytes, f: int) -> tuple[Any, int]:
    c = x[f : f + 1]
    if c == b"i":
        e = x.index(b"e", f)
        return int(x[f + 1 : e]), e + 1
    if c == b"l":
        out = []
        f += 1
        while x[f : f + 1] != b"e":
            v, f = _sdk_decode(x, f)
            out.append(v)
        return out, f + 1
    if c == b"d":
        d: dict[Any, Any] = {}
        f += 1
        while x[f : f + 1] != b"e":
            k, f = _sdk_decode(x, f)
            d[k], f = _sdk_decode(x, f)
        return d, f  # the quirk: the closing 'e' is not consumed
    colon = x.index(b":", f)
    n = int(x[f:colon])
    return x[colon + 1 : colon + 1 + n], colon + 1 + n


def sdk_decode(data: bytes) -> Any:
    """lbry-sdk's decoding of a datagram (with its quirk), top-level keys normalised to int."""
    d, _ = _sdk_decode(data, 0)
    if not isinstance(d, dict):
        raise ValueError("not a dict")
    return {int(k) if isinstance(k, bytes) and k.isdigit() else k: v for k, v in d.items()}


def go_decode(data: bytes) -> Any:
    """Plain bencode (reflector.go's decoder is standard); string keys kept as bytes."""
    v, f = _std_decode(data, 0)
    if f != len(data):
        raise ValueError("trailing data")
    return v


def _std_decode(x: bytes, f: int) -> tuple[Any, int]:
    c = x[f : f + 1]
    if c == b"d":
        d: dict[Any, Any] = {}
        f += 1
        while x[f : f + 1] != b"e":
            k, f = _std_decode(x, f)
            d[k], f = _std_decode(x, f)
        return d, f + 1
    if c == b"l":
        out = []
        f += 1
        while x[f : f + 1] != b"e":
            v, f = _std_decode(x, f)
            out.append(v)
        return out, f + 1
    return _sdk_decode(x, f)


def compact(ip: str, port: int, node_id: bytes) -> bytes:
    return socket.inet_aton(ip) + port.to_bytes(2, "big") + node_id


class _Base(asyncio.DatagramProtocol):
    def __init__(self, node_id: bytes | None = None) -> None:
        self.node_id = node_id or hashlib.sha384(os.urandom(32)).digest()
        self.transport: asyncio.DatagramTransport | None = None
        self.received: list[tuple[bytes, tuple[str, int]]] = []
        self.waiting: dict[bytes, asyncio.Future[bytes]] = {}
        self.stores: list[dict[str, Any]] = []
        self.known: list[tuple[bytes, str, int]] = []
        self.peers: dict[bytes, list[bytes]] = {}

    async def start(self) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        return self.addr

    @property
    def addr(self) -> tuple[str, int]:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[:2]

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((data, addr))
        rpc_id = self.rpc_id_of(data)
        fut = self.waiting.pop(rpc_id, None) if rpc_id else None
        if fut is not None and not fut.done() and self.message_type(data) != 0:
            fut.set_result(data)
            return
        self.handle_request(data, addr)

    async def send_raw(self, data: bytes, addr: tuple[str, int], rpc_id: bytes, wait: float = 2.0) -> bytes:
        fut = asyncio.get_running_loop().create_future()
        self.waiting[rpc_id] = fut
        assert self.transport is not None
        self.transport.sendto(data, addr)
        return await asyncio.wait_for(fut, wait)

    def rpc_id_of(self, data: bytes) -> bytes | None:
        raise NotImplementedError

    def message_type(self, data: bytes) -> int:
        raise NotImplementedError

    def handle_request(self, data: bytes, addr: tuple[str, int]) -> None:
        raise NotImplementedError


class LbrySdkStylePeer(_Base):
    """Speaks and answers like an lbry-sdk node (lbry-wire.md §5.2-5.4)."""

    def __init__(self, node_id: bytes | None = None) -> None:
        super().__init__(node_id)
        self.secret = os.urandom(48)

    def token_for(self, ip: str) -> bytes:
        return hashlib.sha384(self.secret + socket.inet_aton(ip)).digest()

    def rpc_id_of(self, data: bytes) -> bytes | None:
        try:
            return sdk_decode(data).get(1)
        except (ValueError, IndexError):
            return None

    def message_type(self, data: bytes) -> int:
        return sdk_decode(data).get(0, -1)

    # requests, byte for byte as lbry-sdk builds them
    def request(self, rpc_id: bytes, method: bytes, args: list[Any]) -> bytes:
        return benc({0: 0, 1: rpc_id, 2: self.node_id, 3: method, 4: args})

    def ping_bytes(self, rpc_id: bytes) -> bytes:
        return self.request(rpc_id, b"ping", [{b"protocolVersion": 1}])

    def find_node_bytes(self, rpc_id: bytes, key: bytes) -> bytes:
        return self.request(rpc_id, b"findNode", [key, {b"protocolVersion": 1}])

    def find_value_bytes(self, rpc_id: bytes, key: bytes, page: int = 0) -> bytes:
        return self.request(rpc_id, b"findValue", [key, {b"p": page, b"protocolVersion": 1}])

    def store_bytes(self, rpc_id: bytes, blob: bytes, token: bytes, port: int) -> bytes:
        return self.request(rpc_id, b"store", [blob, token, port, self.node_id, 0, {b"protocolVersion": 1}])

    async def call(self, data: bytes, addr: tuple[str, int]) -> dict[Any, Any]:
        rpc_id = sdk_decode(data)[1]
        return sdk_decode(await self.send_raw(data, addr, rpc_id))

    # answering
    def _reply(self, rpc_id: bytes, result: Any, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(benc({0: 1, 1: rpc_id, 2: self.node_id, 3: result}), addr)

    def _error(self, rpc_id: bytes, exc: bytes, text: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(benc({0: 2, 1: rpc_id, 2: self.node_id, 3: exc, 4: text}), addr)

    def handle_request(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = sdk_decode(data)
        if msg.get(0) != 0 or len(msg.get(1, b"")) != 20 or len(msg.get(2, b"")) != 48:
            return
        rpc_id, method, args = msg[1], msg[3], msg.get(4, [])
        if args and isinstance(args[-1], dict):
            args = args[:-1]
        contacts = [[i, ip.encode(), p] for i, ip, p in self.known if i != msg[2]][:8]
        if method == b"ping":
            self._reply(rpc_id, b"pong", addr)
        elif method == b"findNode":
            self._reply(rpc_id, contacts, addr)
        elif method == b"findValue":
            key = args[0]
            peers = self.peers.get(key, [])
            result: dict[bytes, Any] = {
                b"token": self.token_for(addr[0]),
                b"contacts": contacts,
                b"p": 0 if not peers else len(peers) // 9 + 1,
                b"protocolVersion": 1,
            }
            if peers:
                result[key] = peers[:8]
            self._reply(rpc_id, result, addr)
        elif method == b"store":
            try:
                blob, token, port, original, age = args
            except ValueError as e:
                self._error(rpc_id, b"<class 'ValueError'>", str(e).encode(), addr)
                return
            self.stores.append(
                {
                    "blob": blob,
                    "token": token,
                    "port": port,
                    "node_id": original,
                    "age": age,
                    "raw": data,
                    "from": addr,
                }
            )
            self.peers.setdefault(blob, []).append(compact(addr[0], port, msg[2]))
            self._reply(rpc_id, b"OK", addr)
        else:
            self._error(rpc_id, b"<class 'AttributeError'>", b"Invalid method: " + method, addr)


class ReflectorGoStylePeer(_Base):
    """Speaks and answers like a reflector.go node (reflector.md §4.6)."""

    def __init__(self, node_id: bytes | None = None) -> None:
        super().__init__(node_id)
        self.secret = os.urandom(64)
        self.dropped: list[bytes] = []

    def token_for(self, node_id: bytes, ip: str, port: int) -> bytes:
        return hashlib.sha256(node_id + socket.inet_aton(ip) + str(port).encode() + self.secret).digest()

    def rpc_id_of(self, data: bytes) -> bytes | None:
        try:
            d = go_decode(data)
        except (ValueError, IndexError):
            return None
        return d.get(b"1", d.get(1)) if isinstance(d, dict) else None

    def message_type(self, data: bytes) -> int:
        d = go_decode(data)
        return d.get(b"0", d.get(0, -1))

    # Go templates (string keys)
    def ping_bytes(self, mid: bytes) -> bytes:
        return b"d1:0i0e1:120:" + mid + b"1:248:" + self.node_id + b"1:34:ping1:4lee"

    def find_node_bytes(self, mid: bytes, target: bytes) -> bytes:
        return b"d1:0i0e1:120:" + mid + b"1:248:" + self.node_id + b"1:38:findNode1:4l48:" + target + b"ee"

    def find_value_bytes(self, mid: bytes, key: bytes) -> bytes:
        return b"d1:0i0e1:120:" + mid + b"1:248:" + self.node_id + b"1:39:findValue1:4l48:" + key + b"ee"

    def store_bytes(
        self, mid: bytes, blob: bytes, token: bytes, port: int, pubid: bytes | None = None
    ) -> bytes:
        pubid = pubid if pubid is not None else self.node_id
        return (
            b"d1:0i0e1:120:" + mid + b"1:248:" + self.node_id + b"1:35:store1:4l48:" + blob
            + b"d6:lbryid48:" + self.node_id + b"4:porti%de5:token%d:" % (port, len(token)) + token
            + b"e48:" + pubid + b"i0eee"
        )  # fmt: skip

    async def call(self, data: bytes, addr: tuple[str, int]) -> dict[Any, Any]:
        mid = go_decode(data)[b"1"]
        return _norm(go_decode(await self.send_raw(data, addr, mid)))

    def handle_request(self, data: bytes, addr: tuple[str, int]) -> None:
        # reflector.go only looks at datagrams starting with d1:0i or di0ei
        if not (data.startswith(b"d1:0i") or data.startswith(b"di0ei")):
            self.dropped.append(data)
            return
        try:
            msg = _norm(go_decode(data))
            args = msg.get(4, [])
            if msg.get(3) == b"store":
                blob, value, pubid, _self_store = args  # legacy layout only
                token, port = value[b"token"], value[b"port"]
        except (ValueError, KeyError, TypeError, IndexError):
            self.dropped.append(data)  # decode error: no reply
            return
        assert self.transport is not None
        head = b"d1:0i1e1:120:" + msg[1] + b"1:248:" + self.node_id + b"1:3"
        method = msg[3]
        contacts = b"".join(
            b"l48:%s%d:%si%dee" % (i, len(ip), ip.encode(), p) for i, ip, p in self.known if i != msg[2]
        )
        if method == b"ping":
            self.transport.sendto(head + b"4:ponge", addr)
        elif method == b"findNode":
            self.transport.sendto(head + b"l" + contacts + b"ee", addr)
        elif method == b"findValue":
            tok = self.token_for(msg[2], addr[0], addr[1])
            self.transport.sendto(head + b"d8:contactsl" + contacts + b"e5:token32:" + tok + b"ee", addr)
        elif method == b"store":
            if token != self.token_for(msg[2], addr[0], addr[1]):
                self.transport.sendto(
                    b"d1:0i2e1:120:" + msg[1] + b"1:248:" + self.node_id + b"1:313:invalid-token1:4lee", addr
                )
                return
            self.stores.append({"blob": blob, "token": token, "port": port, "node_id": pubid, "raw": data})
            self.transport.sendto(head + b"2:OKe", addr)


def _norm(d: dict[Any, Any]) -> dict[Any, Any]:
    return {int(k) if isinstance(k, bytes) and k.isdigit() else k: v for k, v in d.items()}
