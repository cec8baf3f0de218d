"""HTTP blob serving: prism's HTTP server against nginx (sendfile on, one worker). HTTP/3: bench/http3.py.

Usage: python bench/http.py [--blobs 32] [--seconds 5] [--connections 64,1000] [--blob-bytes 2097152]

Both servers serve the same 2 MiB blob files from one directory (the page cache is warm; with
`--blob-bytes 1000` the figures are the CPU cost of a request rather than of its bytes);
the load generator (wrk, keep-alive, 64 then 1,000 connections) runs in its own process. Server
CPU is read from /proc for the server's processes only. Prints MB/s, p50/p99 latency and CPU
seconds per GB for each, and per connection count a ratio `<nginx CPU/GB ÷ prism CPU/GB>`:
`http_vs_nginx_ratio=` for 64 connections (target >= 0.9) and `http_1000_vs_nginx_ratio=` for
1,000 (target >= 0.8). The file limit is raised so 1,000 connections fit.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

BLOB = 2 * 1024 * 1024
TICK = os.sysconf("SC_CLK_TCK")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / TICK


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def wait_port(port: int, kind: int = socket.SOCK_STREAM, timeout: float = 15.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if kind == socket.SOCK_DGRAM:
            return
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def make_blobs(root: str, n: int, size: int = BLOB) -> list[str]:
    from prism.store.disk import DiskStore

    old = os.umask(0o022)
    store = DiskStore(root)
    os.umask(old)
    hashes = []
    for i in range(n):
        data = os.urandom(size - 64) + i.to_bytes(64, "big")
        import hashlib

        h = hashlib.sha384(data).hexdigest()
        store.write_blob(h, data)
        hashes.append(h)
    # warm the page cache
    for h in hashes:
        os.chmod(store.path_of(h), 0o644)
        with open(store.path_of(h), "rb") as f:
            f.read()
    return hashes


def run_wrk(port: int, paths: list[str], seconds: int, connections: int, workdir: str) -> dict[str, float]:
    script = os.path.join(workdir, f"paths-{port}.lua")
    with open(script, "w") as f:
        f.write("local paths = {" + ",".join(f'"{p}"' for p in paths) + "}\n")
        f.write("local i = 0\nrequest = function()\n  i = i + 1\n")
        f.write("  return wrk.format('GET', paths[(i % #paths) + 1])\nend\n")
    proc = subprocess.Popen(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            script,
            f"http://127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{out}")
    result = parse_wrk(out)
    result["client_cpu"] = usage.ru_utime + usage.ru_stime
    return result


UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def parse_wrk(out: str) -> dict[str, float]:
    def latency(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        v, u = float(m[1]), m[2]
        return v / 1000 if u == "us" else v if u == "ms" else v * 1000

    m = re.search(r"(\d+) requests in ([\d.]+)s, ([\d.]+)(\w+) read", out)
    if not m:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    requests, secs, nbytes = int(m[1]), float(m[2]), float(m[3]) * UNITS[m[4]]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": requests,
        "seconds": secs,
        "bytes": nbytes,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "non2xx": int(errors[1]) if errors else 0,
    }


PRISM_SERVER = """
import asyncio, sys
sys.path.insert(0, {root!r})
from prism.http.server import HttpBlobServer
from prism.store.disk import DiskStore

async def main():
    store = DiskStore({blobs!r})
    http = HttpBlobServer(store, "127.0.0.1", {port})
    await http.start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await http.stop(1)

