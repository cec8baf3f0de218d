"""Announce 20,000 hashes to a network of prism DHT nodes on loopback; print how fast the announcer keeps up.

    python bench/announce.py [--nodes 50] [--node-procs 10] [--hashes 20000] [--concurrency 16]

The network: `--nodes` prism DHT nodes spread over `--node-procs` processes (the first node is the seed).
The announcer is one more process: a `DhtNode` whose `Announcer` gets every hash at once (rate not the
limit: only `--concurrency` announcements run at once). Each announcement is an iterative findNode and a
store on the k closest nodes. Printed: announces per second, CPU seconds of the announcing process per
1,000 announces (and of all the DHT node processes together), stores per announce, the datagrams the
announcer received per announce, the backlog (hashes due and not yet announced) over time, and, as the
reference measured in the same run, the same announcer one announcement at a time (lbry-sdk's way: about
2/s on the real network; reflector.go announces a fixed 10/s). Then a node in this process, one that did not
announce, looks up a sample of 200 announced hashes by iterative findValue: each must return the announcer's
address and peer port. Last line: announce_per_s=<n>. Target: >= 200/s.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import json
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from collections.abc import Coroutine
from typing import Any, TypeVar

from prism.dht import messages as m
from prism.dht.config import DhtConfig
from prism.dht.node import DhtNode

TARGET_PER_S = 200
PEER_PORT = 3333
SAMPLE = 200
THIS_FILE = os.path.abspath(__file__)
T = TypeVar("T")


def bench_config(rate: float = 1e6, concurrency: int = 16) -> DhtConfig:
    # a loopback network: private addresses allowed; newcomers are pinged back at once (as a bootstrap
    # node does), so the network forms in seconds
    return DhtConfig(
        allow_private_peers=True, maybe_ping_delay=0.01, announce_rate=rate, announce_concurrency=concurrency
    )


# --- the DHT nodes (their own processes) --------------------------------------------------------------


async def serve_nodes(count: int, seed: str | None) -> None:
    """Run `count` nodes (the first one the seed, without --seed) until stdin closes; print their ports."""
    seeds = [] if seed is None else [(seed.split(":")[0], int(seed.split(":")[1]))]
    nodes = []
    for _ in range(count):
        node = DhtNode(host="127.0.0.1", port=0, seeds=seeds, config=bench_config())
        await node.start()
        nodes.append(node)
        if not seeds:
            seeds = [node.address]
    print(json.dumps([n.port for n in nodes]), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for node in nodes:
        await node.stop(0.1)


# --- the announcer (its own process) --------------------------------------------------------------------


async def announce(seed: str, hashes: int, concurrency: int, sample_every: float) -> dict[str, object]:
    host, port = seed.split(":")
    node = DhtNode(
        host="127.0.0.1",
        port=0,
        peer_port=PEER_PORT,
        seeds=[(host, int(port))],
        config=bench_config(1e6, concurrency),
    )
    await node.start()
    await asyncio.wait_for(node.joined.wait(), 30)
    announcer = node.announcer
    assert announcer is not None
    keys = [os.urandom(48) for _ in range(hashes)]
    loop = asyncio.get_running_loop()
    cpu0, t0 = time.process_time(), loop.time()
    announcer.add(keys)
    backlog: list[tuple[float, int]] = []
    next_sample = t0
    while len(announcer.rounds) < hashes and loop.time() - t0 < 1800:
        if loop.time() >= next_sample:
            backlog.append((round(loop.time() - t0, 1), announcer.schedule.backlog(loop.time())))
            next_sample += sample_every
        await asyncio.sleep(0.05)
    backlog.append((round(loop.time() - t0, 1), announcer.schedule.backlog(loop.time())))
    wall, cpu = loop.time() - t0, time.process_time() - cpu0
    done = [k for k in keys if k in announcer.rounds]
    result = {
        "announced": len(done),
        "failed": announcer.failed,
        "stores": announcer.stores,
        "wall": wall,
        "cpu": cpu,
        "backlog": backlog,
        "sample": [k.hex() for k in random.sample(done, min(SAMPLE, len(done)))],
        "address": list(node.address),
        "datagrams": dataclasses.asdict(node.core.stats) if node.core is not None else {},
    }
    await node.stop(0.1)
    return result


# --- orchestration ----------------------------------------------------------------------------------------


PROFILE_DIR = ""
"""--profile DIR: every child process writes its cProfile stats there (ROLE-PID.prof)."""


def spawn(*args: str) -> subprocess.Popen[str]:
    extra = ["--profile", PROFILE_DIR] if PROFILE_DIR else []
    return subprocess.Popen(
        [sys.executable, THIS_FILE, *args, *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these (running) processes, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def run_child(role: str, coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, under cProfile when --profile was given."""
    if not PROFILE_DIR:
        return asyncio.run(coro)
    prof = cProfile.Profile(time.process_time)  # CPU time: waits for the scheduler are not our cost
    try:
        return prof.runcall(asyncio.run, coro)
    finally:
        prof.dump_stats(os.path.join(PROFILE_DIR, f"{role}-{os.getpid()}.prof"))


