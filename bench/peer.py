"""Peer-protocol serving cost: prism's PeerServer vs a bare-bones asyncio sendfile server.

Both servers serve the same disk store of 2 MiB blobs on 127.0.0.1, each in its own process.
A load generator (a third process) keeps 32 keep-alive connections busy for a fixed time,
sending lbry-sdk's request for blobs round-robin and reading each answer into a reused buffer
(asyncio.BufferedProtocol), so the client's own cost stays small and is not what is measured.
A third run gives the limit the same SO_SNDBUF prism asks for, as a stricter reference.
For each server it prints MB/s, p50/p99 latency per blob and the server process's CPU seconds
(user+sys, from /proc) per GB sent. The last line is

    peer_vs_sendfile_ratio=<limit CPU s/GB ÷ prism CPU s/GB>

(1.0 = prism costs what the bare limit costs; the target is >= 0.85).

Usage: python bench/peer.py [--blobs 48] [--rounds 3] [--duration 3] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

BLOB_SIZE = 2 * 1024 * 1024
ADDRESS = "bJxKvpD96kaJLriqVajZ7SaQTsWWyrGQct"


# --- the two servers (each runs in its own process) ---------------------------------------


async def serve_prism(root: str, sndbuf: bool = True) -> None:
    from prism.peer.server import PeerServer
    from prism.sendfile import SEND_BUFFER as SEND_BUFFER_SIZE
    from prism.store.disk import DiskStore

    server = PeerServer(
        DiskStore(root), "127.0.0.1", 0, send_buffer_size=SEND_BUFFER_SIZE if sndbuf else None
    )
    await server.start()
    await _announce_and_wait(server.port)
    await server.stop(1)


async def serve_limit(root: str, sndbuf: int = 0) -> None:
    """The limit: read a request, parse it, write a header, loop.sendfile the file. Nothing else.

    With `sndbuf` it also asks for the send buffer prism asks for (the stricter comparison).
    """
    loop = asyncio.get_running_loop()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if sndbuf:
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        try:
            while data := await reader.read(65536):
                blob_hash = json.loads(data)["requested_blob"]
                path = os.path.join(root, blob_hash[:2], blob_hash)
                with open(path, "rb", buffering=0) as f:
                    size = os.fstat(f.fileno()).st_size
                    writer.write(
                        f'{{"lbrycrd_address":"{ADDRESS}","available_blobs":["{blob_hash}"],'
                        f'"blob_data_payment_rate":"RATE_ACCEPTED",'
                        f'"incoming_blob":{{"blob_hash":"{blob_hash}","length":{size}}}}}'.encode()
                    )
                    await loop.sendfile(writer.transport, f, 0, size)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    await _announce_and_wait(server.sockets[0].getsockname()[1])
    server.close()


async def _announce_and_wait(port: int) -> None:
    print(port, flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # the parent closes stdin to stop us


# --- load generator ------------------------------------------------------------------------


class _LoadConnection(asyncio.BufferedProtocol):
    def __init__(self, hashes: list[str], offset: int, stats: dict[str, list]) -> None:
        self.hashes = hashes
        self.index = offset
        self.stats = stats
        self.buffer = bytearray(256 * 1024)  # reused for every read, header and body
        self.header = bytearray()
        self.remaining = -1  # body bytes still to read; -1 while reading a header
        self.blob_size = 0
        self.started = 0.0
        self.transport: asyncio.Transport | None = None
        self.running = False
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.ready.set_result(None)

    def start(self) -> None:
        self.running = True
        self._send()

    def _send(self) -> None:
        blob_hash = self.hashes[self.index % len(self.hashes)]
        self.index += 1
        self.header.clear()
        self.remaining = -1
        self.started = time.perf_counter()
        assert self.transport is not None
        self.transport.write(
            b'{"requested_blobs": ["%s"], "lbrycrd_address": true, "blob_data_payment_rate": 0.0, '
            b'"requested_blob": "%s"}' % (blob_hash.encode(), blob_hash.encode())
        )

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        data = memoryview(self.buffer)[:nbytes]
        if self.remaining < 0:
            self.header += data
            end = self.header.find(b"}}")  # both servers end the header with incoming_blob
            if end < 0:
                return
            header = json.loads(self.header[: end + 2])
            self.blob_size = header["incoming_blob"]["length"]
            self.remaining = self.blob_size - (len(self.header) - end - 2)
        else:
            self.remaining -= nbytes
        if self.remaining == 0:
            self.stats["latency"].append(time.perf_counter() - self.started)
            self.stats["bytes"][0] += self.blob_size
            if self.running:
                self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.running:
            self.stats["errors"][0] += 1


async def load(port: int, hashes: list[str], connections: int, duration: float) -> dict:
    loop = asyncio.get_running_loop()
    stats: dict[str, list] = {"latency": [], "bytes": [0], "errors": [0]}
    conns = []
    for i in range(connections):
        _, proto = await loop.create_connection(
            lambda i=i: _LoadConnection(hashes, i * 7, stats), "127.0.0.1", port
        )
        conns.append(proto)
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # the parent says go
    began = time.perf_counter()
    for c in conns:
        c.start()
    await asyncio.sleep(duration)
    for c in conns:
        c.running = False
    elapsed = time.perf_counter() - began
    done = stats["bytes"][0]
    await asyncio.sleep(0.5)  # let answers in flight finish before closing
    for c in conns:
        assert c.transport is not None
        c.transport.close()
    return {
        "bytes": done,
        "seconds": elapsed,
        "latency": stats["latency"],
        "errors": stats["errors"][0],
    }


# --- driver --------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def run_one(kind: str, root: str, hashes_file: str, args: argparse.Namespace) -> dict:
    me = os.path.abspath(__file__)
    server = subprocess.Popen(
        [sys.executable, me, "--serve", kind, "--root", root],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdin is not None
        port = int(server.stdout.readline())
        loadgen = subprocess.Popen(
            [
                sys.executable,
                me,
                "--load",
                str(port),
                "--hashes",
                hashes_file,
                "--connections",
                str(args.connections),
                "--duration",
                str(args.duration),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert loadgen.stdout is not None and loadgen.stdin is not None
        assert loadgen.stdout.readline().strip() == "ready"
        cpu_before = _cpu_seconds(server.pid)
        loadgen.stdin.write("go\n")
        loadgen.stdin.flush()
        result = json.loads(loadgen.stdout.readline())
        cpu_after = _cpu_seconds(server.pid)
        loadgen.wait(timeout=30)
        result["user_s"] = cpu_after[0] - cpu_before[0]
        result["sys_s"] = cpu_after[1] - cpu_before[1]
        result["cpu_s"] = result["user_s"] + result["sys_s"]
        return result
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blobs", type=int, default=48, help="number of 2 MiB blobs in the store")
    p.add_argument("--duration", type=float, default=3.0, help="seconds of load per server and round")
    p.add_argument("--rounds", type=int, default=3, help="rounds; each runs every server once, in turn")
    p.add_argument(
        "--kinds",
        default="limit,limit-sndbuf,prism",
        help="servers to run (also: prism-nosndbuf); needs limit, prism",
    )
    p.add_argument("--connections", type=int, default=32)
    p.add_argument(
        "--blob-size", type=int, default=BLOB_SIZE, help="bytes per blob (2 MiB as on the network)"
    )
    p.add_argument(
        "--serve", choices=("prism", "prism-nosndbuf", "limit", "limit-sndbuf"), help=argparse.SUPPRESS
    )
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--load", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--hashes", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.serve:
        if args.serve.startswith("prism"):
            asyncio.run(serve_prism(args.root, args.serve == "prism"))
        else:
            from prism.sendfile import SEND_BUFFER as SEND_BUFFER_SIZE

            asyncio.run(serve_limit(args.root, SEND_BUFFER_SIZE if args.serve == "limit-sndbuf" else 0))
        return
    if args.load:
        with open(args.hashes) as f:
            hashes = f.read().split()
        result = asyncio.run(load(args.load, hashes, args.connections, args.duration))
        print(json.dumps(result), flush=True)
        return

    from prism.blob import sha384_hex
    from prism.store.disk import DiskStore

    tmp = tempfile.mkdtemp(prefix="prism-bench-peer-")
    try:
        store = DiskStore(os.path.join(tmp, "blobs"))
        hashes = []
        for _ in range(args.blobs):
            data = os.urandom(args.blob_size)
            h = sha384_hex(data)
            store.write_blob(h, data)
            hashes.append(h)
        hashes_file = os.path.join(tmp, "hashes.txt")
        with open(hashes_file, "w") as f:
            f.write("\n".join(hashes))
        print(
            f"peer bench: {args.blobs} x {args.blob_size} B blobs on disk, {args.connections} keep-alive "
            f"connections, {args.rounds} rounds of {args.duration:g} s per server, 127.0.0.1, "
            f"{os.cpu_count()} cores, "
            f"python {sys.version.split()[0]}"
        )
        names = {
            "limit": "limit (bare sendfile)",
            "limit-sndbuf": "limit + same SO_SNDBUF",
            "prism": "prism PeerServer",
            "prism-nosndbuf": "prism, no SO_SNDBUF",
        }
        kinds = args.kinds.split(",")
        totals: dict[str, dict] = {
            k: {"bytes": 0, "seconds": 0.0, "user_s": 0.0, "sys_s": 0.0, "latency": [], "errors": 0}
            for k in kinds
        }
        # Rounds alternate the servers, so a change in the background load hits all of them alike.
        for _ in range(args.rounds):
            for kind in kinds:
                r = run_one(kind, store.root, hashes_file, args)
                for key in ("bytes", "seconds", "user_s", "sys_s", "errors"):
                    totals[kind][key] += r[key]
                totals[kind]["latency"] += r["latency"]
        for kind in kinds:
            t = totals[kind]
            lat = sorted(t["latency"])
            t["cpu_s"] = t["user_s"] + t["sys_s"]
            t["mb_s"] = t["bytes"] / 1e6 / t["seconds"]
            t["cpu_per_gb"] = t["cpu_s"] / (t["bytes"] / 1e9) if t["bytes"] else float("inf")
            p50 = 1000 * lat[len(lat) // 2] if lat else float("nan")
            p99 = 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
            print(
                f"{names[kind]:24s} {t['mb_s']:8.1f} MB/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
                f"server CPU {t['cpu_s']:5.2f} s (user {t['user_s']:.2f}, sys {t['sys_s']:.2f}) "
                f"= {t['cpu_per_gb']:.3f} s/GB  ({len(lat)} blobs, {t['errors']} errors)"
            )
        prism_cost = totals["prism"]["cpu_per_gb"]
        if "limit-sndbuf" in totals:
            strict = totals["limit-sndbuf"]["cpu_per_gb"] / prism_cost
            print(f"(against the limit given the same SO_SNDBUF as prism: ratio {strict:.3f})")
        ratio = totals["limit"]["cpu_per_gb"] / prism_cost
        print(f"peer_vs_sendfile_ratio={ratio:.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    socket.setdefaulttimeout(30)
    main()
