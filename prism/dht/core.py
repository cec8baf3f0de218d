"""The sans-IO DHT node core: fed datagrams and the current time, it hands back datagrams, events and a timer.

Like aioquic's QuicConnection, it never touches a socket or a clock: the asyncio shell (`prism.dht.node`)
calls `datagram_received(data, addr, now)`, `send_request(...)`, `handle_timer(now)`, then sends
`take_datagrams()` and resolves its futures from `take_events()`. It answers the four RPCs itself, keeps the
routing table, the token secret and the peer store, and matches responses to the requests it sent.
"""

from __future__ import annotations

import heapq
import logging
import os
from dataclasses import dataclass
from typing import Any

from prism.dht.bencode import DhtCodecError, encode
from prism.dht.config import DhtConfig
from prism.dht.messages import (
    ATTRIBUTE_ERROR,
    FIND_NODE,
    FIND_VALUE,
    INVALID_TOKEN,
    MSG_SIZE_LIMIT,
    NODE_ID_LENGTH,
    PING,
    PROTOCOL_VERSION,
    RECV_SIZE_LIMIT,
    RESPONSE_HEAD,
    STORE,
    VALUE_ERROR,
    ErrorMessage,
    MessageError,
    Request,
    Response,
    decode_message,
    encode_error,
    encode_request,
    id_part,
    parse_find_args,
    parse_store_args,
    ping_args,
)
from prism.dht.peerstore import PeerStore
from prism.dht.routing import AddressPolicy, Contact, RoutingTable
from prism.dht.tokens import TokenManager

log = logging.getLogger("prism.dht")

Addr = tuple[str, int]

_PONG = b"4:pong"
_OK = b"2:OK"
_TIMEOUT = 0
_MAYBE_PING = 1
STALE_AFTER = 60.0
"""A contact silent this long may be challenged by a newcomer for its place in a full bucket."""
GOOD_FOR = 900.0
"""A node that answered us this recently needs no ping to prove it is alive (BEP 5's "good" node, which
lbry-sdk's ping queue also skips). Without this rule two nodes whose full buckets have no room for each
other ping each other forever, each ping being an unknown requester's request."""
MAX_REFUSED = 4096
"""Responders remembered as refused by a full bucket, at most."""
SILENT_AFTER = 2
"""Timeouts in a row after which a node counts as gone for lookups (routing.BAD_FAILURES for contacts)."""
SILENT_FOR = 300.0
"""How long such a node is left out of lookups after its last timeout (unless it answers meanwhile)."""


class DhtBusyError(Exception):
    """Too many outgoing requests are already waiting for an answer."""


class RpcFailed(Exception):
    """A DHT request got no answer in time, or an error datagram."""


class RpcTimeout(RpcFailed):
    pass


class RpcErrorReply(RpcFailed):
    def __init__(self, exc_type: bytes, message: bytes) -> None:
        super().__init__(f"{exc_type.decode(errors='replace')}: {message.decode(errors='replace')}")
        self.exc_type = exc_type
        self.message = message


@dataclass(slots=True)
class RpcOutcome:
    """How one request sent with `send_request` ended: a response, an error datagram, or a timeout."""

    rpc_id: bytes
    response: Response | None = None
    error: ErrorMessage | None = None
    responder: Contact | None = None

    @property
    def timed_out(self) -> bool:
        return self.response is None and self.error is None


@dataclass(slots=True)
class _Pending:
    addr: Addr
    method: bytes
    expect_id: bytes | None
    internal: bool
    replacement: Contact | None = None
    """For a ping to a stale contact of a full bucket: who takes its place if it stays silent."""


class SilentNodes:
    """Node ids whose last SILENT_AFTER requests timed out, within SILENT_FOR seconds: lookups do not ask
    them, so a node that left the network (but is still in others' tables) does not hold every lookup up
    for a timeout. lbry-sdk's iterative finder skips such "bad" peers too. Old entries go at `expire`."""

    def __init__(self, size: int = MAX_REFUSED) -> None:
        self.size = size
        self._fails: dict[bytes, tuple[int, float]] = {}

    def __contains__(self, node_id: object) -> bool:
        fails = self._fails.get(node_id)  # type: ignore[call-overload]
        return fails is not None and fails[0] >= SILENT_AFTER

    def __len__(self) -> int:
        return len(self._fails)

    def timed_out(self, node_id: bytes, now: float) -> None:
        if len(self._fails) >= self.size:
            self.expire(now)
            if len(self._fails) >= self.size:
                self._fails.clear()
        count = self._fails.get(node_id, (0, 0.0))[0]
        self._fails[node_id] = (count + 1, now)

    def answered(self, node_id: bytes) -> None:
        self._fails.pop(node_id, None)

    def expire(self, now: float) -> None:
        fails = self._fails
        for nid in [nid for nid, (_, t) in fails.items() if now - t >= SILENT_FOR]:
            del fails[nid]


