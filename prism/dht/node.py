"""The asyncio shell around NodeCore: a UDP socket, timers, RPC futures, lookups, join, refresh, announcer.

Library API for the servers: `DhtNode(peer_port=...)`, `await start()`, `announce(hashes)`,
`await find_peers(hash)`, `await stop(grace)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import os
import random
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prism.blob import validate_hash
from prism.dht.config import DEFAULT_PEER_PORT, DEFAULT_UDP_PORT, DhtConfig
from prism.dht.core import NodeCore, RpcOutcome
from prism.dht.lookup import IterativeLookup
from prism.dht.messages import (
    FIND_NODE,
    FIND_VALUE,
    NODE_ID_LENGTH,
    PING,
    PONG,
    STORE,
    STORED_OK,
    FindValueResult,
    find_node_args,
    find_value_args,
    parse_contact_triples,
    parse_find_value_result,
    ping_args,
    store_args_flat,
    store_args_legacy,
)
from prism.dht.persist import load_state, save_state
from prism.dht.routing import Contact

log = logging.getLogger("prism.dht")

Addr = tuple[str, int]

TOKEN_CACHE_SIZE = 4096
"""Tokens remembered from other nodes' findValue answers, at most."""
MAX_VALUE_PAGES = 16
"""Pages of peers fetched from one findValue holder, at most (8 peers a page)."""


class RpcFailed(Exception):
    """A DHT request got no answer in time, or an error datagram."""


class RpcTimeout(RpcFailed):
    pass


class RpcErrorReply(RpcFailed):
    def __init__(self, exc_type: bytes, message: bytes) -> None:
        super().__init__(f"{exc_type.decode(errors='replace')}: {message.decode(errors='replace')}")
        self.exc_type = exc_type
        self.message = message


@dataclass(frozen=True, slots=True)
class Peer:
    """A holder of a blob: where to fetch it over the TCP peer protocol."""

    ip: str
    tcp_port: int
    node_id: bytes


def to_key(value: str | bytes) -> bytes:
    """A 48-byte DHT key from a 96-hex blob hash (or the raw bytes)."""
    if isinstance(value, bytes):
        if len(value) != NODE_ID_LENGTH:
            raise ValueError("DHT keys are 48 bytes")
        return value
    return bytes.fromhex(validate_hash(value))


