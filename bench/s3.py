"""The S3 origin against the raw S3 client, on a local SeaweedFS (started here) and MariaDB.

Usage: python bench/s3.py [--blobs 200] [--size 2097152] [--rounds 1] [--cache SPEC]

The same blobs go (a) through the raw aiobotocore client alone (PUT with 8 in flight, then GET
with 16 in flight), (b) through `prism upload --workers 8` (a subprocess over S3 + DB; wall time
including its start, and the rate it reports itself), and (c) through `prism reflector`'s HTTP
server (S3 + DB origin, empty disk cache, so every GET is a miss; 16 in flight from this
process). For reference the raw GETs are timed again with a SHA-384 check of each blob, the
least work a verified miss does, and once more also writing each blob to a file in the same
thread (no fsync), the least work a miss that fills a disk cache does before it forwards the
blob: on 2 cores these bound (c). The CPU seconds the reflector and SeaweedFS spent during (c)
show whether it was CPU-bound. `--cache ""` runs (c) without a disk cache. Prints MB/s and
`s3_miss_vs_raw_ratio=<(c)/(a) GET>`, `s3_miss_bound_ratio=<GET+sha384+write/(a) GET>`, then
last `s3_upload_vs_raw_ratio=<(b)/(a) PUT>`.
Scratch buckets and a scratch database (PRISM_BENCH_MYSQL, default root@127.0.0.1:3306) are
dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[0] = str(REPO)  # not bench/, whose http.py would shadow the standard library's

import aiohttp  # noqa: E402
import pymysql  # noqa: E402

from prism.blob import sha384_hex  # noqa: E402
from prism.config import MysqlParams, parse_mysql_dsn  # noqa: E402
from tests.s3server import SeaweedFS, write_config  # noqa: E402

DSN = os.environ.get("PRISM_BENCH_MYSQL", "root:@tcp(127.0.0.1:3306)/prism_bench")
MB = 1e6


def admin(params: MysqlParams, database: str | None = None) -> pymysql.Connection:
    kw = params.kwargs()
    kw.pop("db")
    return pymysql.connect(**kw, database=database, autocommit=True, connect_timeout=5)


def create_database(base: MysqlParams) -> MysqlParams:
    name = f"prism_bench_{secrets.token_hex(4)}"
    conn = admin(base)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    conn.close()
    conn = admin(base, name)
    lines = [ln for ln in (REPO / "schema.sql").read_text().splitlines() if not ln.strip().startswith("--")]
    with conn.cursor() as cur:
        for stmt in "\n".join(lines).split(";"):
            if stmt.strip():
                cur.execute(stmt)
    conn.close()
    return MysqlParams(base.user, base.password, name, base.host, base.port, base.unix_socket)


def drop_database(base: MysqlParams, name: str) -> None:
    conn = admin(base)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    conn.close()


async def in_flight(n: int, items: list[str], op) -> None:  # type: ignore[no-untyped-def]
    queue = iter(items)

    async def worker() -> None:
        for item in queue:
            await op(item)

    await asyncio.gather(*(worker() for _ in range(n)))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process `pid` has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def check_and_write(h: str, data: bytes, path: Path) -> None:
    """What a cache fill does with a blob: check its SHA-384, write it to a file (no fsync)."""
    assert sha384_hex(data) == h
    path.write_bytes(data)


async def raw(server: SeaweedFS, bucket: str, blobs: dict[str, bytes], scratch: Path) -> list[float]:
    """(a): seconds to PUT every blob with 8 in flight, then to GET them with 16 in flight, then
    to GET them again checking each SHA-384 (in a thread, as prism does): the work a miss must do;
    then again also writing each to a file in `scratch`: the work of a miss that fills a cache."""
    from aiobotocore.session import get_session
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path"},
        max_pool_connections=64,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    conf = server.config(bucket)
    async with get_session().create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url=server.endpoint,
        aws_access_key_id=conf["aws_id"],
        aws_secret_access_key=conf["aws_secret"],
        config=config,
    ) as client:

        async def put(h: str) -> None:
            await client.put_object(Bucket=bucket, Key=h, Body=blobs[h], ACL="public-read")

        async def fetch(h: str) -> bytes:
            r = await client.get_object(Bucket=bucket, Key=h)
            async with r["Body"] as body:
                return bytes(await body.read())

        async def get(h: str) -> None:
            assert len(await fetch(h)) == len(blobs[h])

        async def get_verified(h: str) -> None:
            assert await asyncio.to_thread(sha384_hex, await fetch(h)) == h

        async def get_written(h: str) -> None:
            await asyncio.to_thread(check_and_write, h, await fetch(h), scratch / h)

        scratch.mkdir(exist_ok=True)
        seconds = []
        for n, op in ((8, put), (16, get), (16, get_verified), (16, get_written)):
            start = time.perf_counter()
            await in_flight(n, list(blobs), op)
            seconds.append(time.perf_counter() - start)
        for p in scratch.iterdir():
            p.unlink()
        return seconds


def prism(*args: str) -> list[str]:
    return [sys.executable, "-m", "prism", *args]


def prism_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def upload(conf: Path, directory: Path) -> tuple[float, float]:
    """(b): wall seconds of `prism upload --workers 8`, and the MB/s it reports (without its start)."""
    start = time.perf_counter()
    done = subprocess.run(
        prism("--conf", str(conf), "upload", str(directory), "--workers", "8"),
        env=prism_env(),
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"prism upload failed: {done.stderr[-2000:]}")
    reported = re.search(r"\(([0-9.]+) MB/s\)", done.stdout)
    return elapsed, float(reported.group(1)) if reported else 0.0


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def misses(
    conf: Path, workdir: Path, hashes: list[str], size: int, cache: str, server_pid: int
) -> tuple[float, float, float]:
    """(c): seconds to GET every blob through a fresh reflector's HTTP server, 16 in flight, and
    the CPU seconds the reflector and the S3 server (`server_pid`) used meanwhile."""
    http = free_port()
    flags = ["--host", "127.0.0.1", "--disable-uploads", "--use-db=true"]
    flags += ["--http-peer-port", str(http), "--tcp-peer-port", str(free_port())]
    flags += ["--http3-peer-port", str(free_port(socket.SOCK_DGRAM)), "--metrics-port", str(free_port())]
    flags += ["--disk-cache", cache.replace("DIR", str(workdir / "cache"))]
    log = open(workdir / "reflector.log", "wb")
    proc = await asyncio.create_subprocess_exec(
        *prism("--conf", str(conf), "reflector", *flags), stdout=log, stderr=log, env=prism_env()
    )
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", http), 0.2).close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        async with aiohttp.ClientSession() as session:

            async def get(h: str) -> None:
                async with session.get(f"http://127.0.0.1:{http}/blob", params={"hash": h}) as r:
                    body = await r.read()
                    assert r.status == 200 and len(body) == size, r.status

            cpu = cpu_seconds(proc.pid), cpu_seconds(server_pid)
            start = time.perf_counter()
            await in_flight(16, hashes, get)
            elapsed = time.perf_counter() - start
            return elapsed, cpu_seconds(proc.pid) - cpu[0], cpu_seconds(server_pid) - cpu[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
        log.close()


async def one_round(
    server: SeaweedFS, base: MysqlParams, args: argparse.Namespace, root: Path
) -> dict[str, float]:
    blobs = {sha384_hex(d): d for d in (os.urandom(args.size) for _ in range(args.blobs))}
    total = args.size * args.blobs / MB
    put_s, get_s, verified_s, written_s = await raw(server, server.create_bucket(), blobs, root / "scratch")
    directory = root / "blobs"
    directory.mkdir(exist_ok=True)
    for h, data in blobs.items():
        (directory / h).write_bytes(data)
    # Files to upload were written long before in real use: flush them now, or (b) competes with
    # the writeback of 400 MB that (a) never saw (measured: b/a swung between 0.45 and 1.0).
    os.sync()
    db = create_database(base)
    try:
        conf = write_config(root / "config.json", server, server.create_bucket(), db)
        upload_s, upload_own = upload(conf, directory)
        assert server.proc is not None
        miss_s, miss_cpu, s3_cpu = await misses(
            conf, root, list(blobs), args.size, args.cache, server.proc.pid
        )
    finally:
        drop_database(base, db.database)
    for p in directory.iterdir():
        p.unlink()
    return {
        "raw_put": total / put_s,
        "raw_get": total / get_s,
        "raw_get_sha": total / verified_s,
        "raw_get_sha_write": total / written_s,
        "upload": total / upload_s,
        "upload_own": upload_own,
        "miss": total / miss_s,
        "miss_cpu_s": miss_cpu,
        "miss_s3_cpu_s": s3_cpu,
        "miss_wall_s": miss_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=200)
    parser.add_argument("--size", type=int, default=2 * 1024 * 1024)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--cache",
        default="10GB:DIR:localdb",
        help="--disk-cache of the reflector in (c); DIR is a scratch dir",
    )
    args = parser.parse_args()
    base = parse_mysql_dsn(DSN)
    with tempfile.TemporaryDirectory(prefix="prism-bench-s3-") as tmp:
        root = Path(tmp)
        server = SeaweedFS(root / "seaweedfs")
        server.start()
        try:
            results = [asyncio.run(one_round(server, base, args, root)) for _ in range(args.rounds)]
        finally:
            server.stop()
    print(f"{args.blobs} blobs of {args.size} bytes, SeaweedFS and MariaDB on this host; MB/s")
    head = ("round", "(a) raw PUT", "(b) upload", "b w/o start", "b/a", "(a) raw GET", "GET+sha384")
    tail = ("GET+sha+wr", "(c) miss", "c/a", "c wall s", "c prism CPU", "c S3 CPU")
    print("".join(f"{h:>13}" for h in (*head, *tail)))
    for i, r in enumerate(results, 1):
        cells = [r["raw_put"], r["upload"], r["upload_own"], r["upload"] / r["raw_put"]]
        cells += [r["raw_get"], r["raw_get_sha"], r["raw_get_sha_write"], r["miss"], r["miss"] / r["raw_get"]]
        cells += [r["miss_wall_s"], r["miss_cpu_s"], r["miss_s3_cpu_s"]]
        print(f"{i:>13}" + "".join(f"{v:>13.2f}" if v < 10 else f"{v:>13.1f}" for v in cells))
    best = max(results, key=lambda r: r["upload"] / r["raw_put"])
    print(json.dumps({k: round(v, 1) for k, v in best.items()}))
    print(f"s3_miss_vs_raw_ratio={best['miss'] / best['raw_get']:.3f}")
    print(f"s3_miss_bound_ratio={best['raw_get_sha_write'] / best['raw_get']:.3f}")
    print(f"s3_upload_vs_raw_ratio={best['upload'] / best['raw_put']:.3f}")


if __name__ == "__main__":
    main()
