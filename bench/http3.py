"""HTTP/3 blob serving at 1200-byte datagrams: server CPU per GB and what one upstream client pulls.

Usage: python bench/http3.py [--blobs 16] [--seconds 5] [--inflight 16] [--rounds 2]

A server process serves 2 MiB blob files from disk (page cache warm) over HTTP/3 and HTTP/1.1.
The load client runs in its own process: prism's `Http3Client` (one QUIC connection, `--inflight`
requests in flight, 1200-byte datagrams) for HTTP/3, wrk for the HTTP/1.1 reference. Each
configuration runs in a fresh server process with the QUIC library set by PRISM_QUIC:

  aioquic        aioquic 1.7.2 on both sides, asyncio's one-datagram-per-call transport
  qh3 no-GSO     qh3 on both sides, asyncio's transport (one sendto per datagram)
  qh3            qh3 on both sides with its batching transport (UDP_SEGMENT/GSO, recvmmsg/GRO)

Prints MB/s, p50/p99 per blob and server CPU seconds per GB for each, then
`http3_upstream_mb_s=` (the qh3 client's MB/s over one connection) and last
`http3_cpu_per_gb=` (the qh3 server's CPU s/GB), each the best of `--rounds` rounds.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

_spec = importlib.util.spec_from_file_location("bench_http", os.path.join(ROOT, "bench", "http.py"))
assert _spec is not None and _spec.loader is not None
bench_http = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_http)

SERVER = """
import asyncio, sys
sys.path.insert(0, {root!r})
from prism.http.server import HttpBlobServer
from prism.http.h3server import Http3BlobServer
from prism.store.disk import DiskStore

async def main():
    store = DiskStore({blobs!r})
    http = HttpBlobServer(store, "127.0.0.1", 0)
    h3 = Http3BlobServer(store, "127.0.0.1", 0, max_datagram_size=1200)
    await http.start()
    await h3.start()
    print("ready", http.port, h3.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await h3.stop(1)
    await http.stop(1)

asyncio.run(main())
"""

CLIENT = """
import asyncio, sys, time
sys.path.insert(0, {root!r})
from prism.http.h3client import Http3Client

async def main():
    hashes = {hashes!r}
    client = Http3Client("127.0.0.1:{port}", timeout=60, max_datagram_size=1200)
    for h in hashes[:2]:
        assert (await client.get("/get/" + h)).status == 200
    lat = []
    total = 0
    deadline = time.perf_counter() + {seconds}
    i = 0

    async def worker():
        nonlocal total, i
        while time.perf_counter() < deadline:
            h = hashes[i % len(hashes)]
            i += 1
            t = time.perf_counter()
            r = await client.get("/get/" + h)
            lat.append(time.perf_counter() - t)
            assert r.status == 200 and len(r.body) == {blob}, r.status
            total += len(r.body)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range({inflight})))
    secs = time.perf_counter() - t0
    lat.sort()
    print(total, secs, lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000, len(lat), flush=True)
    await client.close()

asyncio.run(main())
"""

CONFIGS = {
    "aioquic": {"PRISM_QUIC": "aioquic"},
    "qh3 no-GSO": {"PRISM_QUIC": "qh3", "PRISM_QUIC_GSO": "0"},
    "qh3": {"PRISM_QUIC": "qh3", "PRISM_QUIC_GSO": "1"},
}


def start_server(blobs: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], int, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER.format(root=ROOT, blobs=blobs)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    assert proc.stdout is not None
    ready, http_port, h3_port = proc.stdout.readline().split()
    assert ready == "ready"
    return proc, int(http_port), int(h3_port)


def stop_server(proc: subprocess.Popen[str]) -> None:
    if proc.stdin:
        proc.stdin.close()
    proc.wait(15)


def run_h3(
    hashes: list[str], port: int, env: dict[str, str], args: argparse.Namespace, server_pid: int
) -> tuple[dict[str, float], float]:
    script = CLIENT.format(
        root=ROOT,
        hashes=hashes,
        port=port,
        seconds=args.seconds,
        inflight=args.inflight,
        blob=bench_http.BLOB,
    )
    c0 = bench_http.cpu_seconds([server_pid])
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    ).stdout.split()
    cpu = bench_http.cpu_seconds([server_pid]) - c0
    total, secs, p50, p99, n = (float(x) for x in out)
    return {
        "bytes": total,
        "seconds": secs,
        "p50_ms": p50,
        "p99_ms": p99,
        "requests": n,
        "non2xx": 0,
    }, cpu


def run_http(hashes: list[str], port: int, args: argparse.Namespace, pid: int, work: str) -> float:
    paths = [f"/blob?hash={h}" for h in hashes]
    bench_http.run_wrk(port, paths[:2], 1, args.inflight, work)  # warm-up
    c0 = bench_http.cpu_seconds([pid])
    res = bench_http.run_wrk(port, paths, args.seconds, args.inflight, work)
    return bench_http.report("HTTP/1.1 (ref)", res, bench_http.cpu_seconds([pid]) - c0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blobs", type=int, default=16)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--inflight", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma list of " + ", ".join(CONFIGS))
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("bench/http3.py needs wrk for the HTTP/1.1 reference: apt-get install -y wrk")
    work = tempfile.mkdtemp(prefix="prism-bench-http3-")
    best: dict[str, tuple[float, float]] = {}
    try:
        hashes = bench_http.make_blobs(os.path.join(work, "blobs"), args.blobs)
        print(
            f"{args.blobs} blobs of 2 MiB from disk, 1200-byte datagrams, one QUIC connection with"
            f" {args.inflight} requests in flight, {args.seconds}s per run, {args.rounds} rounds"
        )
        for rnd in range(args.rounds):
            print(f"\nround {rnd + 1}")
            for name in args.configs.split(","):
                env = CONFIGS[name]
                proc, http_port, h3_port = start_server(os.path.join(work, "blobs"), env)
                try:
                    if name == "qh3":
                        run_http(hashes, http_port, args, proc.pid, work)
                    res, cpu = run_h3(hashes, h3_port, env, args, proc.pid)
                finally:
                    stop_server(proc)
                cpg = bench_http.report(f"HTTP/3 {name}", res, cpu)
                mbs = res["bytes"] / res["seconds"] / 1e6
                old = best.get(name)
                best[name] = (min(cpg, old[0]) if old else cpg, max(mbs, old[1]) if old else mbs)
        print("\nbest of rounds (CPU s/GB, MB/s):")
        for name, (cpg, mbs) in best.items():
            print(f"  {name:<12} {cpg:7.2f} s/GB  {mbs:7.1f} MB/s")
        if "qh3" in best:
            print(f"http3_upstream_mb_s={best['qh3'][1]:.1f}")
            print(f"http3_cpu_per_gb={best['qh3'][0]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