def new_node_id() -> bytes:
    return os.urandom(NODE_ID_LENGTH)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, node: DhtNode) -> None:
        self.node = node

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.node._on_datagram(data, addr)

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
        self.port = port
        self.peer_port = peer_port
        self.seeds = list(seeds)
        self.state_path = Path(state_path) if state_path else None
        self.core: NodeCore | None = None
        self.announcer: Announcer | None = None
        self.joined = asyncio.Event()
        self._transport: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._futures: dict[bytes, asyncio.Future[RpcOutcome]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._tasks: list[asyncio.Task[Any]] = []
        self._saved_contacts: list[Contact] = []
        self._token_cache: dict[bytes, tuple[bytes, int | None, float]] = {}
        self._rng = random.Random()

    # --- lifecycle ------------------------------------------------------------------------------------

    @property
    def node_id(self) -> bytes:
        assert self.core is not None, "node not started"
        return self.core.node_id

    @property
    def address(self) -> Addr:
        """The bound (host, port)."""
        assert self._transport is not None, "node not started"
        return self._transport.get_extra_info("sockname")[:2]

    async def start(self, *, join: bool = True) -> None:
        """Bind the UDP socket, then join (in the background), refresh and announce."""
        loop = self._loop = asyncio.get_running_loop()
        node_id = self._requested_id
        if self.state_path is not None:
            saved_id, self._saved_contacts = load_state(self.state_path)
            if node_id is None:
                node_id = saved_id
        self.core = NodeCore(node_id or new_node_id(), self.peer_port, self.config, loop.time())
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.host, self.port), family=socket.AF_INET
        )
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.port = self.address[1]
        self.announcer = Announcer(self, self.config.announce_rate, self.config.reannounce_interval)
        self._schedule_timer()
        self._tasks.append(loop.create_task(self.announcer.run(), name="dht-announcer"))
        self._tasks.append(loop.create_task(self._refresh_loop(), name="dht-refresh"))
        if join and (self.seeds or self._saved_contacts):
            self._tasks.append(loop.create_task(self._join_loop(), name="dht-join"))
        log.info("dht node %s listening on %s:%d", self.node_id.hex()[:16], *self.address)

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
            if not fut.done():
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

    def _on_datagram(self, data: bytes, addr: Any) -> None:
        core = self.core
        assert core is not None and self._loop is not None
        core.datagram_received(data, addr, self._loop.time())
        self._flush()

    def _flush(self) -> None:
        core = self.core
        assert core is not None
        if core.has_datagrams:
            transport = self._transport
            for data, addr in core.take_datagrams():
                if transport is not None:
                    transport.sendto(data, addr)
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
        assert self.core is not None and self._loop is not None
        self.core.handle_timer(self._loop.time())
        self._flush()

    async def _call(
        self,
        addr: Addr,
        method: bytes,
        args: list[Any],
        *,
        expect_id: bytes | None = None,
        legacy: bool = False,
    ) -> RpcOutcome:
        assert self.core is not None and self._loop is not None
        rpc_id = self.core.send_request(
            addr, method, args, self._loop.time(), expect_id=expect_id, legacy=legacy
        )
        fut: asyncio.Future[RpcOutcome] = self._loop.create_future()
        self._futures[rpc_id] = fut
        self._flush()
        return await fut

    async def _result(self, addr: Addr, method: bytes, args: list[Any], **kw: Any) -> tuple[Any, Contact]:
        outcome = await self._call(addr, method, args, **kw)
        if outcome.response is not None:
            assert outcome.responder is not None
            return outcome.response.result, outcome.responder
        if outcome.error is not None:
            raise RpcErrorReply(outcome.error.exc_type, outcome.error.message)
        raise RpcTimeout(f"no answer from {addr[0]}:{addr[1]}")

    # --- single RPCs ----------------------------------------------------------------------------------

    async def ping(self, addr: Addr, expect_id: bytes | None = None) -> Contact:
        """Ping an address; returns the responder as a contact."""
        result, responder = await self._result(addr, PING, ping_args(), expect_id=expect_id)
        if result != PONG:
            raise RpcFailed(f"unexpected ping answer {result!r}")
        return responder

    def _contacts_from(self, triples: list[tuple[bytes, str, int]]) -> list[Contact]:
        assert self.core is not None
        policy = self.core.policy
        own = self.core.node_id
        return [Contact(i, ip, p) for i, ip, p in triples if i != own and policy.addr_ok(ip, p)]

    async def find_node(self, contact: Contact, key: bytes) -> tuple[list[Contact], Contact]:
        result, responder = await self._result(
            contact.addr, FIND_NODE, find_node_args(key), expect_id=contact.node_id
        )
        return self._contacts_from(parse_contact_triples(result)), responder

    async def find_value(
        self, contact: Contact, key: bytes, page: int = 0
    ) -> tuple[FindValueResult, Contact]:
        result, responder = await self._result(
            contact.addr, FIND_VALUE, find_value_args(key, page), expect_id=contact.node_id
        )
        fv = parse_find_value_result(result, key)
        if fv.token is not None:
            now = self._loop.time()  # type: ignore[union-attr]
            cache = self._token_cache
            if len(cache) >= TOKEN_CACHE_SIZE:
                for nid in [nid for nid, entry in cache.items() if entry[2] < now]:
                    del cache[nid]
                if len(cache) >= TOKEN_CACHE_SIZE:
                    cache.clear()
            cache[responder.node_id] = (fv.token, fv.protocol_version, now + self.config.token_cache_ttl)
        return fv, responder

    async def store(self, contact: Contact, key: bytes) -> bool:
        """Announce ourselves as holder of key to one contact: token from its findValue answer, then store
        in the flat layout if that answer carried protocolVersion (lbry-sdk), else the legacy one."""
        assert self.core is not None and self._loop is not None
        for attempt in range(2):
            cached = self._token_cache.get(contact.node_id)
            if attempt > 0 or cached is None or cached[2] < self._loop.time():
                try:
                    await self.find_value(contact, key)
                except RpcFailed:
                    return False
                cached = self._token_cache.get(contact.node_id)
                if cached is None:
                    return False
            token, version, _ = cached
            legacy = version is None
            make = store_args_legacy if legacy else store_args_flat
            try:
                result, _ = await self._result(
                    contact.addr,
                    STORE,
                    make(key, token, self.peer_port, self.core.node_id),
                    expect_id=contact.node_id,
                    legacy=legacy,
                )
            except RpcErrorReply as e:
                text = (e.exc_type + b" " + e.message).lower()
                if b"invalid token" in text or b"invalid-token" in text:
                    self._token_cache.pop(contact.node_id, None)
                    continue
                return False
            except RpcFailed:
                return False
            return result == STORED_OK
        return False

    # --- iterative lookups ----------------------------------------------------------------------------

    async def _lookup(self, target: bytes, find_value: bool) -> IterativeLookup:
        assert self.core is not None
        core = self.core
        lk = IterativeLookup(
            core.node_id,
            target,
            core.routing.closest(target, 4 * self.config.k),  # spares in case the closest are gone
            find_value=find_value,
            k=self.config.k,
            alpha=self.config.alpha,
        )
        tasks: dict[asyncio.Task[Any], Contact] = {}

        async def probe(c: Contact) -> tuple[list[Contact], Contact, list[tuple[str, int, bytes]] | None]:
            if find_value:
                fv, responder = await self.find_value(c, target)
                peers = list(fv.peers)
                # more than 8 holders: lbry-sdk-style nodes page them (p = number of pages)
                extra_pages = range(1, min(fv.pages, MAX_VALUE_PAGES)) if peers else range(0)
                for page in extra_pages:
                    try:
                        more, _ = await self.find_value(c, target, page)
                    except RpcFailed:
                        break
                    if not more.peers:
                        break
                    peers.extend(more.peers)
                peers = [p for p in peers if core.policy.ip_ok(p[0])]
                return self._contacts_from(fv.contacts), responder, peers
            contacts, responder = await self.find_node(c, target)
            return contacts, responder, None

        try:
            async with asyncio.timeout(self.config.lookup_timeout):
                while not lk.done:
                    for c in lk.next_probes():
                        tasks[asyncio.ensure_future(probe(c))] = c
                    if not tasks:
                        break
                    finished, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    for t in finished:
                        c = tasks.pop(t)
                        try:
                            contacts, responder, peers = t.result()
                        except (Exception, asyncio.CancelledError):
                            lk.on_failure(c)
                        else:
                            lk.on_response(c, responder, contacts, peers)
        except TimeoutError:
            log.debug("lookup for %s timed out", target.hex()[:16])
        finally:
            for t in tasks:
                t.cancel()
        return lk

    async def iterative_find_node(self, target: bytes) -> list[Contact]:
        """The k contacts closest to target that answered us."""
        return (await self._lookup(target, False)).result()

    async def iterative_find_value(self, key: bytes) -> tuple[list[Peer], list[Contact]]:
        """Peers announced for key (empty if none found) and the closest contacts that answered."""
        lk = await self._lookup(key, True)
        return [Peer(ip, port, nid) for ip, port, nid in lk.peers], lk.result()

    async def find_peers(self, blob_hash: str | bytes) -> list[Peer]:
        """Who holds this blob, by iterative findValue (plus what was announced to us)."""
        key = to_key(blob_hash)
        assert self.core is not None and self._loop is not None
        found, _ = await self.iterative_find_value(key)
        seen = {p.node_id for p in found}
        for sp in self.core.peers.get(key, self._loop.time()):
            if sp.node_id not in seen and self.core.policy.ip_ok(sp.ip):
                found.append(Peer(sp.ip, sp.tcp_port, sp.node_id))
        return found

    # --- announcing -----------------------------------------------------------------------------------

    def announce(self, hashes: Iterable[str | bytes]) -> None:
        """Queue blob hashes to be announced now (rate-limited) and re-announced periodically."""
        assert self.announcer is not None, "node not started"
        self.announcer.add(to_key(h) for h in hashes)

    def unannounce(self, hashes: Iterable[str | bytes]) -> None:
        assert self.announcer is not None, "node not started"
        self.announcer.remove(to_key(h) for h in hashes)

    async def announce_hash(self, key: bytes) -> int:
        """Store ourselves on the k nodes closest to key; returns how many accepted."""
        closest = await self.iterative_find_node(key)
        if not closest:
            return 0
        results = await asyncio.gather(*(self.store(c, key) for c in closest))
        return sum(results)

    # --- join and refresh -----------------------------------------------------------------------------

    async def _resolve(self, host: str, port: int) -> Addr | None:
        try:
            socket.inet_aton(host)
            if host.count(".") == 3:
                return (host, port)
        except OSError:
            pass
        assert self._loop is not None
        try:
            infos = await self._loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM)
        except OSError as e:
            log.warning("cannot resolve seed %s: %s", host, e)
            return None
        return infos[0][4][:2] if infos else None

    async def join(self) -> bool:
        """Ping the seeds and saved contacts, then look up our own id. False if nobody answered."""
        assert self.core is not None
        addrs = [a for a in await asyncio.gather(*(self._resolve(h, p) for h, p in self.seeds)) if a]
        pings = [self.ping(a) for a in addrs]
        pings += [self.ping(c.addr, expect_id=c.node_id) for c in self._saved_contacts]
        await asyncio.gather(*pings, return_exceptions=True)
        if len(self.core.routing) == 0:
            log.warning("no nodes responded to initial ping")
            return False
        await self.iterative_find_node(self.core.node_id)
        # Kademlia's join: also refresh the buckets farther away, so the table knows more than our neighbours
        await self.refresh(max_age=0.0)
        self.joined.set()
        log.info("joined the DHT: %d contacts", len(self.core.routing))
        return True

    async def _join_loop(self) -> None:
        while not await self.join():  # noqa: ASYNC110 - a retry loop, not a wait for a condition
            await asyncio.sleep(self.config.join_retry)

    async def refresh(self, max_age: float | None = None) -> None:
        """Look up a random id in each bucket not updated for refresh_age (or max_age)."""
        assert self.core is not None and self._loop is not None
        routing = self.core.routing
        age = self.config.refresh_age if max_age is None else max_age
        targets = []
        for idx in routing.stale_buckets(self._loop.time(), age):
            targets.append(routing.random_id_in_bucket(idx, self._rng))
            routing.mark_refreshed(idx, self._loop.time())
        await asyncio.gather(*(self.iterative_find_node(t) for t in targets))

    async def _refresh_loop(self) -> None:
        while True:
            # a table smaller than k (e.g. joined while the seed knew nobody) is topped up sooner
            small = self.core is not None and len(self.core.routing) < self.config.k
            await asyncio.sleep(self.config.join_retry if small else self.config.refresh_interval)
            try:
                if (
                    self.core is not None
                    and len(self.core.routing) == 0
                    and (self.seeds or self._saved_contacts)
                ):
                    await self.join()
                elif small:
                    await self.iterative_find_node(self.node_id)
                    await self.refresh(max_age=0.0)
                else:
                    await self.refresh()
            except Exception:
                log.exception("routing table refresh failed")


