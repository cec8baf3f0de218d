"""The asyncio shell around NodeCore: one UDP socket, the core's timer, and a future per RPC sent.

Policy lives in sans-IO objects fed the loop's time: `NodeCore` (the protocol), `TokenCache` and
`StoreAttempts` (tokens received, the store-retry rule), `IterativeLookup` (lookups), and the schedules the
background workers run (`prism.dht.workers`). Library API for the servers: `DhtNode(peer_port=...)`,
`await start()`, `announce(hashes)`, `await find_peers(hash)`, `await stop(grace)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prism.dht import messages as m
from prism.dht.config import DEFAULT_PEER_PORT, DEFAULT_UDP_PORT, DhtConfig
from prism.dht.core import NodeCore, RpcErrorReply, RpcFailed, RpcOutcome, RpcTimeout
from prism.dht.peerstore import Peer
from prism.dht.persist import load_state, save_state
from prism.dht.routing import Contact
from prism.dht.schedule import AnnounceSchedule, MaintenanceSchedule
from prism.dht.tokens import STORE_TRIES, StoreAttempts, TokenCache, is_invalid_token_error
from prism.dht.workers import Announcer, Maintainer, run_lookup
from prism.hostport import HostPort, bind_socket

log = logging.getLogger("prism.dht")

Addr = tuple[str, int]
__all__ = ["DhtNode", "Peer", "RpcErrorReply", "RpcFailed", "RpcTimeout"]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, node: DhtNode) -> None:
        self.node = node

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        host = addr[0]
        # On a dual-stack socket (--host ::) an IPv4 peer arrives as ::ffff:a.b.c.d; the DHT speaks IPv4.
        self.node._on_datagram(data, (host[7:] if host.startswith("::ffff:") else host, addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error: %s", exc)


class DhtNode:
    """A DHT node on one UDP socket: answers the RPCs, joins through seeds, looks up and announces."""

    def __init__(
        self,
        *,
        node_id: bytes | None = None,
        host: str = "0.0.0.0",
        port: int = DEFAULT_UDP_PORT,
        peer_port: int = DEFAULT_PEER_PORT,
        seeds: Iterable[Addr] = (),
        config: DhtConfig | None = None,
        state_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.config = config or DhtConfig()
        self._requested_id = node_id
        self.host = host
        self._dual_stack = False
        self.port = port
        self.peer_port = peer_port
        self.seeds = list(seeds)
        self.state_path = Path(state_path) if state_path else None
        self.core: NodeCore | None = None
        self.announcer: Announcer | None = None
        self.maintainer: Maintainer | None = None
        self.joined = asyncio.Event()
        self.tokens = TokenCache(self.config.token_cache_ttl)
        self._transport: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._futures: dict[bytes, asyncio.Future[RpcOutcome]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def node_id(self) -> bytes:
        assert self.core is not None, "node not started"
        return self.core.node_id

    @property
    def address(self) -> Addr:
        """The bound (host, port)."""
        assert self._transport is not None, "node not started"
        host, port = self._transport.get_extra_info("sockname")[:2]
        return host, port

    def _now(self) -> float:
        assert self._loop is not None, "node not started"
        return self._loop.time()

    async def start(self, *, join: bool = True) -> None:
        """Bind the UDP socket, then join (in the background), refresh and announce."""
        loop = self._loop = asyncio.get_running_loop()
        node_id, saved = self._requested_id, list[Contact]()
        if self.state_path is not None:
            saved_id, saved = load_state(self.state_path)
            node_id = node_id or saved_id
        node_id = node_id or os.urandom(m.NODE_ID_LENGTH)
        self.core = NodeCore(node_id, self.peer_port, self.config, loop.time())
        await self._bind(loop)
        self.port = self.address[1]
        cfg = self.config
        schedule = AnnounceSchedule(cfg.announce_rate, cfg.reannounce_interval, loop.time())
        self.announcer = Announcer(self, schedule, cfg.announce_concurrency)
        can_join = bool(self.seeds or saved)
        self.maintainer = Maintainer(self, MaintenanceSchedule(cfg, can_join), saved)
        self._schedule_timer()
        self._tasks.append(loop.create_task(self.announcer.run(), name="dht-announcer"))
        self._tasks.append(loop.create_task(self.maintainer.run(), name="dht-refresh"))
        if join and can_join:
            self._tasks.append(loop.create_task(self.maintainer.join_until_joined(), name="dht-join"))
        log.info("dht node %s listening on %s", self.node_id.hex()[:16], HostPort(*self.address))

    async def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        sock = bind_socket(self.host, self.port, socket.SOCK_DGRAM)
        self._dual_stack = sock.family == socket.AF_INET6
        try:
            self._transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
        except BaseException:
            sock.close()
            raise
        with contextlib.suppress(OSError):  # a bigger buffer rides out bursts; the default still works
            self._transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)

    async def stop(self, grace: float = 1.0) -> None:
        """Stop lookups and the announcer, save the routing table, close the socket."""
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)
        self._tasks.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for fut in self._futures.values():
            fut.cancel()
        self._futures.clear()
        if self.core is not None and self.state_path is not None:
            try:
                save_state(self.state_path, self.core.node_id, self.core.routing.contacts())
            except OSError as e:
                log.warning("could not save the routing table to %s: %s", self.state_path, e)
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # --- I/O plumbing ---------------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: Addr) -> None:
        assert self.core is not None
        self.core.datagram_received(data, addr, self._now())
        self._flush()

    def _mapped(self, addr: Addr) -> Addr:
        """An IPv4 address as a dual-stack IPv6 socket needs it."""
        if self._dual_stack and ":" not in addr[0]:
            return (f"::ffff:{addr[0]}", addr[1])
        return addr

    def _flush(self) -> None:
        core = self.core
        assert core is not None
        if core.has_datagrams:
            transport = self._transport
            for data, addr in core.take_datagrams():
                if transport is not None:
                    transport.sendto(data, self._mapped(addr))
        if core.has_events:
            for ev in core.take_events():
                fut = self._futures.pop(ev.rpc_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(ev)
        self._schedule_timer()

    def _schedule_timer(self) -> None:
        assert self.core is not None and self._loop is not None
        at = self.core.get_timer()
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        assert self.core is not None
        self.core.handle_timer(self._now())
        self._flush()

    async def _result(
        self,
        addr: Addr,
        method: bytes,
        args: list[Any],
        *,
        expect_id: bytes | None = None,
        legacy: bool = False,
    ) -> tuple[Any, Contact]:
        """Send a request; its result and responder, or RpcErrorReply / RpcTimeout."""
        fut = self._send(addr, method, args, expect_id=expect_id, legacy=legacy)
        self._flush()
        return self._unwrap(await fut, addr)

    def _send(
        self, addr: Addr, method: bytes, args: list[Any], *, expect_id: bytes | None, legacy: bool = False
    ) -> asyncio.Future[RpcOutcome]:
        """Queue a request (sent at the next `_flush`); the future of its outcome."""
        assert self.core is not None and self._loop is not None
        rpc_id = self.core.send_request(addr, method, args, self._now(), expect_id=expect_id, legacy=legacy)
        fut = self._futures[rpc_id] = self._loop.create_future()
        return fut

    @staticmethod
    def _unwrap(outcome: RpcOutcome, addr: Addr) -> tuple[Any, Contact]:
        if outcome.response is not None and outcome.responder is not None:
            return outcome.response.result, outcome.responder
        if outcome.error is not None:
            raise RpcErrorReply(outcome.error.exc_type, outcome.error.message)
        raise RpcTimeout(f"no answer from {addr[0]}:{addr[1]}")

    # --- single RPCs ----------------------------------------------------------------------------------

    async def ping(self, addr: Addr, expect_id: bytes | None = None) -> Contact:
        """Ping an address; returns the responder as a contact."""
        result, responder = await self._result(addr, m.PING, m.ping_args(), expect_id=expect_id)
        if result != m.PONG:
            raise RpcFailed(f"unexpected ping answer {result!r}")
        return responder

    async def find_node(self, contact: Contact, key: bytes) -> tuple[list[Contact], Contact]:
        args = m.find_node_args(key)
        result, responder = await self._result(contact.addr, m.FIND_NODE, args, expect_id=contact.node_id)
        assert self.core is not None
        return self.core.contacts_from(m.parse_contact_triples(result)), responder

    async def find_value(
        self, contact: Contact, key: bytes, page: int = 0
    ) -> tuple[m.FindValueResult, Contact]:
        """One findValue; the token in the answer is kept for a later store to that node."""
        args = m.find_value_args(key, page)
        result, responder = await self._result(contact.addr, m.FIND_VALUE, args, expect_id=contact.node_id)
        fv = m.parse_find_value_result(result, key)
        if fv.token is not None:
            self.tokens.put(responder.node_id, fv.token, fv.protocol_version, self._now())
        return fv, responder

    async def store(self, contact: Contact, key: bytes, tries: int = STORE_TRIES) -> bool:
        """Announce ourselves as holder of key to one contact, with a token from its findValue answer, in
        the store layout that answer showed it reads (`StoreAttempts` is the rule)."""
        attempts = StoreAttempts(self.tokens, contact.node_id, tries)
        while attempts.next_try():
            token = attempts.cached_token(self._now())
            if token is None:
                try:
                    await self.find_value(contact, key)
                except RpcFailed:
                    return False
                if (token := attempts.fetched_token()) is None:
                    return False
            args = token.store_args(key, self.peer_port, self.node_id)
            try:
                result, _ = await self._result(
                    contact.addr, m.STORE, args, expect_id=contact.node_id, legacy=token.legacy
                )
            except RpcErrorReply as e:
                if attempts.should_retry(e.exc_type, e.message):
                    continue
                return False
            except RpcFailed:
                return False
            return bool(result == m.STORED_OK)
        return False

    # --- lookups and announcing -----------------------------------------------------------------------

    async def iterative_find_node(self, target: bytes) -> list[Contact]:
        """The k contacts closest to target that answered us."""
        return (await run_lookup(self, target, False)).result()

    async def iterative_find_value(self, key: bytes) -> tuple[list[Peer], list[Contact]]:
        """Peers announced for key (empty if none found) and the closest contacts that answered."""
        lk = await run_lookup(self, key, True)
        return [Peer(ip, port, nid) for ip, port, nid in lk.peers], lk.result()

    async def find_peers(self, blob_hash: str | bytes) -> list[Peer]:
        """Who holds this blob, by iterative findValue (plus what was announced to us)."""
        key = m.to_key(blob_hash)
        assert self.core is not None
        found, _ = await self.iterative_find_value(key)
        seen = {p.node_id for p in found}
        for sp in self.core.peers.get(key, self._now()):
            if sp.node_id not in seen and self.core.policy.ip_ok(sp.ip):
                found.append(Peer(sp.ip, sp.tcp_port, sp.node_id))
        return found

    def announce(self, hashes: Iterable[str | bytes]) -> None:
        """Queue blob hashes to be announced now (rate-limited) and re-announced periodically."""
        assert self.announcer is not None, "node not started"
        self.announcer.add(m.to_key(h) for h in hashes)

    def restore_announcements(self, hashes: Iterable[str | bytes]) -> None:
        """Queue hashes announced before a restart: spread over the time the rate needs, after new ones."""
        assert self.announcer is not None, "node not started"
        self.announcer.restore(m.to_key(h) for h in hashes)

    def routing_size(self) -> int:
        """Contacts in the routing table (0 before start)."""
        return 0 if self.core is None else len(self.core.routing)

    def unannounce(self, hashes: Iterable[str | bytes]) -> None:
        assert self.announcer is not None, "node not started"
        self.announcer.remove(m.to_key(h) for h in hashes)

    async def announce_hash(self, key: bytes) -> int:
        """Store ourselves on the k nodes closest to key; returns how many accepted."""
        closest = await self.iterative_find_node(key)
        if not closest:
            return 0
        # Stores to nodes whose token we hold go out at once as bare requests (no task each: this is the
        # announcer's hot path); the others, and a refused token, take `store`'s fetch-and-retry way.
        now = self._now()
        sent: list[tuple[Contact, asyncio.Future[RpcOutcome]]] = []
        slow: list[asyncio.Future[bool]] = []
        for c in closest:
            token = self.tokens.get(c.node_id, now)
            if token is None:
                slow.append(asyncio.ensure_future(self.store(c, key)))
            else:
                args = token.store_args(key, self.peer_port, self.node_id)
                sent.append((c, self._send(c.addr, m.STORE, args, expect_id=c.node_id, legacy=token.legacy)))
        self._flush()
        stored = 0
        try:
            for c, fut in sent:
                outcome = await fut
                if outcome.response is not None:
                    stored += outcome.response.result == m.STORED_OK
                elif outcome.error is not None and is_invalid_token_error(
                    outcome.error.exc_type, outcome.error.message
                ):
                    self.tokens.drop(c.node_id)
                    slow.append(asyncio.ensure_future(self.store(c, key, tries=STORE_TRIES - 1)))
            return stored + sum(await asyncio.gather(*slow))
        finally:
            for t in slow:
                t.cancel()
