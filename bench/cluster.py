"""Three `prism start` nodes share announcing 30,000 stored hashes; how fast a lost node is covered.

Usage: python bench/cluster.py [--hashes 30000] [--rate 1000] [--rounds 1]

A local SeaweedFS (started here) and a scratch MariaDB database (PRISM_BENCH_MYSQL, default
root@127.0.0.1:3306) hold the origin; `--hashes` random hashes are recorded as stored. Three nodes
start on 127.0.0.1 (a serf agent each) and slice the key space in thirds; then their one DHT seed,
a node run here that records every STORE, comes up. Prints the time for the cluster to announce every
hash once, then SIGKILLs one node and prints the time from the kill until every hash of its slice has
been announced by one of the others (serf's failure detection, about 7.5 s, is part of it). Last line:
`cluster_reannounce_s=<seconds after the kill>` (the median of the rounds; target: 60 or less).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[0] = str(REPO)  # not bench/, whose http.py would shadow the standard library's

from bench.s3 import DSN, create_database, drop_database  # noqa: E402
from prism.config import MysqlParams, parse_mysql_dsn  # noqa: E402
from tests.cluster.nodes import StartProcess, announcers_of, seed_node, start_three, store_hashes, until  # noqa: E402
from tests.cluster.ports import free_cluster_ports  # noqa: E402
from tests.s3server import SeaweedFS, write_config  # noqa: E402


async def one_round(server: SeaweedFS, db: MysqlParams, args: argparse.Namespace, root: Path) -> float:
    conf = write_config(root / "config.json", server, server.create_bucket(), db)
    hashes = store_hashes(db, args.hashes)
    [seed_port] = free_cluster_ports(1)
    flags = ("--dht-announce-rate", str(args.rate))
    nodes: list[StartProcess] = []
    seed = None
    try:
        await start_three(nodes, root, conf, seed_port, *flags, limit=120.0)
        seed = await seed_node(seed_port)
        took = await until(lambda: all(announcers_of(seed, h) for h in hashes), 600, "all announced", nodes)
        print(f"3 nodes announced {len(hashes)} hashes once in {took:.1f} s (from the DHT seed's start)")
        lost = nodes[2]
        slice_ = lost.last_slice()
        assert slice_ is not None
        lost_hashes = [h for h in hashes if int(h, 16) in slice_[2]]
        live = {n.peer for n in nodes[:2]}
        lost.kill()
        killed = time.monotonic()
        await until(
            lambda: all(announcers_of(seed, h) & live for h in lost_hashes), 600, "covered", nodes[:2]
        )
        reannounce = time.monotonic() - killed
        print(
            f"{len(lost_hashes)} hashes of the killed node re-announced {reannounce:.1f} s after its SIGKILL"
        )
        return reannounce
    finally:
        for node in nodes:
            node.kill()
        if seed is not None:
            await seed.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--hashes", type=int, default=30_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="--dht-announce-rate of each node")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    base = parse_mysql_dsn(DSN)
    results = []
    with tempfile.TemporaryDirectory(prefix="prism-bench-cluster-") as tmp:
        root = Path(tmp)
        server = SeaweedFS(root / "weed")
        server.start()
        try:
            for i in range(args.rounds):
                db = create_database(base)
                try:
                    work = root / f"round{i}"
                    work.mkdir()
                    results.append(asyncio.run(one_round(server, db, args, work)))
                finally:
                    drop_database(base, db.database)
        finally:
            server.stop()
    if len(results) > 1:
        print("rounds: " + ", ".join(f"{r:.1f} s" for r in results))
    print(f"cluster_reannounce_s={statistics.median(results):.1f}")


if __name__ == "__main__":
    main()
