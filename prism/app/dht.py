"""`prism dht connect|bootstrap`: a DHT node (and its JSON-RPC front) until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prism.app.supervisor import Call, Supervisor
from prism.dht.config import DEFAULT_ANNOUNCE_CONCURRENCY, DEFAULT_ANNOUNCE_RATE, DEFAULT_SEEDS, DhtConfig
from prism.dht.node import DhtNode
from prism.dht.rpc import DhtRpcServer
from prism.dht.workers import AnnouncerSnapshot
from prism.hostport import HostPort
from prism.store.base import BlobRef, BlobStore, Holdings, StoreError, holdings_in_chain
from prism.stream import SdBlob, SdBlobError

log = logging.getLogger("prism.dht")

BOOTSTRAP_PING_DELAY = 0.001
"""A bootstrap node pings every unknown requester at once (reflector.go: initialPingInterval 1 ms)."""
STOP_GRACE = 2.0


@dataclass(slots=True)
class DhtOptions:
    """What `prism dht` was asked to run."""

    mode: str
    """`connect` (joins through lbry-sdk's known nodes by default) or `bootstrap` (a seed for others)."""
    state_path: Path
    node_id: bytes | None = None
    host: str = "0.0.0.0"
    port: int = 4567
    rpc_port: int = 0
    """0: no JSON-RPC."""
    seeds: list[HostPort] | None = None
    """None: the mode's default."""
    allow_private_peers: bool = False
    peer_port: int = 3333


def build_node(opts: DhtOptions) -> DhtNode:
    config = DhtConfig(allow_private_peers=opts.allow_private_peers)
    seeds = opts.seeds
    if opts.mode == "bootstrap":
        config.maybe_ping_delay = BOOTSTRAP_PING_DELAY
        seeds = seeds or []
    elif seeds is None:
        seeds = [HostPort(h, p) for h, p in DEFAULT_SEEDS]
    return DhtNode(
        node_id=opts.node_id,
        host=opts.host,
        port=opts.port,
        peer_port=opts.peer_port,
        seeds=seeds,
        config=config,
        state_path=opts.state_path,
    )


async def run_dht(opts: DhtOptions) -> None:
    """Run one node until SIGINT or SIGTERM; the routing table is saved to state_path on the way out.

    Raises StartupError (naming the flag) when a port cannot be bound.
    """
    node = build_node(opts)

    async def show_node() -> None:
        print(f"node id: {node.node_id.hex()}", flush=True)
        print(f"udp: {node.address[0]}:{node.address[1]}", flush=True)

    supervisor = Supervisor(grace=STOP_GRACE)
    supervisor.add("dht node", node, "--port")
    supervisor.add("ready", Call(start=show_node))
    if opts.rpc_port:
        # On the node's --host, not every interface: the JSON-RPC is unauthenticated.
        rpc = DhtRpcServer(node, opts.host, opts.rpc_port)

        async def show_rpc() -> None:
            print(f"json-rpc: {HostPort(opts.host, rpc.port)}", flush=True)

        supervisor.add("json-rpc server", rpc, "--rpcPort")
        supervisor.add("json-rpc ready", Call(start=show_rpc))
    await supervisor.run()


# -- the servers' DHT node: `--dht-port` of prism reflector, peer and test ---------------------------

ANNOUNCE_CHOICES = ("sd-head", "all")
SD_BLOB_MAX = 1 << 20
"""Bigger blobs are content blobs: not read to find out whether they are sd blobs."""


@dataclass(slots=True)
class DhtAnnounceOptions:
    """The `--dht-*` flags of the servers."""

    port: int = 0
    """UDP port of the node; 0: no DHT node (the default)."""
    seeds: list[HostPort] | None = None
    """None: LBRY's standard seeds."""
    announce: str = "sd-head"
    """`sd-head`: sd blobs and the first content blob of each stream (as lbrynet); `all`: every blob."""
    allow_private_peers: bool = False
    rate: float = DEFAULT_ANNOUNCE_RATE
    concurrency: int = DEFAULT_ANNOUNCE_CONCURRENCY
    host: str = "0.0.0.0"


def announcing_node(opts: DhtAnnounceOptions, peer_port: int) -> DhtNode:
    """The DHT node of a server's `--dht-*` flags (not started), announcing `peer_port`."""
    config = DhtConfig(
        allow_private_peers=opts.allow_private_peers,
        announce_rate=opts.rate,
        announce_concurrency=opts.concurrency,
    )
    seeds = opts.seeds if opts.seeds is not None else [HostPort(h, p) for h, p in DEFAULT_SEEDS]
    return DhtNode(host=opts.host, port=opts.port, peer_port=peer_port, seeds=seeds, config=config)


def _first_byte(ref: BlobRef) -> bytes:
    if ref.data is not None:
        return ref.data[:1]
    return os.pread(ref.file.fileno(), 1, 0) if ref.file is not None else b""


async def _sd_blob(store: Holdings, blob_hash: str) -> SdBlob | None:
    """The blob parsed as an sd blob; None for a content blob (or a blob gone meanwhile)."""
    try:
        ref = await store.get(blob_hash)
    except (StoreError, OSError):
        return None
    with ref:
        try:
            # sd blobs are JSON; encrypted content blobs start at random: one byte tells most apart
            if ref.size > SD_BLOB_MAX or _first_byte(ref) != b"{":
                return None
            data = ref.read()
        except (StoreError, OSError):
            return None
    try:
        return SdBlob.parse(data)
    except SdBlobError:
        return None


class AnnouncingNode:
    """A server's DHT node (a Supervisor component): announces what the store chain holds.

    What is announced comes from the chain's `Holdings` stores (`holdings_in_chain`): at start their
    listing, spread out (a restart is no burst); then each blob stored, at once (new hashes go first);
    a blob deleted or evicted is no longer announced. The announced TCP port is `peer_port()`, read at
    start (after the peer server has bound its port).
    """

    def __init__(self, opts: DhtAnnounceOptions, store: BlobStore, peer_port: Callable[[], int]) -> None:
        self.opts = opts
        self.store = store
        self.peer_port = peer_port
        self.node: DhtNode | None = None
        self.holdings = holdings_in_chain(store)
        self._heads: dict[str, str] = {}
        """sd hash -> its first content blob, for streams whose sd blob is held (sd-head)."""
        self._head_of: dict[str, str] = {}
        """First content blob -> its sd hash."""
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        opts = self.opts
        node = announcing_node(opts, self.peer_port())
        await node.start()
        self.node = node
        if not self.holdings:
            log.warning("--dht-port: no store of this server lists its blobs; nothing will be announced")
        for holder in self.holdings:
            holder.watch_holdings(functools.partial(self._changed, holder))
        self._spawn(self._announce_listing())
        log.info(
            "DHT node on udp %s:%d announces peer port %d (%s)", *node.address, node.peer_port, opts.announce
        )

    async def stop(self, grace: float) -> None:
        for t in self._tasks:
            t.cancel()
        if self.node is not None:
            await self.node.stop(min(grace, 1.0))

    def snapshot(self) -> AnnouncerSnapshot | None:
        """The announcer's counters (None before start)."""
        node = self.node
        return None if node is None or node.announcer is None else node.announcer.snapshot()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _announce_listing(self) -> None:
        """Everything held at start, announced spread out (these were announced before the restart)."""
        selected: list[str] = []
        total = 0
        for holder in self.holdings:
            try:
                hashes = await holder.list_hashes()
            except (StoreError, OSError) as e:
                log.warning("cannot list the blobs to announce: %s", e)
                continue
            total += len(hashes)
            if self.opts.announce == "all":
                selected += hashes
                continue
            held = set(hashes)
            for blob_hash in hashes:
                selected += [h for h in await self._sd_and_head(holder, blob_hash) if h in held]
        assert self.node is not None
        self.node.restore_announcements(selected)
        log.info("announcing %d of %d blobs held", len(selected), total)

    async def _sd_and_head(self, holder: Holdings, blob_hash: str) -> list[str]:
        """[sd hash, first content blob] if this is an sd blob (remembering the head), else []."""
        sd = await _sd_blob(holder, blob_hash)
        if sd is None:
            return []
        head = sd.content_blobs[0].blob_hash if sd.content_blobs else None
        if head is None:
            return [blob_hash]
        self._heads[blob_hash] = head
        self._head_of[head] = blob_hash
        return [blob_hash, head]

    def _changed(self, holder: Holdings, blob_hash: str, held: bool) -> None:
        node = self.node
        if node is None:
            return
        if not held:
            head = self._heads.pop(blob_hash, None)
            node.unannounce([blob_hash] if head is None else [blob_hash, head])
        elif self.opts.announce == "all" or blob_hash in self._head_of:
            node.announce([blob_hash])
        else:
            self._spawn(self._announce_new(holder, blob_hash))

    async def _announce_new(self, holder: Holdings, blob_hash: str) -> None:
        """A blob just stored: announce it if it is an sd blob (with its head, if held already)."""
        found = await self._sd_and_head(holder, blob_hash)
        if found:
            assert self.node is not None
            head_held = len(found) > 1 and await holder.has(found[1])
            self.node.announce(found if head_held else found[:1])
