"""Flood one prism DHT node with findNode requests from a second process; print what it sustains.

    python bench/dht.py [--duration 5] [--window 64]

The node runs in this process (asyncio, one core) with 64 contacts in its routing table, so every answer
carries 8 contacts (about 700 bytes). The load generator is a separate process keeping `window` requests in
flight over loopback UDP. Printed side by side: the node's answered findNode/s, p50/p99 latency, CPU and
memory, and, as the reference measured in the same run, a bare asyncio UDP echo server under the same load
(the ceiling for any asyncio datagram server here). Last line: dht_findnode_per_s=<n>. Target: >= 5000.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import select
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TARGET_PER_S = 5000
THIS_FILE = os.path.abspath(__file__)


# --- load generator (second process) ---------------------------------------------------------------------


def run_client(host: str, port: int, duration: float, window: int) -> dict[str, float]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    sock.connect((host, port))
    sock.setblocking(False)
    sender = os.urandom(48)
    key = os.urandom(48)
    head = b"di0ei0ei1e20:"
    tail = b"i2e48:" + sender + b"i3e8:findNodei4el48:" + key + b"d15:protocolVersioni1eeee"
    prefix = os.urandom(12)
    sent: dict[bytes, float] = {}
    latencies: list[float] = []
    counter = 0
    answered = 0
    start = time.perf_counter()
    end = start + duration
    last_rx = start
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        while len(sent) < window:
            counter += 1
            rid = prefix + counter.to_bytes(8, "big")
            sent[rid] = time.perf_counter()
            try:
                sock.send(head + rid + tail)
            except BlockingIOError:
                del sent[rid]
                break
        r, _, _ = select.select([sock], [], [], 0.05)
        if not r:
            if time.perf_counter() - last_rx > 0.2:
                sent.clear()  # assume lost; refill the window
            continue
        while True:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                break
            t = time.perf_counter()
            last_rx = t
            rid = data[13:33]
            t0 = sent.pop(rid, None)
            if t0 is not None:
                answered += 1
                latencies.append(t - t0)
    elapsed = time.perf_counter() - start
    latencies.sort()
    n = len(latencies)
    return {
        "sent": counter,
        "answered": answered,
        "elapsed": elapsed,
        "per_s": answered / elapsed,
        "p50_ms": 1000 * latencies[n // 2] if n else 0.0,
        "p99_ms": 1000 * latencies[min(n - 1, int(n * 0.99))] if n else 0.0,
    }


# --- servers (this process) ------------------------------------------------------------------------------


def rss_kib() -> tuple[int, int]:
    """(current RSS, peak RSS) of this process in KiB."""
    cur = peak = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1])
    return cur, peak


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


async def flood(port: int, duration: float, window: int) -> tuple[dict[str, float], float]:
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        THIS_FILE,
        "--client",
        f"127.0.0.1:{port}",
        "--duration",
        str(duration),
        "--window",
        str(window),
        stdout=subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), duration + 30)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return json.loads(out), cpu


async def bench(duration: float, window: int) -> None:
    from prism.dht import DhtConfig, DhtNode
    from prism.dht.routing import Contact

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
    echo_port = transport.get_extra_info("sockname")[1]
    ref, ref_cpu = await flood(echo_port, min(duration, 3.0), window)
    transport.close()

    node = DhtNode(
        host="127.0.0.1", port=0, config=DhtConfig(allow_private_peers=True, maybe_ping_delay=3600.0)
    )
    await node.start(join=False)
    for n in range(64):
        node.core.routing.add(Contact(os.urandom(48), f"10.{n}.0.1", 4444), loop.time())
    rss_before, _ = rss_kib()
    res, cpu = await flood(node.port, duration, window)
    rss_after, peak = rss_kib()
    stats = node.core.stats
    await node.stop(grace=0.1)

    print(
        f"load: findNode from a second process, window {window}, {duration:.0f} s, routing table 64 contacts"
    )
    print(f"{'':28}{'prism dht node':>18}{'asyncio echo (ref)':>22}")
    print(f"{'answered per second':28}{res['per_s']:>18,.0f}{ref['per_s']:>22,.0f}")
    print(f"{'p50 latency (ms)':28}{res['p50_ms']:>18.2f}{ref['p50_ms']:>22.2f}")
    print(f"{'p99 latency (ms)':28}{res['p99_ms']:>18.2f}{ref['p99_ms']:>22.2f}")
    print(f"{'server CPU s per 10k answers':28}{cpu / max(1, res['answered']) * 1e4:>18.3f}"
          f"{ref_cpu / max(1, ref['answered']) * 1e4:>22.3f}")  # fmt: skip
    print(f"{'sent / answered':28}{res['sent']:>10,} / {res['answered']:,}")
    print(
        f"node memory: RSS {rss_before / 1024:.1f} MiB before, {rss_after / 1024:.1f} MiB after, "
        f"peak {peak / 1024:.1f} MiB; requests handled {stats.requests:,}, malformed {stats.malformed}"
    )
    print(f"target >= {TARGET_PER_S}/s: {'met' if res['per_s'] >= TARGET_PER_S else 'NOT met'}")
    print(f"dht_findnode_per_s={res['per_s']:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--client", metavar="HOST:PORT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        host, port = args.client.rsplit(":", 1)
        print(json.dumps(run_client(host, int(port), args.duration, args.window)))
        return
    asyncio.run(bench(args.duration, args.window))


if __name__ == "__main__":
    main()