def start_network(nodes: int, procs: int) -> tuple[list[subprocess.Popen[str]], str]:
    per = [nodes // procs + (1 if i < nodes % procs else 0) for i in range(procs)]
    first = spawn("--serve-nodes", str(per[0]))
    assert first.stdout is not None
    seed = f"127.0.0.1:{json.loads(first.stdout.readline())[0]}"
    rest = [spawn("--serve-nodes", str(n), "--seed", seed) for n in per[1:]]
    for p in rest:
        assert p.stdout is not None
        json.loads(p.stdout.readline())
    return [first, *rest], seed


def run_announcer(seed: str, hashes: int, concurrency: int, sample_every: float) -> dict[str, object]:
    args = ["--announcer", seed, "--hashes", str(hashes), "--concurrency", str(concurrency)]
    p = spawn(*args, "--sample-every", str(sample_every))
    out, _ = p.communicate(timeout=2400)
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


async def verify(seed: str, sample: list[str], announcer: tuple[str, int]) -> int:
    """How many of the sample an iterative findValue from a node that did not announce finds."""
    host, port = seed.split(":")
    node = DhtNode(host="127.0.0.1", port=0, seeds=[(host, int(port))], config=bench_config())
    await node.start()
    try:
        await asyncio.wait_for(node.joined.wait(), 30)
        sem = asyncio.Semaphore(16)

        async def found(key: str) -> bool:
            async with sem:
                peers, _ = await node.iterative_find_value(m.to_key(key))
            return any((p.ip, p.tcp_port) == (announcer[0], PEER_PORT) for p in peers)

        return sum(await asyncio.gather(*(found(k) for k in sample)))
    finally:
        await node.stop(0.1)


def report(main: dict[str, object], ref: dict[str, object], found: int, args: argparse.Namespace) -> None:
    def per_s(r: dict[str, object]) -> float:
        return float(r["announced"]) / float(r["wall"])  # type: ignore[arg-type]

    def cpu_per_k(r: dict[str, object]) -> float:
        return float(r["cpu"]) / max(1, int(r["announced"])) * 1000  # type: ignore[call-overload]

    def stores(r: dict[str, object]) -> float:
        return int(r["stores"]) / max(1, int(r["announced"]))  # type: ignore[call-overload]

    print(f"{args.nodes} DHT nodes in {args.node_procs} processes; announcer in its own process")
    print(f"{'':34}{'concurrency ' + str(args.concurrency):>20}{'one at a time (ref)':>22}")
    print(f"{'hashes announced':34}{main['announced']:>20,}{ref['announced']:>22,}")
    print(f"{'announces per second':34}{per_s(main):>20,.1f}{per_s(ref):>22,.1f}")
    print(f"{'announcer CPU s per 1,000':34}{cpu_per_k(main):>20.2f}{cpu_per_k(ref):>22.2f}")
    nodes_per_k = float(main["node_cpu"]) / max(1, int(main["announced"])) * 1000  # type: ignore[arg-type, call-overload]
    print(f"{'DHT nodes CPU s per 1,000 (all)':34}{nodes_per_k:>20.2f}{'':>22}")
    ceiling = (1000 / cpu_per_k(main), 1000 / cpu_per_k(ref))
    print(f"{'ceiling: 1 announcer core (per s)':34}{ceiling[0]:>20,.0f}{ceiling[1]:>22,.0f}")
    print(f"{'stores per announce':34}{stores(main):>20.2f}{stores(ref):>22.2f}")
    print(f"{'announcements no node accepted':34}{main['failed']:>20,}{ref['failed']:>22,}")
    dgrams = main["datagrams"]
    assert isinstance(dgrams, dict)
    n = max(1, int(main["announced"]) + int(main["failed"]))  # type: ignore[call-overload]
    print(
        "announcer datagrams per announce: " + ", ".join(f"{k} {v / n:.1f}" for k, v in dgrams.items() if v)
    )
    print("backlog over time (s: hashes due, not yet announced):")
    points = main["backlog"]
    assert isinstance(points, list)
    step = max(1, len(points) // 12)
    shown = points[::step] + ([points[-1]] if (len(points) - 1) % step else [])
    print("  " + "  ".join(f"{t:.0f}s:{n}" for t, n in shown))
    sample = main["sample"]
    assert isinstance(sample, list)
    print(f"found by iterative findValue from another node: {found} of {len(sample)}")
    rate = per_s(main)
    print(f"target >= {TARGET_PER_S}/s: {'met' if rate >= TARGET_PER_S else 'NOT met'}")
    print(f"announce_per_s={rate:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--node-procs", type=int, default=10)
    ap.add_argument("--hashes", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--reference-hashes", type=int, default=100)
    ap.add_argument("--sample-every", type=float, default=2.0, help=argparse.SUPPRESS)
    ap.add_argument("--serve-nodes", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--seed", help=argparse.SUPPRESS)
    ap.add_argument("--announcer", metavar="SEED", help=argparse.SUPPRESS)
    ap.add_argument("--profile", metavar="DIR", default="", help="write each process's cProfile stats to DIR")
    args = ap.parse_args()
    global PROFILE_DIR
    PROFILE_DIR = os.path.abspath(args.profile) if args.profile else ""
    if args.serve_nodes:
        run_child("nodes", serve_nodes(args.serve_nodes, args.seed))
        return
    if args.announcer:
        res = run_child(
            "announcer", announce(args.announcer, args.hashes, args.concurrency, args.sample_every)
        )
        print(json.dumps(res), flush=True)
        return
    procs, seed = start_network(args.nodes, args.node_procs)
    try:
        time.sleep(3.0)  # let the tables fill
        node_cpu = cpu_seconds([p.pid for p in procs])
        res = run_announcer(seed, args.hashes, args.concurrency, args.sample_every)
        res["node_cpu"] = cpu_seconds([p.pid for p in procs]) - node_cpu
        # after the main run: its stopped node then slows the reference's lookups, not the other way round
        ref = run_announcer(seed, args.reference_hashes, 1, 1.0)
        address = res["address"]
        sample = res["sample"]
        assert isinstance(address, list) and isinstance(sample, list)
        found = asyncio.run(verify(seed, sample, (str(address[0]), int(address[1]))))
    finally:
        for p in procs:
            assert p.stdin is not None
            p.stdin.close()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    report(res, ref, found, args)


if __name__ == "__main__":
    main()