class Announcer:
    """Announces hashes at most `rate` per second and re-announces each every `interval` seconds."""

    def __init__(self, node: DhtNode, rate: float, interval: float, concurrency: int = 16) -> None:
        self.node = node
        self.rate = rate
        self.interval = interval
        self._heap: list[tuple[float, int, bytes]] = []
        self._due: dict[bytes, float] = {}
        self._seq = 0
        self._wake = asyncio.Event()
        self._sem = asyncio.Semaphore(concurrency)
        self._allowance = rate
        self._last = 0.0
        self.rounds: dict[bytes, int] = {}
        """Completed announcements per hash."""
        self._round_done = asyncio.Event()
        self.stored: dict[bytes, int] = {}
        """Nodes that accepted our last announcement, per hash."""
        self._running: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._due)

    def _push(self, key: bytes, at: float) -> None:
        self._due[key] = at
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, key))

    def add(self, keys: Iterable[bytes]) -> None:
        now = asyncio.get_running_loop().time()
        for key in keys:
            self._push(key, now)
        self._wake.set()
        capacity = self.rate * self.interval
        if len(self._due) > capacity:
            log.warning(
                "%d hashes to announce exceed what %.1f/s can re-announce every %.0f s (%d)",
                len(self._due),
                self.rate,
                self.interval,
                capacity,
            )

    def remove(self, keys: Iterable[bytes]) -> None:
        for key in keys:
            self._due.pop(key, None)

    async def _rate_token(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            self._allowance = min(self.rate, self._allowance + (now - self._last) * self.rate)
            self._last = now
            if self._allowance >= 1.0:
                self._allowance -= 1.0
                return
            await asyncio.sleep((1.0 - self._allowance) / self.rate)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._last = loop.time()
        try:
            while True:
                if not self._heap:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                at, _, key = self._heap[0]
                if self._due.get(key) != at:
                    heapq.heappop(self._heap)
                    continue
                delay = at - loop.time()
                if delay > 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
                    continue
                heapq.heappop(self._heap)
                await self._rate_token()
                self._push(key, loop.time() + self.interval)
                await self._sem.acquire()
                task = loop.create_task(self._announce_one(key))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
        finally:
            for t in self._running:
                t.cancel()

    async def wait_rounds(self, key: bytes, rounds: int) -> None:
        """Wait until key has been announced `rounds` times in all."""
        while self.rounds.get(key, 0) < rounds:
            await self._round_done.wait()

    async def _announce_one(self, key: bytes) -> None:
        try:
            n = await self.node.announce_hash(key)
            self.stored[key] = n
            self.rounds[key] = self.rounds.get(key, 0) + 1
            self._round_done.set()
            self._round_done = asyncio.Event()
            log.debug("announced %s to %d nodes", key.hex()[:16], n)
        except Exception:
            log.exception("announce of %s failed", key.hex()[:16])
        finally:
            self._sem.release()
