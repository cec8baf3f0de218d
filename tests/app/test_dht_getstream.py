"""Peers found on the DHT, and several peers at once (issue 14's acceptance checks).

- A `prism reflector --dht-port` among several prism DHT nodes receives a stream through `prism send`;
  another node's iterative findValue soon returns the reflector's address and peer port; then
  `prism getstream SDHASH --dht-seeds ...` (no address) downloads it byte-identical.
- `prism getstream SDHASH --peer A --peer B --peer C` where one peer serves a corrupted blob and one
  disappears mid-stream: the file is still byte-identical and the bad peer is named in the log.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path

import pytest

from prism.blob import sha384_hex
from prism.dht import messages as m
from prism.dht.config import DhtConfig
from prism.dht.node import DhtNode
from prism.peer.server import PeerServer
from prism.store.base import BlobRef
from prism.store.disk import DiskStore
from tests.app.test_getstream import put_stream
from tests.app.test_reflector_e2e import Node, free_ports
from tests.conftest import prism_cmd, prism_env

pytestmark = pytest.mark.slow


async def run_prism(*args: str, limit: float = 60.0) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *prism_cmd(*args), env=prism_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(f"prism {' '.join(args)} did not finish:\n{err.decode()[-3000:]}") from None
    assert proc.returncode is not None
    return proc.returncode, out, err


async def dht_network(n: int) -> list[DhtNode]:
    """n prism DHT nodes on loopback: the first a seed for the others, all joined."""
    config = DhtConfig(allow_private_peers=True, maybe_ping_delay=0.01)
    seed = DhtNode(host="127.0.0.1", port=0, seeds=[], config=config)
    await seed.start()
    nodes = [seed]
    for _ in range(n - 1):
        node = DhtNode(host="127.0.0.1", port=0, seeds=[seed.address], config=config)
        await node.start()
        nodes.append(node)
    async with asyncio.timeout(20):
        for node in nodes[1:]:
            await node.joined.wait()
    return nodes


async def test_reflector_announces_a_received_stream_and_getstream_finds_it(tmp_path: Path) -> None:
    nodes = await dht_network(5)
    seed = f"127.0.0.1:{nodes[0].port}"
    conf = tmp_path / "config.json"
    conf.write_text(json.dumps({"protected_list_url": ""}))
    (dht_port,) = free_ports(1, socket.SOCK_DGRAM)
    store = tmp_path / "store"
    dht_flags = ["--dht-port", str(dht_port), "--dht-seeds", seed, "--allow-private-peers"]
    refl = Node("R", tmp_path, conf, "--store-path", str(store), "--disk-cache", "", *dht_flags)
    source = tmp_path / "video.bin"
    data = os.urandom(3 * 2_000_000 + 17)
    source.write_bytes(data)
    try:
        await asyncio.to_thread(refl.start)
        code, out, err = await run_prism("--conf", "none", "send", f"127.0.0.1:{refl.receiver}", str(source))
        assert code == 0, err.decode()
        sent = asyncio.get_running_loop().time()
        sd_hash = json.loads(out)["sd_hash"]
        finder = nodes[-1]
        found: list[tuple[str, int]] = []
        while ("127.0.0.1", refl.tcp) not in found:
            assert asyncio.get_running_loop().time() - sent < 10.0, f"not found in 10 s: {found}"
            peers, _ = await finder.iterative_find_value(m.to_key(sd_hash))
            found = [(p.ip, p.tcp_port) for p in peers]
            await asyncio.sleep(0.2)
        out_dir = tmp_path / "out"
        code, out, err = await run_prism(
            "--conf", "none", "getstream", sd_hash, "--dht-seeds", seed, "--allow-private-peers",
            "--out", str(out_dir), "--blob-dir", str(tmp_path / "blobs"),
        )  # fmt: skip
        assert code == 0, err.decode()
        assert Path(out.decode().strip()).read_bytes() == data
        assert f"127.0.0.1:{refl.tcp} added" in err.decode()
    finally:
        refl.kill()
        for node in nodes:
            await node.stop()
    assert "DHT node on udp" in refl.log.read_text()


class _Corrupt:
    """Serves every content blob but the sd blob with one byte flipped (a peer sending wrong data)."""

    def __init__(self, inner: DiskStore, sd_hash: str) -> None:
        self.inner, self.sd_hash, self.name = inner, sd_hash, "corrupt"

    async def has(self, blob_hash: str) -> bool:
        return await self.inner.has(blob_hash)

    async def get(self, blob_hash: str) -> BlobRef:
        with await self.inner.get(blob_hash) as ref:
            data = ref.read()
        if blob_hash != self.sd_hash:
            data = bytes([data[0] ^ 1]) + data[1:]
        return BlobRef.from_bytes(blob_hash, data, ref.trace)


class _Vanishing:
    """Serves `serve` blobs, then its server stops (a peer that goes away mid-stream)."""

    def __init__(self, inner: DiskStore, serve: int) -> None:
        self.inner, self.serve, self.name = inner, serve, "vanishing"
        self.server: PeerServer | None = None

    async def has(self, blob_hash: str) -> bool:
        return await self.inner.has(blob_hash)

    async def get(self, blob_hash: str) -> BlobRef:
        self.serve -= 1
        if self.serve < 0 and self.server is not None:
            server, self.server = self.server, None
            asyncio.get_running_loop().create_task(server.stop(0.0))
            await asyncio.sleep(3600)  # never answers: the connection is cut
        return await self.inner.get(blob_hash)


async def test_getstream_from_three_peers_survives_a_corrupt_and_a_vanishing_peer(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "served")
    data = os.urandom(8 * 2_000_000 + 3)
    sd_hash, _ = put_stream(store, data, "film.bin")
    vanishing = _Vanishing(store, serve=2)
    servers = [
        PeerServer(store, "127.0.0.1", 0),
        PeerServer(_Corrupt(store, sd_hash), "127.0.0.1", 0),  # type: ignore[arg-type]
        PeerServer(vanishing, "127.0.0.1", 0),  # type: ignore[arg-type]
    ]
    vanishing.server = servers[2]
    for s in servers:
        await s.start()
    good, corrupt, gone = (f"127.0.0.1:{s.port}" for s in servers)
    try:
        code, out, err = await run_prism(
            "--conf", "none", "getstream", sd_hash, "--peer", corrupt, "--peer", gone, "--peer", good,
            "--timeout", "2", "--parallel", "3", "--out", str(tmp_path / "out"),
            "--blob-dir", str(tmp_path / "blobs"),
        )  # fmt: skip
    finally:
        for s in servers:
            await s.stop(0.0)
    log = err.decode()
    assert code == 0, log
    assert Path(out.decode().strip()).read_bytes() == data
    assert f"dropping peer {corrupt}" in log and "hash" in log.split(f"dropping peer {corrupt}")[1][:200]
    assert f"dropping peer {gone}" in log
    assert f"dropping peer {good}" not in log


async def test_a_restart_with_1000_blobs_announces_no_faster_than_the_rate(tmp_path: Path) -> None:
    """1,000 blobs already held at start are spread out: the DHT sees at most the configured rate."""
    nodes = await dht_network(4)
    store = DiskStore(tmp_path / "store")
    held: set[str] = set()
    for i in range(1000):
        blob = os.urandom(64) + i.to_bytes(4, "big")
        h = sha384_hex(blob)
        store.write_blob(h, blob)
        held.add(h)
    conf = tmp_path / "config.json"
    conf.write_text(json.dumps({"protected_list_url": ""}))
    (dht_port,) = free_ports(1, socket.SOCK_DGRAM)
    rate = 10
    refl = Node(
        "R", tmp_path, conf, "--store-path", str(store.root), "--disk-cache", "", "--dht-port", str(dht_port),
        "--dht-seeds", f"127.0.0.1:{nodes[0].port}", "--allow-private-peers", "--dht-announce", "all",
        "--dht-announce-rate", str(rate),
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    started = loop.time()
    counts: list[tuple[float, int]] = []
    try:
        await asyncio.to_thread(refl.start)
        while loop.time() - started < 20.0:
            await asyncio.sleep(1.0)
            announced = {k.hex() for node in nodes for k in node.core.peers.keys()}  # type: ignore[union-attr]
            assert announced <= held
            counts.append((loop.time() - started, len(announced)))
    finally:
        refl.kill()
        for node in nodes:
            await node.stop()
    for elapsed, n in counts:  # the burst of `rate`, then `rate` a second at most
        assert n <= rate + rate * elapsed, counts
    print("announced over time:", counts)
    assert counts[-1][1] >= 30, counts  # it does announce, spread over ~100 s
    assert counts[-1][1] < 400, counts
