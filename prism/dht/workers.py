"""The node's asyncio drivers: lookups, the announcer and the join/refresh loop.

Each runs a sans-IO object (`IterativeLookup`, `AnnounceSchedule`, `MaintenanceSchedule`) with the loop's
time, and owns only tasks, sleeps and timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prism.dht.config import DEFAULT_ANNOUNCE_CONCURRENCY
from prism.dht.core import RpcFailed
from prism.dht.lookup import IterativeLookup, more_value_pages
from prism.dht.routing import Contact
from prism.dht.schedule import AnnounceSchedule, Maintenance, MaintenanceSchedule, StoreBackOff

if TYPE_CHECKING:
    from prism.dht.node import DhtNode

log = logging.getLogger("prism.dht")

Addr = tuple[str, int]
NO_ROUTES_POLL = 0.5
"""Seconds between two looks at an empty routing table before announcing."""

_Probe = tuple[list[Contact], Contact, list[tuple[str, int, bytes]] | None]


async def resolve_ipv4(host: str, port: int) -> Addr | None:
    """An IPv4 literal as is, else the first IPv4 address of a host name (None, logged, if none)."""
    try:
        socket.inet_aton(host)
        if host.count(".") == 3:
            return (host, port)
    except OSError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM)
    except OSError as e:
        log.warning("cannot resolve seed %s: %s", host, e)
        return None
    if not infos:
        return None
    ip, resolved_port = infos[0][4][:2]
    return str(ip), int(resolved_port)


async def _probe(node: DhtNode, c: Contact, target: bytes, find_value: bool) -> _Probe:
    """One lookup step: findNode, or findValue with every page of peers the holder has."""
    if not find_value:
        contacts, responder = await node.find_node(c, target)
        return contacts, responder, None
    fv, responder = await node.find_value(c, target)
    peers = list(fv.peers)
    for page in more_value_pages(fv):
        try:
            more, _ = await node.find_value(c, target, page)
        except RpcFailed:
            break
        if not more.peers:
            break
        peers.extend(more.peers)
    core = node.core
    assert core is not None
    return core.contacts_from(fv.contacts), responder, [p for p in peers if core.policy.ip_ok(p[0])]


async def run_lookup(node: DhtNode, target: bytes, find_value: bool) -> IterativeLookup:
    """Run an iterative lookup to its end (or the configured timeout) with real probes."""
    assert node.core is not None
    cfg = node.config
    spares = node.core.routing.closest(target, 4 * cfg.k)  # in case the closest are gone
    lk = IterativeLookup(
        node.node_id, target, spares, find_value=find_value, k=cfg.k, alpha=cfg.alpha, bad=node.core.silent
    )
    tasks: dict[asyncio.Future[_Probe], Contact] = {}
    try:
        async with asyncio.timeout(cfg.lookup_timeout):
            while not lk.done:
                for c in lk.next_probes():
                    tasks[asyncio.ensure_future(_probe(node, c, target, find_value))] = c
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


@dataclass(frozen=True, slots=True)
class AnnouncerSnapshot:
    """The announcer's counters, read once per metrics scrape."""

    hashes: int
    """Hashes scheduled (announced and re-announced)."""
    backlog: int
    """Hashes due and not yet announced."""
    announced: int
    """Announcements that at least one node accepted, since start."""
    failed: int
    """Announcements that no node accepted."""
    stores: int
    """Stores accepted, in all."""
    seconds: float
    """Time spent in finished announcements, in all (seconds / announced+failed: mean latency)."""
    routing_peers: int
    """Contacts in the routing table."""