asyncio.run(main())
"""

NGINX_CONF = """
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    types {{ }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port} sndbuf=4m;  # same socket buffer as prism asks for
        root {blobs};
        location / {{ }}
    }}
}}
"""


def report(name: str, r: dict[str, float], cpu: float) -> float:
    gb = r["bytes"] / 1e9
    cpu_per_gb = cpu / gb if gb else float("inf")
    client = r.get("client_cpu")
    both = f"   server+client {(cpu + client) / gb:.3f} s/GB" if client is not None else ""
    print(
        f"{name:<14} {r['bytes'] / r['seconds'] / 1e6:9.1f} MB/s   p50 {r['p50_ms']:7.2f} ms   "
        f"p99 {r['p99_ms']:7.2f} ms   server CPU {cpu:6.2f} s = {cpu_per_gb:.3f} s/GB{both}   "
        f"({int(r['requests'])} requests, {1e6 * cpu / max(r['requests'], 1):.1f} µs each, "
        f"{int(r['non2xx'])} non-2xx)"
    )
    return cpu_per_gb


Target = tuple[int, list[str], list[int]]  # port, paths, server pids


def compare(args: argparse.Namespace, work: str, connections: int, nginx: Target, prism: Target) -> None:
    """Alternating rounds of nginx and prism at `connections`; prints the ratio of the cheapest."""

    def measure(target: Target) -> tuple[dict[str, float], float]:
        port, paths, pids = target
        c0 = cpu_seconds(pids)
        res = run_wrk(port, paths, args.seconds, connections, work)
        return res, cpu_seconds(pids) - c0

    print(f"\n{connections} connections")
    run_wrk(nginx[0], nginx[1][:4], 1, connections, work)  # warm-up
    run_wrk(prism[0], prism[1][:4], 1, connections, work)
    nruns, pruns = [], []
    for i in range(args.rounds):
        nres, ncpu = measure(nginx)
        pres, pcpu = measure(prism)
        nruns.append((report(f"nginx      r{i + 1}", nres, ncpu), nres, ncpu))
        pruns.append((report(f"prism HTTP r{i + 1}", pres, pcpu), pres, pcpu))
    nmed = sorted(r[0] for r in nruns)[len(nruns) // 2]
    pmed = sorted(r[0] for r in pruns)[len(pruns) // 2]
    print(f"median CPU/GB: nginx {nmed:.3f}, prism {pmed:.3f} (ratio {nmed / pmed:.2f})")
    print("cheapest rounds:")
    nbest, pbest = min(nruns, key=lambda r: r[0]), min(pruns, key=lambda r: r[0])
    ncpg = report("nginx", nbest[1], nbest[2])
    pcpg = report("prism HTTP", pbest[1], pbest[2])
    name = "http_vs_nginx_ratio" if connections == 64 else f"http_{connections}_vs_nginx_ratio"
    print(f"{name}={ncpg / pcpg:.2f}")


def raise_file_limit(connections: int) -> None:
    """Each connection costs a descriptor in wrk and in the server (children inherit the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, 2 * connections + 256)
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blobs", type=int, default=32)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", default="64,1000", help="comma-separated connection counts")
    ap.add_argument("--rounds", type=int, default=4, help="alternating nginx/prism rounds")
    ap.add_argument(
        "--blob-bytes",
        type=int,
        default=BLOB,
        help="size of each blob (small ones measure the per-request cost; at least 65)",
    )
    args = ap.parse_args()
    if not shutil.which("wrk") or not shutil.which("nginx"):
        sys.exit("bench/http.py needs wrk and nginx: apt-get install -y wrk nginx")
    raise_file_limit(max(int(c) for c in args.connections.split(",")))

    work = tempfile.mkdtemp(prefix="prism-bench-http-")
    os.chmod(work, 0o755)  # nginx's worker runs as an unprivileged user
    blobs = os.path.join(work, "blobs")
    nginx = prism = None
    try:
        hashes = make_blobs(blobs, args.blobs, args.blob_bytes)
        print(
            f"{args.blobs} blobs of {args.blob_bytes} bytes, {args.connections} keep-alive connections,"
            f" {args.seconds}s per run,"
            f" {args.rounds} alternating rounds; noise only adds cost,"
            " so each server's cheapest round is compared"
        )
        nport = free_port()
        conf = os.path.join(work, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(dir=work, port=nport, blobs=blobs))
        nginx = subprocess.Popen(["nginx", "-c", conf, "-p", work], stderr=subprocess.DEVNULL)
        wait_port(nport)
        npids = [nginx.pid, *children(nginx.pid)]
        npaths = [f"/{h[:2]}/{h}" for h in hashes]

        pport = free_port()
        prism = subprocess.Popen(
            [
                sys.executable,
                "-c",
                PRISM_SERVER.format(root=ROOT, blobs=blobs, port=pport),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert prism.stdout is not None and prism.stdout.readline().strip() == "ready"
        ppaths = [f"/blob?hash={h}" for h in hashes]
        for connections in [int(c) for c in args.connections.split(",")]:
            compare(args, work, connections, (nport, npaths, npids), (pport, ppaths, [prism.pid]))
    finally:
        if prism is not None:
            if prism.stdin:
                prism.stdin.close()
            prism.wait(15)
        if nginx is not None:
            nginx.terminate()
            nginx.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