@dataclass(slots=True)
class CoreStats:
    received: int = 0
    malformed: int = 0
    refused_address: int = 0
    requests: int = 0
    responses: int = 0
    unmatched: int = 0
    errors_sent: int = 0
    timeouts: int = 0


class NodeCore:
    """A Kademlia node's protocol logic over LBRY's datagrams, with no I/O."""

    def __init__(
        self, node_id: bytes, peer_port: int, config: DhtConfig | None = None, now: float = 0.0
    ) -> None:
        if len(node_id) != NODE_ID_LENGTH:
            raise ValueError("node id must be 48 bytes")
        self.node_id = node_id
        self.peer_port = peer_port
        self.config = config = config or DhtConfig()
        self.routing = RoutingTable(node_id, config.k, now)
        self.tokens = TokenManager(now, config.token_rotation)
        self.peers = PeerStore(config.data_expiration, config.max_peers_per_key, config.max_peers_total)
        self.policy = AddressPolicy(config.allow_private_peers)
        self.stats = CoreStats()
        self._out: list[tuple[bytes, Addr]] = []
        self._events: list[RpcOutcome] = []
        self._pending: dict[bytes, _Pending] = {}
        self._timers: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._maybe_ping: dict[Addr, bytes] = {}
        self._replacing: set[bytes] = set()
        self._refused: dict[Addr, tuple[bytes, float]] = {}
        self.silent = SilentNodes()
        """Responders that answered us but found no room in the routing table: (node id, when)."""
        self._next_housekeeping = now + config.housekeeping_interval
        self._id_part = id_part(node_id) + b"i3e"
        self._handlers = {
            PING: self._on_ping,
            FIND_NODE: self._on_find_node,
            FIND_VALUE: self._on_find_value,
            STORE: self._on_store,
        }

    # --- I/O surface ----------------------------------------------------------------------------------

    @property
    def has_datagrams(self) -> bool:
        return bool(self._out)

    @property
    def has_events(self) -> bool:
        return bool(self._events)

    def take_datagrams(self) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    def take_events(self) -> list[RpcOutcome]:
        ev, self._events = self._events, []
        return ev

    def get_timer(self) -> float:
        """When `handle_timer` must be called next."""
        if self._timers and self._timers[0][0] < self._next_housekeeping:
            return self._timers[0][0]
        return self._next_housekeeping

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def maybe_ping_count(self) -> int:
        return len(self._maybe_ping)

    def datagram_received(self, data: bytes, addr: Addr, now: float) -> None:
        self.stats.received += 1
        ip, port = addr[0], addr[1]
        if len(data) > RECV_SIZE_LIMIT:
            self.stats.malformed += 1
            return
        if not self.policy.addr_ok(ip, port):
            self.stats.refused_address += 1
            return
        try:
            msg = decode_message(data)
        except DhtCodecError:
            self.stats.malformed += 1
            return
        if type(msg) is Request:
            self._on_request(msg, ip, port, now)
        elif type(msg) is Response:
            self._on_response(msg, ip, port, now)
        elif type(msg) is ErrorMessage:
            self._on_error(msg, ip, port, now)

    def handle_timer(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, kind, payload = heapq.heappop(timers)
            if kind == _TIMEOUT:
                p = self._pending.pop(payload, None)
                if p is None:
                    continue
                self.stats.timeouts += 1
                failed = p.expect_id if p.expect_id is not None else self.routing.id_at(p.addr)
                if failed is not None:
                    self.silent.timed_out(failed, now)
                    self.routing.fail(failed)
                    if p.replacement is not None:
                        self._replacing.discard(failed)
                        self.routing.remove(failed)
                        self.routing.add(p.replacement, now)
                if not p.internal:
                    self._events.append(RpcOutcome(payload))
            else:
                node_id = self._maybe_ping.pop(payload, None)
                if (
                    node_id is not None
                    and node_id not in self.routing
                    and len(self._pending) < self.config.max_pending // 2
                ):
                    self.send_request(payload, PING, ping_args(), now, expect_id=node_id, internal=True)
        if now >= self._next_housekeeping:
            self.peers.expire(now)
            self.silent.expire(now)
            self._next_housekeeping = now + self.config.housekeeping_interval

    def send_request(
        self,
        addr: Addr,
        method: bytes,
        args: list[Any],
        now: float,
        *,
        expect_id: bytes | None = None,
        legacy: bool = False,
        internal: bool = False,
    ) -> bytes:
        """Queue a request datagram; returns its rpc id. The outcome comes back as an RpcOutcome event."""
        if len(self._pending) >= self.config.max_pending:
            raise DhtBusyError("too many requests in flight")
        rpc_id = os.urandom(20)
        data = encode_request(rpc_id, self.node_id, method, args, legacy=legacy)
        if len(data) > MSG_SIZE_LIMIT:
            raise MessageError(f"request of {len(data)} bytes exceeds the {MSG_SIZE_LIMIT}-byte limit")
        self._pending[rpc_id] = _Pending(addr, method, expect_id, internal)
        self._seq += 1
        heapq.heappush(self._timers, (now + self.config.rpc_timeout, self._seq, _TIMEOUT, rpc_id))
        self._out.append((data, addr))
        return rpc_id

    def contacts_from(self, triples: list[tuple[bytes, str, int]]) -> list[Contact]:
        """The contacts of an answer we may use: not ourselves, addresses the policy allows. A contact of
        our routing table at the same address is handed out as is (answers repeat the same few contacts,
        and building each anew was a busy announcer's cost)."""
        ok, own, table = self.policy.addr_ok, self.node_id, self.routing.get
        out = []
        for i, ip, p in triples:
            c = table(i)
            if c is not None and c.port == p and c.ip == ip:
                out.append(c)
            elif i != own and ok(ip, p):
                out.append(Contact(i, ip, p))
        return out

    def cancel(self, rpc_id: bytes) -> None:
        """Forget a pending request (its answer, if any, will be ignored)."""
        self._pending.pop(rpc_id, None)

    # --- requests -------------------------------------------------------------------------------------

    def _on_request(self, msg: Request, ip: str, port: int, now: float) -> None:
        if msg.node_id == self.node_id:
            return
        self.stats.requests += 1
        handler = self._handlers.get(msg.method)
        if handler is None:
            self._send_error(msg.rpc_id, ATTRIBUTE_ERROR, b"Invalid method: " + msg.method[:64], (ip, port))
        else:
            try:
                handler(msg, ip, port, now)
            except DhtCodecError as e:
                self._send_error(msg.rpc_id, VALUE_ERROR, str(e).encode()[:200], (ip, port))
        known = self.routing.get(msg.node_id)
        if known is not None:
            known.last_seen = now
        elif self._recently_refused((ip, port), msg.node_id, now):
            pass  # it answered us lately, and its bucket had no room: a ping would prove nothing new
        elif len(self._maybe_ping) < self.config.max_maybe_ping and (ip, port) not in self._maybe_ping:
            # like lbry-sdk: a requester joins the table only after it answers a ping of ours
            self._maybe_ping[(ip, port)] = msg.node_id
            self._seq += 1
            heapq.heappush(
                self._timers, (now + self.config.maybe_ping_delay, self._seq, _MAYBE_PING, (ip, port))
            )

    def _reply(self, rpc_id: bytes, ip: str, port: int, result: bytes) -> None:
        """Queue a response around an already-bencoded result."""
        self._out.append((RESPONSE_HEAD + rpc_id + self._id_part + result + b"e", (ip, port)))

    def _send_error(self, rpc_id: bytes, exc_type: bytes, message: bytes, addr: Addr) -> None:
        self.stats.errors_sent += 1
        self._out.append((encode_error(rpc_id, self.node_id, exc_type, message), addr))

    def _on_ping(self, msg: Request, ip: str, port: int, now: float) -> None:
        self._reply(msg.rpc_id, ip, port, _PONG)

    def _on_find_node(self, msg: Request, ip: str, port: int, now: float) -> None:
        args = msg.args
        key = args[0] if args else None
        if type(key) is not bytes or len(key) != NODE_ID_LENGTH:
            key = parse_find_args(args)[0]  # raises with the reason
        closest = self.routing.closest(key, exclude=msg.node_id)
        body = b"".join([c.encoded for c in closest])
        self._reply(msg.rpc_id, ip, port, b"l" + body + b"e")

    def find_value_result(
        self, key: bytes, page: int, version: int | None, requester: bytes, token: bytes, now: float
    ) -> bytes:
        """The bencoded findValue result for a requester; lbry-sdk's form if it sent a protocolVersion."""
        peers = [p for p in self.peers.get(key, now) if p.node_id != requester]
        contacts = self.routing.closest(key, exclude=requester)
        result: dict[bytes, Any]
        if version is not None:
            n_pages = (len(peers) + 7) // 8
            result = {b"token": token, b"p": n_pages, b"protocolVersion": PROTOCOL_VERSION}
            page_peers = peers[8 * page : 8 * page + 8]
            if page_peers:
                result[key] = [p.compact for p in page_peers]
            if page == 0:
                result[b"contacts"] = contacts
        elif peers:
            result = {key: [p.compact for p in peers[:8]], b"token": token}
        else:
            result = {b"contacts": contacts, b"token": token}
        while True:
            body = _encode_fv(result)
            if len(body) + 150 <= MSG_SIZE_LIMIT:
                return body
            if result.get(b"contacts"):
                result[b"contacts"] = result[b"contacts"][:-1]
            elif result.get(key):
                result[key] = result[key][:-1]
            else:
                return body

    def _on_find_value(self, msg: Request, ip: str, port: int, now: float) -> None:
        key, page, version = parse_find_args(msg.args)
        token = self.tokens.issue(msg.node_id, ip, port, now)
        body = self.find_value_result(key, page, version, msg.node_id, token, now)
        self._reply(msg.rpc_id, ip, port, body)

    def _on_store(self, msg: Request, ip: str, port: int, now: float) -> None:
        args = parse_store_args(msg.args)
        if not self.tokens.verify(args.token, msg.node_id, ip, port, now):
            self._send_error(msg.rpc_id, VALUE_ERROR, INVALID_TOKEN, (ip, port))
            return
        if args.tcp_port > 65534:
            raise MessageError("port must be in 1..65534")
        # keyed by the sending node (not the publisher field, which reflector.go fills with zeros)
        if not self.peers.add(args.blob_hash, msg.node_id, ip, args.tcp_port, now):
            self._send_error(msg.rpc_id, VALUE_ERROR, b"peer store is full", (ip, port))
            return
        self._reply(msg.rpc_id, ip, port, _OK)

    # --- responses ------------------------------------------------------------------------------------

    def _on_response(self, msg: Response, ip: str, port: int, now: float) -> None:
        p = self._pending.get(msg.rpc_id)
        if p is None or p.addr[0] != ip:  # lbry-sdk checks the IP only
            self.stats.unmatched += 1
            return
        del self._pending[msg.rpc_id]
        self.stats.responses += 1
        if self.silent:
            self.silent.answered(msg.node_id)
        contact = Contact(msg.node_id, ip, port)
        if p.method == FIND_VALUE and isinstance(msg.result, dict):
            v = msg.result.get(b"protocolVersion")
            if isinstance(v, int):
                contact.protocol_version = v
        if p.replacement is not None:
            self._replacing.discard(p.expect_id)
        if msg.node_id != self.node_id and not self.routing.add(contact, now):
            self._remember_refused(contact, now)
            self._challenge_stale(contact, now)
        if not p.internal:
            self._events.append(RpcOutcome(msg.rpc_id, response=msg, responder=contact))

    def _recently_refused(self, addr: Addr, node_id: bytes, now: float) -> bool:
        seen = self._refused.get(addr)
        return seen is not None and seen[0] == node_id and now - seen[1] < GOOD_FOR

    def _remember_refused(self, contact: Contact, now: float) -> None:
        refused = self._refused
        if len(refused) >= MAX_REFUSED:
            for addr in [a for a, (_, t) in refused.items() if now - t >= GOOD_FOR]:
                del refused[addr]
            if len(refused) >= MAX_REFUSED:
                refused.clear()
        refused[contact.addr] = (contact.node_id, now)

    def _challenge_stale(self, newcomer: Contact, now: float) -> None:
        """A full bucket that may not split: ping its oldest contact that has been silent for
        STALE_AFTER seconds; the newcomer takes its place if that ping fails (lbry-sdk's rule)."""
        bucket = self.routing.bucket_of(newcomer.node_id)
        for old in bucket.contacts:  # least recently seen first
            if now - old.last_replied >= STALE_AFTER:
                break
        else:
            return
        if old.node_id in self._replacing or len(self._pending) >= self.config.max_pending // 2:
            return
        self._replacing.add(old.node_id)
        rpc_id = self.send_request(old.addr, PING, ping_args(), now, expect_id=old.node_id, internal=True)
        self._pending[rpc_id].replacement = newcomer

    def _on_error(self, msg: ErrorMessage, ip: str, port: int, now: float) -> None:
        p = self._pending.get(msg.rpc_id)
        if p is None or p.addr != (ip, port):  # errors must match IP and port
            self.stats.unmatched += 1
            return
        del self._pending[msg.rpc_id]
        contact = Contact(msg.node_id, ip, port)
        if msg.node_id != self.node_id:
            self.routing.add(contact, now)
        if not p.internal:
            self._events.append(RpcOutcome(msg.rpc_id, error=msg, responder=contact))


def _encode_fv(result: dict[bytes, Any]) -> bytes:
    contacts = result.get(b"contacts")
    if contacts is not None:
        result = dict(result)
        result[b"contacts"] = [[c.node_id, c.ip.encode(), c.port] for c in contacts]
    return encode(result)