class Announcer:
    """Announces what an `AnnounceSchedule` says when it says, with at most `concurrency` at once.

    Nothing is announced while the routing table is empty, nor while `StoreBackOff` pauses announcing
    because no node accepts our stores.
    """

    def __init__(
        self,
        node: DhtNode,
        schedule: AnnounceSchedule,
        concurrency: int = DEFAULT_ANNOUNCE_CONCURRENCY,
        backoff: StoreBackOff | None = None,
    ) -> None:
        self.node = node
        self.schedule = schedule
        self.concurrency = concurrency
        self.backoff = backoff or StoreBackOff()
        self.rounds: dict[bytes, int] = {}
        """Completed announcements per hash."""
        self.stored: dict[bytes, int] = {}
        """Nodes that accepted our last announcement, per hash."""
        self.announced = self.failed = self.stores = 0
        self.seconds = 0.0
        self._wake = asyncio.Event()
        self._round_done = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self.schedule)

    def add(self, keys: Iterable[bytes]) -> None:
        """New hashes: announced before any re-announcement."""
        self.schedule.add(keys, asyncio.get_running_loop().time())
        self._added()

    def restore(self, keys: Iterable[bytes]) -> None:
        """Hashes held before a restart: announced spread out at random over the time the rate needs."""
        self.schedule.restore(keys, asyncio.get_running_loop().time())
        self._added()

    def _added(self) -> None:
        schedule = self.schedule
        self._wake.set()
        if len(schedule) > schedule.capacity:
            log.warning(
                "%d hashes to announce exceed what %.1f/s can re-announce every %.0f s (%d)",
                len(schedule),
                schedule.limiter.rate,
                schedule.interval,
                schedule.capacity,
            )

    def remove(self, keys: Iterable[bytes]) -> None:
        self.schedule.remove(keys)

    def snapshot(self) -> AnnouncerSnapshot:
        now = asyncio.get_running_loop().time()
        return AnnouncerSnapshot(
            len(self.schedule),
            self.schedule.backlog(now),
            self.announced,
            self.failed,
            self.stores,
            self.seconds,
            self.node.routing_size(),
        )

    def _wait_until(self, now: float) -> float | None:
        """When to start announcements (now or earlier: at once); None: when woken."""
        if self.node.routing_size() == 0:
            return now + NO_ROUTES_POLL
        paused = self.backoff.ready_at(now)
        if paused > now:
            return paused
        return self.schedule.due(now) if len(self._running) < self.concurrency else None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._wake.clear()
                now = loop.time()
                at = self._wait_until(now)
                if at is not None and at <= now:
                    free = self.concurrency - len(self._running)
                    for key in self.schedule.take_ready(now, limit=free):
                        task = loop.create_task(self._announce_one(key))
                        self._running.add(task)
                        task.add_done_callback(self._finished)
                    at = self._wait_until(now)
                    if at is not None and at <= now:
                        continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(at):
                        await self._wake.wait()
        finally:
            for t in self._running:
                t.cancel()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._wake.set()

    async def wait_rounds(self, key: bytes, rounds: int) -> None:
        """Wait until key has been announced `rounds` times in all."""
        while self.rounds.get(key, 0) < rounds:
            await self._round_done.wait()

    async def _announce_one(self, key: bytes) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            n = await self.node.announce_hash(key)
        except Exception:
            log.exception("announce of %s failed", key.hex()[:16])
            n = 0
        now = loop.time()
        self.seconds += now - started
        self.backoff.on_result(n, now)
        self.stored[key] = n
        if n == 0:
            self.failed += 1
            self.schedule.retry(key, self.backoff.retry_at(now))
            log.debug("no node accepted %s", key.hex()[:16])
            return
        self.announced += 1
        self.stores += n
        self.rounds[key] = self.rounds.get(key, 0) + 1
        self._round_done.set()
        self._round_done = asyncio.Event()
        log.debug("announced %s to %d nodes", key.hex()[:16], n)


class Maintainer:
    """Joins through the seeds and saved contacts, then keeps the routing table fresh, as a
    `MaintenanceSchedule` says."""

    def __init__(self, node: DhtNode, schedule: MaintenanceSchedule, saved: list[Contact]) -> None:
        self.node = node
        self.schedule = schedule
        self.saved = saved
        """Contacts from the saved routing table, pinged when joining."""

    def _table_size(self) -> int:
        assert self.node.core is not None
        return len(self.node.core.routing)

    async def join(self) -> bool:
        """Ping the seeds and saved contacts, then look up our own id. False if nobody answered."""
        node = self.node
        addrs = [a for a in await asyncio.gather(*(resolve_ipv4(h, p) for h, p in node.seeds)) if a]
        pings = [node.ping(a) for a in addrs]
        pings += [node.ping(c.addr, expect_id=c.node_id) for c in self.saved]
        await asyncio.gather(*pings, return_exceptions=True)
        if self._table_size() == 0:
            log.warning("no nodes responded to initial ping")
            return False
        await node.iterative_find_node(node.node_id)
        # Kademlia's join: also refresh the buckets farther away, so the table knows more than our neighbours
        await self.refresh(max_age=0.0)
        node.joined.set()
        log.info("joined the DHT: %d contacts", self._table_size())
        return True

    async def join_until_joined(self) -> None:
        while not await self.join():  # noqa: ASYNC110 - a retry loop, not a wait for a condition
            await asyncio.sleep(self.schedule.join_retry)

    async def refresh(self, max_age: float | None = None) -> None:
        """Look up a random id in each bucket not updated for refresh_age (or max_age)."""
        node = self.node
        assert node.core is not None
        now = asyncio.get_running_loop().time()
        targets = self.schedule.refresh_targets(node.core.routing, now, max_age)
        await asyncio.gather(*(node.iterative_find_node(t) for t in targets))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.schedule.delay(self._table_size()))
            try:
                action = self.schedule.action(self._table_size())
                if action is Maintenance.JOIN:
                    await self.join()
                elif action is Maintenance.TOP_UP:
                    await self.node.iterative_find_node(self.node.node_id)
                    await self.refresh(max_age=0.0)
                else:
                    await self.refresh()
            except Exception:
                log.exception("routing table refresh failed")
