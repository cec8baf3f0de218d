"""The shared TCP listener: caps, shedding, cheap refusals, and running out of descriptors."""

from __future__ import annotations

import asyncio
import resource
import socket
import subprocess
import sys
import time

from prism.http.server import HttpBlobServer
from tests.helpers import CountingStore, random_blob

GET = b"GET /blob?hash=%s HTTP/1.1\r\nHost: x\r\n\r\n"


async def _get(port: int, blob_hash: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(GET % blob_hash.encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    return head


async def test_http_sheds_the_longest_idle_socket_for_a_request() -> None:
    store = CountingStore()
    blob_hash, data = random_blob(1000)
    await store.put(blob_hash, data)
    server = HttpBlobServer(store, "127.0.0.1", 0, max_connections=10)
    server.admission.min_idle = 0.1
    await server.start()
    idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(10)]
    try:
        await asyncio.sleep(0.3)
        assert (await _get(server.port, blob_hash)).startswith(b"HTTP/1.1 200")
        assert await asyncio.wait_for(idle[0][0].read(), 5) == b""  # the oldest idle socket went
        assert server.admission.shed_total == 1
    finally:
        for _, w in idle:
            w.close()
        await server.stop()


async def test_http_refuses_with_503_when_every_connection_is_busy() -> None:
    store = CountingStore(held=True)
    blob_hash, data = random_blob(1000)
    await store.put(blob_hash, data)
    server = HttpBlobServer(store, "127.0.0.1", 0, max_connections=1)
    await server.start()
    try:
        busy = asyncio.create_task(_get(server.port, blob_hash))
        await store.until_parked()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in answer
        writer.close()
        store.release.set()
        assert (await busy).startswith(b"HTTP/1.1 200")
        assert server.stats.refused == 1
    finally:
        await server.stop()


_CHILD = """
import asyncio, sys
from prism.http.server import HttpBlobServer
from prism.logs import setup_logging
from prism.store.memory import MemoryStore

async def main():
    setup_logging()
    store = MemoryStore()
    await store.put(sys.argv[1], bytes.fromhex(sys.argv[2]))
    server = HttpBlobServer(store, "127.0.0.1", 0, max_connections=5000)  # above the file limit
    await server.start()
    print(server.port, flush=True)
    await asyncio.sleep(30)

asyncio.run(main())
"""


def _low_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))


def test_running_out_of_descriptors_neither_floods_the_log_nor_stops_serving() -> None:
    blob_hash, data = random_blob(100)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, blob_hash, data.hex()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_low_nofile,
    )
    socks: list[socket.socket] = []
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        for _ in range(200):  # the kernel completes them; the server runs out of descriptors
            socks.append(socket.create_connection(("127.0.0.1", port)))
        time.sleep(1.5)
        for s in socks:
            s.close()
        time.sleep(0.3)
        head = asyncio.run(_get(port, blob_hash))
        assert head.startswith(b"HTTP/1.1 200")
    finally:
        child.terminate()
        _, err = child.communicate(timeout=10)
    log = err.decode()
    assert "Traceback" not in log, log[:2000]
    assert len(log.splitlines()) < 10, log[:2000]
    assert "out of descriptors" in log
