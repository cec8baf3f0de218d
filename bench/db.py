"""`has` through the DB-backed store against the limit: bare `SELECT 1` round trips through the same pool.

Usage: python bench/db.py [--callers 64] [--seconds 3] [--rounds 2] [--blobs 20000]
Uses a scratch database (created from schema.sql, dropped at the end) on PRISM_BENCH_MYSQL
(default root@127.0.0.1:3306). Both loads run with the same number of concurrent callers on
the same aiomysql pool, alternating, and the best round of each is reported in queries/s
with p50/p99 latency. Last line: db_has_vs_select1_ratio=<has qps / select 1 qps>.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import sys
import time
from collections.abc import Awaitable, Callable

import pymysql

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prism.config import parse_mysql_dsn
from prism.db import MysqlDatabase, TrackAccess
from prism.store import MemoryStore
from prism.store.db_backed import DBBackedStore

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DSN = os.environ.get("PRISM_BENCH_MYSQL", "root:@tcp(127.0.0.1:3306)/prism_bench")


def admin(params, database: str | None = None) -> pymysql.Connection:
    kw = params.kwargs()
    kw.pop("db")
    return pymysql.connect(**kw, database=database, autocommit=True, connect_timeout=5)


def create_database(params, name: str, n_blobs: int) -> list[str]:
    conn = admin(params)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    conn.close()
    conn = admin(params, name)
    schema = open(os.path.join(REPO, "schema.sql")).read()
    lines = [ln for ln in schema.splitlines() if not ln.strip().startswith("--")]
    hashes = [secrets.token_hex(48) for _ in range(n_blobs)]
    with conn.cursor() as cur:
        for stmt in "\n".join(lines).split(";"):
            if stmt.strip():
                cur.execute(stmt)
        for i in range(0, n_blobs, 1000):
            batch = hashes[i : i + 1000]
            cur.execute(
                "INSERT INTO blob_ (hash, is_stored, length) VALUES "
                + ",".join(["(%s,1,2097152)"] * len(batch)),
                batch,
            )
    conn.close()
    return hashes


async def run_load(
    callers: int, seconds: float, op: Callable[[], Awaitable[object]]
) -> tuple[float, list[float]]:
    """Queries per second and per-call latencies of `callers` concurrent loops over `op`."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        while (t := time.perf_counter()) < deadline:
            await op()
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return len(latencies) / (time.perf_counter() - start), latencies


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


async def bench(args: argparse.Namespace, params, hashes: list[str]) -> None:
    def open_store(coalesce: bool) -> tuple[MysqlDatabase, DBBackedStore]:
        db = MysqlDatabase(
            params, track_access=TrackAccess.STREAMS, max_connections=args.pool, coalesce_has=coalesce
        )
        return db, DBBackedStore(MemoryStore(), db)

    db, store = open_store(True)
    single, single_store = open_store(False)
    await db.start(require=True)
    await single.start(require=True)
    absent = [secrets.token_hex(48) for _ in range(1000)]
    probe = hashes + absent  # ~95% present, as on a busy reflector

    async def has() -> None:
        await store.has(random.choice(probe))

    async def has_one_query_each() -> None:
        await single_store.has(random.choice(probe))

    async def select1() -> None:
        pool = await db.runner.pool()  # the same pool, no prism code in the way
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("SELECT 1")
            await cur.fetchall()

    assert await store.has(hashes[0]) and not await store.has(absent[0])
    assert await single_store.has(hashes[0]) and not await single_store.has(absent[0])
    for op in (has, has_one_query_each):  # warm up: fill the pools
        await run_load(args.callers, 0.5, op)
    loads = {"select1": select1, "has": has, "has_one_query_each": has_one_query_each}
    results: dict[str, list[tuple[float, list[float]]]] = {name: [] for name in loads}
    db.has_queries = db.has_queries_hashes = 0
    cpu0 = time.process_time()
    for _ in range(args.rounds):
        for name, op in loads.items():
            results[name].append(await run_load(args.callers, args.seconds, op))
    cpu = time.process_time() - cpu0
    await db.close()
    await single.close()

    best = {k: max(v, key=lambda r: r[0]) for k, v in results.items()}
    print(f"callers={args.callers} pool={args.pool} seconds={args.seconds} rounds={args.rounds}", end=" ")
    print(f"blobs={len(hashes)} (has asks ~95% present hashes)")
    labels = {"select1": "SELECT 1 (limit)", "has": "store.has", "has_one_query_each": "has, uncoalesced"}
    for name, label in labels.items():
        qps, lat = best[name]
        rounds = ", ".join(f"{r[0]:.0f}" for r in results[name])
        print(
            f"{label:18s} {qps:9.0f} queries/s  p50 {pct(lat, 0.5):6.2f} ms  p99 {pct(lat, 0.99):6.2f} ms"
            f"  (rounds: {rounds})"
        )
    per_query = db.has_queries_hashes / max(1, db.has_queries)
    print(f"store.has coalescing: {db.has_queries} queries for {db.has_queries_hashes} calls", end=" ")
    print(f"({per_query:.1f} per query)")
    total = sum(len(r[1]) for v in results.values() for r in v)
    print(f"client CPU {cpu:.2f} s for {total} calls ({cpu / total * 1e6:.0f} us/call)")
    uncoalesced = best["has_one_query_each"][0] / best["select1"][0]
    print(f"uncoalesced_has_vs_select1_ratio={uncoalesced:.3f} (for reference)")
    print(f"db_has_vs_select1_ratio={best['has'][0] / best['select1'][0]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--pool", type=int, default=16, help="max pool connections")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--blobs", type=int, default=20000)
    args = parser.parse_args()
    base = parse_mysql_dsn(DSN)
    name = f"prism_bench_{secrets.token_hex(4)}"
    hashes = create_database(base, name, args.blobs)
    params = type(base)(base.user, base.password, name, base.host, base.port, base.unix_socket)
    try:
        asyncio.run(bench(args, params, hashes))
    finally:
        conn = admin(base)
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


if __name__ == "__main__":
    main()
