"""`prism start` nodes as processes, for the cluster acceptance test and `bench/cluster.py`.

Each node has its own ports on 127.0.0.1 and prints its membership and slices on stdout (to a log file
read here). A DHT node run by the caller is every node's seed; with so few nodes it is among the k
closest to every hash, so the STOREs it receives show who announces what.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pymysql

from prism.cluster.slicing import KeyRange, slice_of
from prism.config import MysqlParams
from prism.dht import messages as m
from prism.dht.config import DhtConfig
from prism.dht.node import DhtNode
from tests.cluster.ports import free_cluster_ports
from tests.conftest import connect, prism_cmd, prism_env

SLICE_LINE = re.compile(r"^slice (\d+) of (\d+): ([0-9a-f]{96})-([0-9a-f]{96}): (\d+) hashes$")
MEMBERSHIP_LINE = re.compile(r"^membership: (\d+) of (\d+): (.*)$")


def free_tcp_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def store_hashes(db: MysqlParams, count: int) -> list[str]:
    """`count` random hashes recorded as stored in blob_ (the blobs themselves are not needed to
    announce them)."""
    hashes = [os.urandom(48).hex() for _ in range(count)]
    conn: pymysql.Connection = connect(db)
    try:
        with conn.cursor() as cur:
            for i in range(0, count, 1000):
                cur.executemany(
                    "INSERT INTO blob_ (hash, is_stored, length) VALUES (%s, 1, 100)",
                    [(h,) for h in hashes[i : i + 1000]],
                )
    finally:
        conn.close()
    return hashes


async def seed_node(port: int = 0) -> DhtNode:
    """A DHT node on 127.0.0.1 that accepts stores from loopback peers (started)."""
    node = DhtNode(host="127.0.0.1", port=port, seeds=[], config=DhtConfig(allow_private_peers=True))
    await node.start(join=False)
    return node


def announcers_of(seed: DhtNode, blob_hash: str) -> set[int]:
    """The TCP (peer) ports the seed holds as announcing `blob_hash`."""
    assert seed.core is not None
    return {p.tcp_port for p in seed.core.peers.get(m.to_key(blob_hash), asyncio.get_running_loop().time())}


class StartProcess:
    """One `prism start` process; `slices()` and `memberships()` read what it printed."""

    def __init__(self, name: str, workdir: Path, conf: Path, seed: str, dht_seed: int, *flags: str) -> None:
        self.name = name
        self.log = workdir / f"{name}.log"
        [self.cluster_port] = free_cluster_ports(1)
        self.peer, self.receiver, self.http, self.metrics, self.h3 = free_tcp_ports(5)
        self.args = [
            "--conf",
            str(conf),
            "start",
            seed,
            "--host",
            "127.0.0.1",
            "--cluster-port",
            str(self.cluster_port),
            "--peer-port",
            str(self.peer),
            "--reflector-port",
            str(self.receiver),
            "--http-peer-port",
            str(self.http),
            "--http3-peer-port",
            str(self.h3),
            "--metrics-port",
            str(self.metrics),
            "--dht-port",
            "0",
            "--dht-seeds",
            f"127.0.0.1:{dht_seed}",
            "--allow-private-peers",
            *flags,
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self._offset = 0

    def start(self) -> StartProcess:
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(prism_cmd(*self.args), stdout=out, stderr=out, env=prism_env())
        return self

    def lines(self) -> list[str]:
        """What this run (since the last start) printed."""
        if not self.log.exists():
            return []
        with open(self.log, "rb") as f:
            f.seek(self._offset)
            return f.read().decode(errors="replace").splitlines()

    def slices(self) -> list[tuple[int, int, KeyRange, int]]:
        """(n, total, range, hashes) of each completed slice read, in order."""
        out = []
        for line in self.lines():
            if match := SLICE_LINE.match(line):
                n, total, start, end, count = match.groups()
                out.append((int(n), int(total), KeyRange(int(start, 16), int(end, 16)), int(count)))
        return out

    def last_slice(self) -> tuple[int, int, KeyRange, int] | None:
        slices = self.slices()
        return slices[-1] if slices else None

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


async def until(condition: object, limit: float, what: str, nodes: list[StartProcess]) -> float:
    """Poll `condition()` every 0.1 s; seconds it took (AssertionError with the nodes' logs after `limit`)."""
    assert callable(condition)
    started = time.monotonic()
    while not condition():
        for node in nodes:
            if node.exited():
                raise AssertionError(f"{node.name} exited:\n" + "\n".join(node.lines()[-30:]))
        if time.monotonic() - started > limit:
            logs = "\n".join(f"--- {n.name}\n" + "\n".join(n.lines()[-15:]) for n in nodes)
            raise AssertionError(f"{what}: not within {limit:.0f} s\n{logs}")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


def in_thirds(nodes: list[StartProcess]) -> bool:
    """Every node's last slice is a different third of the key space."""
    last = [n.last_slice() for n in nodes]
    if any(s is None or s[1] != 3 for s in last):
        return False
    return sorted((s[0], s[2]) for s in last if s) == [(i, slice_of(i, 3)) for i in (1, 2, 3)]


async def start_three(
    nodes: list[StartProcess], root: Path, conf: Path, dht_seed: int, *flags: str, limit: float = 40.0
) -> None:
    """Start nodes A (a new cluster), then B and C joining it, into `nodes`; return once in thirds."""
    first = StartProcess("A", root, conf, "new", dht_seed, *flags).start()
    nodes.append(first)
    await until(lambda: any(ln.startswith("membership:") for ln in first.lines()), limit, "A up", nodes)
    join = f"127.0.0.1:{first.cluster_port}"
    nodes += [StartProcess(x, root, conf, join, dht_seed, *flags).start() for x in "BC"]
    await until(lambda: in_thirds(nodes), limit, "three thirds", nodes)
