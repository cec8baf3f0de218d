"""Cache fill, every request a miss: a blobcache prism against nginx `proxy_cache`, same origin.

Usage: python bench/fill.py [--blobs 200] [--in-flight 16] [--rounds 3]

One origin (prism's HTTP server over a directory of 2 MiB blobs, page cache warm) serves two
caches in front of it: `prism reflector` as a blobcache (`--upstream-protocol http`, disk cache,
no database) and nginx with `proxy_cache` and `proxy_cache_lock on` (one worker). Each round
starts a cache on an empty directory (the previous round's is removed once it is up), then a load
generator in its own process fetches every blob once through one of them, 16 in flight; rounds
alternate between the two. CPU is read from /proc for the cache's processes only (the origin's is
printed apart). Prints MB/s, p50/p99 latency of whole blobs, p50 time to the answer's head (a
cache that streams a miss answers before the blob is in) and CPU seconds per GB of each round,
then for the
best round of each (noise only adds cost) `fill_vs_nginx_mb_s=<prism MB/s ÷ nginx MB/s>` and
`fill_vs_nginx_cpu=<nginx CPU/GB ÷ prism CPU/GB>`.
Targets: ≥ 0.8 and ≥ 0.5 (prism checks SHA-384 of every blob; nginx checks nothing).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _bench_http():  # type: ignore[no-untyped-def]
    # bench/http.py runs nginx and prism's HTTP server: one way to do each. (Loaded by path:
    # bench/ on sys.path would shadow the standard library's http.)
    spec = importlib.util.spec_from_file_location("prism_bench_http", HERE / "http.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bh = _bench_http()

# bench/http.py's nginx setup (one worker, temp paths under the work dir) with a caching proxy
# in place of its static server.
NGINX_PROXY_CONF = (
    bh.NGINX_CONF.split("    server {{")[0]
    + """    proxy_cache_path {cache} levels=1:2 keys_zone=blobs:16m
                     max_size=10g inactive=1h use_temp_path=off;
    upstream origin {{ server 127.0.0.1:{origin}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port} sndbuf=4m;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache blobs;
            proxy_cache_lock on;
            proxy_cache_valid 200 1h;
            proxy_ignore_headers Cache-Control Expires;
        }}
    }}
}}
"""
)

LOAD = """
import asyncio, json, sys, time
import aiohttp

async def main(base, paths, n, size):
    lat, ttfb, errors = [], [], 0
    queue = iter(paths)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=n)) as session:
        async def worker():
            nonlocal errors
            for p in queue:
                t = time.perf_counter()
                async with session.get(base + p) as r:
                    ttfb.append(time.perf_counter() - t)  # the answer's head is in
                    body = await r.read()
                if r.status != 200 or len(body) != size:
                    errors += 1
                lat.append(time.perf_counter() - t)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(n)))
        seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "latencies": lat, "ttfb": ttfb, "errors": errors}))

