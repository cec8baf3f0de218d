"""Reflector upload throughput and receiver CPU, against the limit measured in the same run.

Usage: python bench/reflector.py [--mb 200] [--clients 8] [--rounds 3] [--dir DIR] [--dir-fsync-cost]

prism: a receiver process runs ReflectorReceiver over a DiskStore; a load process uploads
`--mb` MB of distinct 2 MiB blobs with `--clients` concurrent ReflectorClient connections.
The DiskStore fsyncs the shard directory after each rename before the blob is acknowledged
(coalesced per burst); the line says how many directory fsyncs that took. Both receivers start
with the 256 shard directories in place (a store in use has them; creating one costs prism an
extra fsync of the root). With
`--dir-fsync-cost` a third kind, `nosync`, runs the same receiver without directory fsyncs, so the
cost of durability shows next to it in the same run (the ratio stays limit vs prism).
limit: a receiver process that does only what cannot be avoided for the same bytes over
loopback: recv_into a reused buffer, SHA-384 as they arrive (one selector thread), then write to
a temp file (in DiskStore's `WRITE_PIECE`s), fsync and rename (a thread pool, so fsyncs overlap
as prism's do); the load process sends the raw blobs (one 1-byte ack per blob).
Both print MB/s and the receiving process's CPU seconds per GB (user+system, all threads).
fsync makes system time noisy on a shared machine, so limit and prism alternate for `--rounds`
rounds and each keeps its cheapest; the last line is
`upload_vs_limit_ratio=<limit CPU/GB / prism CPU/GB>` (above 1: prism spends less than the limit).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing as mp
import os
import selectors
import shutil
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prism.blob import MAX_BLOB_SIZE
from prism.reflector.client import ReflectorClient
from prism.reflector.receiver import ReflectorReceiver
from prism.store.disk import WRITE_PIECE, DirectorySyncer, DiskStore


def cpu_seconds() -> tuple[float, float]:
    t = os.times()
    return t.user, t.system


# -- receivers (each in its own process) -----------------------------------------------------


def make_shard_dirs(root: str) -> None:
    """Both receivers start with the 256 shard directories, as a store in use has them."""
    for i in range(256):
        os.makedirs(os.path.join(root, f"{i:02x}"), exist_ok=True)


def prism_receiver(root: str, conn, dir_fsync: bool = True) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        make_shard_dirs(root)
        store = DiskStore(root)
        if not dir_fsync:
            store.syncer = DirectorySyncer(lambda _path: None)
        receiver = ReflectorReceiver(store, host="127.0.0.1", port=0, timeout=60)
        await receiver.start()
        conn.send(receiver.port)
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def control() -> None:
            while (cmd := conn.recv()) != "stop":
                conn.send(cpu_seconds() if cmd == "cpu" else None)
            loop.call_soon_threadsafe(done.set_result, None)

        threading.Thread(target=control, daemon=True).start()
        await done
        conn.send((receiver.stats.blobs_received, store.syncer.fsyncs if dir_fsync else 0))
        await receiver.stop(1.0)

    asyncio.run(main())


def limit_receiver(root: str, conn) -> None:  # type: ignore[no-untyped-def]
    """Non-blocking sockets in one thread: recv_into a reused buffer per connection and SHA-384
    as bytes arrive; a thread pool writes, fsyncs and renames. No framing, no JSON, no event loop."""
    tmp_dir = os.path.join(root, "tmp")
    os.makedirs(tmp_dir, exist_ok=True)
    make_shard_dirs(root)
    srv = socket.create_server(("127.0.0.1", 0))
    srv.setblocking(False)
    conn.send(srv.getsockname()[1])
    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ, None)
    stored = 0
    lock = threading.Lock()
    stop = threading.Event()
    pool = ThreadPoolExecutor(8)  # fsyncs overlap, as the DiskStore's do in asyncio.to_thread

    class State:
        def __init__(self) -> None:
            self.view = memoryview(bytearray(MAX_BLOB_SIZE))
            self.got = 0
            self.hash = hashlib.sha384()

    def store(sock: socket.socket, view: memoryview, name: str) -> None:
        nonlocal stored
        tmp = os.path.join(tmp_dir, name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for start in range(0, len(view), WRITE_PIECE):  # as DiskStore writes (see WRITE_PIECE)
                os.write(fd, view[start : start + WRITE_PIECE])
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(root, name[:2], name))
        with lock:
            stored += 1
        sock.sendall(b"1")  # the client sends nothing more until this ack, so `view` is free again

    def control() -> None:
        while conn.recv() != "stop":
            conn.send(cpu_seconds())
        stop.set()

    threading.Thread(target=control, daemon=True).start()
    while not stop.is_set():
        for key, _ in sel.select(0.1):
            if key.data is None:
                sock, _ = srv.accept()
                sock.setblocking(False)
                sel.register(sock, selectors.EVENT_READ, State())
                continue
            sock, st = key.fileobj, key.data
            n = sock.recv_into(st.view[st.got :])
            if not n:
                sel.unregister(sock)
                sock.close()
                continue
            st.hash.update(st.view[st.got : st.got + n])
            st.got += n
            if st.got < MAX_BLOB_SIZE:
                continue
            st.got = 0
            pool.submit(store, sock, st.view, st.hash.hexdigest())
            st.hash = hashlib.sha384()
    pool.shutdown(wait=True)
    srv.close()
    conn.send((stored, 0))


# -- load generator (its own process) ----------------------------------------------------------


def make_blobs(count: int) -> list[tuple[str, bytes]]:
    base = bytearray(os.urandom(MAX_BLOB_SIZE))
    out = []
    for i in range(count):
        base[:8] = i.to_bytes(8, "big")
        data = bytes(base)
        out.append((hashlib.sha384(data).hexdigest(), data))
    return out


def load(kind: str, port: int, count: int, clients: int, conn) -> None:  # type: ignore[no-untyped-def]
    blobs = make_blobs(count)
    shares = [blobs[i::clients] for i in range(clients)]
    conn.send("ready")
    conn.recv()  # go

    async def prism_client(share: list[tuple[str, bytes]]) -> int:
        async with ReflectorClient("127.0.0.1", port, timeout=60) as c:
            for h, data in share:
                await c.send_blob(h, data)
        return len(share)

    def limit_client(share: list[tuple[str, bytes]]) -> None:
        with socket.create_connection(("127.0.0.1", port)) as s:
            for _h, data in share:
                s.sendall(data)
                if s.recv(1) != b"1":
                    raise RuntimeError("limit receiver closed")

    start = time.perf_counter()
    if kind != "limit":

        async def run_all() -> None:
            await asyncio.gather(*(prism_client(s) for s in shares))

        asyncio.run(run_all())
    else:
        threads = [threading.Thread(target=limit_client, args=(s,)) for s in shares]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    conn.send(time.perf_counter() - start)


def measure(kind: str, root: str, count: int, clients: int) -> tuple[float, float, float, int]:
    """Wall seconds, receiver user and system CPU seconds, directory fsyncs."""
    ctx = mp.get_context("spawn")
    r_parent, r_child = ctx.Pipe()
    if kind == "limit":
        receiver = ctx.Process(target=limit_receiver, args=(root, r_child))
    else:
        receiver = ctx.Process(target=prism_receiver, args=(root, r_child, kind == "prism"))
    receiver.start()
    port = r_parent.recv()
    l_parent, l_child = ctx.Pipe()
    loader = ctx.Process(target=load, args=(kind, port, count, clients, l_child))
    loader.start()
    assert l_parent.recv() == "ready"
    r_parent.send("cpu")
    cpu0 = r_parent.recv()
    l_parent.send("go")
    wall = l_parent.recv()
    r_parent.send("cpu")
    cpu1 = r_parent.recv()
    r_parent.send("stop")
    stored, dir_fsyncs = r_parent.recv()
    loader.join()
    receiver.join()
    if stored != count:
        raise SystemExit(f"{kind}: {stored} of {count} blobs stored")
    return wall, cpu1[0] - cpu0[0], cpu1[1] - cpu0[1], dir_fsyncs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3, help="alternating limit/prism rounds; best of each")
    ap.add_argument("--dir", default=None, help="where the disk stores go (default: a temp dir)")
    ap.add_argument(
        "--dir-fsync-cost", action="store_true", help="also run prism without directory fsyncs (`nosync`)"
    )
    args = ap.parse_args()
    kinds = ("limit", "prism", "nosync") if args.dir_fsync_cost else ("limit", "prism")
    count = max(args.clients, args.mb * 1_000_000 // MAX_BLOB_SIZE)
    gb = count * MAX_BLOB_SIZE / 1e9
    mb = count * MAX_BLOB_SIZE / 1e6
    base = tempfile.mkdtemp(prefix="prism-bench-reflector-", dir=args.dir)
    best: dict[str, tuple[float, float]] = {}  # kind -> (CPU s/GB, MB/s) of its cheapest round
    print(f"{count} blobs x 2 MiB ({mb:.0f} MB), {args.clients} concurrent clients in a separate process")
    try:
        for rnd in range(args.rounds):
            for kind in kinds:
                root = os.path.join(base, f"{kind}{rnd}")
                os.makedirs(root)
                wall, user, system, dir_fsyncs = measure(kind, root, count, args.clients)
                cpu = user + system
                syncs = f"  {dir_fsyncs} dir fsyncs" if kind == "prism" else ""
                print(
                    f"round {rnd + 1} {kind:6s} {mb / wall:7.1f} MB/s  receiver CPU {cpu:5.2f} s"
                    f" (user {user:.2f}, sys {system:.2f}) = {cpu / gb:5.2f} s/GB{syncs}",
                    flush=True,
                )
                if kind not in best or cpu / gb < best[kind][0]:
                    best[kind] = (cpu / gb, mb / wall)
                shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    for kind in kinds:
        print(f"{kind:6s} best round: {best[kind][1]:7.1f} MB/s, {best[kind][0]:5.2f} CPU s/GB")
    if "nosync" in best:
        cost, mb_s = best["prism"][0] - best["nosync"][0], best["prism"][1] / best["nosync"][1]
        print(f"dir fsyncs cost {cost:+.2f} CPU s/GB; prism MB/s with them = {mb_s:.2f} x without")
    print(f"upload_vs_limit_ratio={best['limit'][0] / best['prism'][0]:.2f}")


if __name__ == "__main__":
    main()
