"""Thousands of QUIC connections opened and closed from another process: HTTP keeps answering, memory comes back.

The server process runs prism's HTTP/1.1 and HTTP/3 servers on one event loop (as `prism reflector`
does); tests/http/h3_flood.py opens the QUIC connections from a process of its own.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import prism_env
from tests.helpers import random_blob

pytestmark = pytest.mark.slow

CONNECTIONS = 3000
MAX_GET_SECONDS = 0.25
RSS_SLACK = 50 * 1024 * 1024

SERVER = """
import asyncio, sys
from prism.http.h3server import Http3BlobServer
from prism.http.server import HttpBlobServer
from prism.store import MemoryStore

async def main():
    store = MemoryStore()
    await store.put({h!r}, bytes.fromhex({d!r}))
    http = HttpBlobServer(store, "127.0.0.1", 0)
    h3 = Http3BlobServer(store, "127.0.0.1", 0)
    await http.start()
    await h3.start()
    print(http.port, h3.port, flush=True)
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.readline):
        listener = h3.listener
        print(len(listener.connections), len(listener.table), listener.handshakes, listener.refused, flush=True)
    await h3.stop(0)
    await http.stop(0)

asyncio.run(main())
"""


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def ask(proc: subprocess.Popen[str]) -> list[int]:
    """The server's (connections, table entries, handshakes in progress, refused)."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("status\n")
    proc.stdin.flush()
    return [int(x) for x in proc.stdout.readline().split()]


async def test_3000_connections_open_and_close_without_stalling_http():
    h, d = random_blob(1000)
    env = prism_env()
    server = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is measured
        [sys.executable, "-c", SERVER.format(h=h, d=d.hex())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    flood: subprocess.Popen[str] | None = None
    worst = 0.0
    try:
        assert server.stdout is not None
        http_port, h3_port = (int(x) for x in server.stdout.readline().split())
        url = f"http://127.0.0.1:{http_port}/blob?hash={h}"
        async with aiohttp.ClientSession() as session:

            async def probe() -> float:
                t = time.perf_counter()
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as r:
                    assert r.status == 200 and await r.read() == d
                return time.perf_counter() - t

            await probe()
            before = rss(server.pid)
            flood = subprocess.Popen(  # noqa: ASYNC220 - the load process
                [sys.executable, str(Path(__file__).parent / "h3_flood.py"), str(h3_port), str(CONNECTIONS)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            assert flood.stdout is not None and flood.stdin is not None
            reader = asyncio.create_task(asyncio.to_thread(flood.stdout.readline))
            deadline = time.monotonic() + 180
            while not reader.done():  # the connections open
                assert time.monotonic() < deadline, "connections did not open in time"
                worst = max(worst, await probe())
                await asyncio.sleep(0.05)
            assert reader.result().split() == ["open", str(CONNECTIONS)]
            worst_open, worst = worst, 0.0
            held = ask(server)
            assert held[0] == CONNECTIONS, held
            peak = rss(server.pid)
            flood.stdin.write("close\n")
            flood.stdin.flush()
            reader = asyncio.create_task(asyncio.to_thread(flood.stdout.readline))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # they close; the server forgets them
                worst = max(worst, await probe())
                if reader.done() and ask(server)[:3] == [0, 0, 0]:
                    break
                await asyncio.sleep(0.05)
            left = ask(server)
            assert left[:3] == [0, 0, 0], left
            deadline = time.monotonic() + 10
            while rss(server.pid) - before >= RSS_SLACK and time.monotonic() < deadline:
                worst = max(worst, await probe())  # memory goes back once the closes calm down
                await asyncio.sleep(0.05)
            after = rss(server.pid)
        figures = (
            f"slowest GET {worst_open * 1000:.0f} ms while opening, {worst * 1000:.0f} ms while closing;"
            f" RSS before {before >> 20} MiB, with the connections {peak >> 20} MiB, after {after >> 20} MiB"
        )
        print(figures)
        assert max(worst_open, worst) < MAX_GET_SECONDS, figures
        assert after - before < RSS_SLACK, figures
    finally:
        for p in (flood, server):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