args = json.loads(sys.stdin.read())
asyncio.run(main(**args))
"""


def load(port: int, paths: list[str], in_flight: int) -> dict[str, float]:
    """Fetch every path once, `in_flight` at a time, from a process of its own."""
    request = json.dumps(
        {"base": f"http://127.0.0.1:{port}", "paths": paths, "n": in_flight, "size": bh.BLOB}
    )
    out = subprocess.run([sys.executable, "-c", LOAD], input=request, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
    r = json.loads(out.stdout)
    lat = sorted(r["latencies"])
    ttfb = sorted(r["ttfb"])
    return {
        "ttfb_p50_ms": ttfb[len(ttfb) // 2] * 1000,
        "seconds": r["seconds"],
        "bytes": bh.BLOB * len(paths),
        "p50_ms": lat[len(lat) // 2] * 1000,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        "errors": r["errors"],
    }


def start_nginx(work: str, origin: int, cache: str) -> tuple[subprocess.Popen[bytes], int]:
    port = bh.free_port()
    conf = os.path.join(work, "nginx-proxy.conf")
    with open(conf, "w") as f:
        f.write(NGINX_PROXY_CONF.format(dir=work, cache=cache, origin=origin, port=port))
    proc = subprocess.Popen(["nginx", "-c", conf, "-p", work], stderr=subprocess.DEVNULL)
    bh.wait_port(port)
    return proc, port


def start_blobcache(work: str, origin: int, cache: str) -> tuple[subprocess.Popen[bytes], int]:
    port = bh.free_port()
    argv = [sys.executable, "-m", "prism", "--conf=none", "reflector", "--host", "127.0.0.1"]
    argv += ["--disable-uploads=true", "--use-db=false", f"--upstream-reflector=127.0.0.1:{origin}"]
    argv += ["--upstream-protocol=http", f"--disk-cache=10GB:{cache}:lru", f"--http-peer-port={port}"]
    argv += [f"--tcp-peer-port={bh.free_port()}", f"--metrics-port={bh.free_port()}"]
    argv += [f"--http3-peer-port={bh.free_port(socket.SOCK_DGRAM)}"]
    log = open(os.path.join(work, "blobcache.log"), "ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": str(ROOT)})
    log.close()
    bh.wait_port(port, timeout=60)
    return proc, port


def one_round(
    kind: str, work: str, origin: int, origin_pid: int, hashes: list[str], n: int, index: int
) -> dict[str, float]:
    """One round of `kind` into an empty cache directory of its own.

    The previous round's directory is removed only once the new cache is up, just before the
    load: memory freed and then left alone for a few seconds (prism's start takes longer than
    nginx's) is handed back to the host on this kind of VM (free page reporting), and the page
    cache then pays to touch it again, so emptying it before the start would charge prism alone.
    """
    start = start_nginx if kind == "nginx" else start_blobcache
    cache = os.path.join(work, f"{kind}-cache-{index}")
    proc, port = start(work, origin, cache)
    try:
        shutil.rmtree(os.path.join(work, f"{kind}-cache-{index - 1}"), ignore_errors=True)
        pids = [proc.pid, *bh.children(proc.pid)]
        paths = [f"/blob?hash={h}" for h in hashes]
        c0, o0 = bh.cpu_seconds(pids), bh.cpu_seconds([origin_pid])
        r = load(port, paths, n)
        r["cpu"], r["origin_cpu"] = bh.cpu_seconds(pids) - c0, bh.cpu_seconds([origin_pid]) - o0
    finally:
        proc.terminate()
        proc.wait(30)
    return r


def report(name: str, r: dict[str, float]) -> None:
    gb = r["bytes"] / 1e9
    print(
        f"{name:<10} {r['bytes'] / r['seconds'] / 1e6:8.1f} MB/s   p50 {r['p50_ms']:7.1f} ms   "
        f"p99 {r['p99_ms']:7.1f} ms   head p50 {r['ttfb_p50_ms']:6.1f} ms   "
        f"cache CPU {r['cpu']:5.2f} s = {r['cpu'] / gb:.3f} s/GB   "
        f"(origin {r['origin_cpu'] / gb:.3f} s/GB, {int(r['errors'])} errors)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blobs", type=int, default=200)
    ap.add_argument("--in-flight", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3, help="alternating nginx/prism rounds")
    args = ap.parse_args()
    if not shutil.which("nginx"):
        sys.exit("bench/fill.py needs nginx: apt-get install -y nginx")
    work = tempfile.mkdtemp(prefix="prism-bench-fill-")
    os.chmod(work, 0o755)  # nginx's worker runs as an unprivileged user
    origin = None
    try:
        hashes = bh.make_blobs(os.path.join(work, "blobs"), args.blobs)
        oport = bh.free_port()
        server = bh.PRISM_SERVER.format(root=str(ROOT), blobs=os.path.join(work, "blobs"), port=oport)
        origin = subprocess.Popen(
            [sys.executable, "-c", server], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert origin.stdout is not None and origin.stdout.readline().strip() == b"ready"
        print(
            f"{args.blobs} blobs of 2 MiB, all misses, {args.in_flight} in flight, caches emptied each round"
        )
        runs: dict[str, list[dict[str, float]]] = {"nginx": [], "prism": []}
        for i in range(args.rounds):
            for kind in ("nginx", "prism"):
                r = one_round(kind, work, oport, origin.pid, hashes, args.in_flight, i)
                runs[kind].append(r)
                report(f"{kind} r{i + 1}", r)
        print("best rounds:")
        nbest = max(runs["nginx"], key=lambda r: r["bytes"] / r["seconds"])
        pbest = max(runs["prism"], key=lambda r: r["bytes"] / r["seconds"])
        report("nginx", nbest)
        report("prism", pbest)
        ncpu = min(r["cpu"] for r in runs["nginx"])
        pcpu = min(r["cpu"] for r in runs["prism"])
        print(f"fill_vs_nginx_mb_s={nbest['seconds'] / pbest['seconds']:.2f}")
        print(f"fill_vs_nginx_cpu={ncpu / pcpu:.2f}")
    finally:
        if origin is not None:
            assert origin.stdin is not None
            origin.stdin.close()
            origin.wait(15)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
