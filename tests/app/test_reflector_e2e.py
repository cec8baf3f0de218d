"""End to end, separate processes on 127.0.0.1 (the acceptance checks of `prism reflector`):

origin (`--store-path`, receives `prism send`) ← A over tcp ← B over http ← C over http3.
A stream fetched from C through each of its servers is byte-identical; `Via` names each hop;
B (C's http3 upstream) killed and restarted, C recovers without a restart of its own;
100 concurrent GETs of an uncached blob make one request at the origin; /metrics moves;
SIGTERM exits 0; C restarted with every upstream stopped serves the stream from its disk.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from prism.http.h3client import Http3Client
from prism.store.trace import BlobTrace
from prism.stream import SdBlob, StreamDecoder
from tests.conftest import prism_cmd, prism_env

pytestmark = pytest.mark.slow


def free_ports(n: int, kind: int = socket.SOCK_STREAM) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, kind)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Node:
    """One `prism reflector` process with its own ports and directories."""

    def __init__(self, name: str, workdir: Path, conf: Path, *flags: str) -> None:
        self.name = name
        self.receiver, self.tcp, self.http, self.metrics = free_ports(4)
        (self.h3,) = free_ports(1, socket.SOCK_DGRAM)
        self.log = workdir / f"{name}.log"
        self.cache = workdir / f"{name}-cache"
        self.args = [
            "--conf",
            str(conf),
            "reflector",
            "--host",
            "127.0.0.1",
            "--receiver-port",
            str(self.receiver),
            "--tcp-peer-port",
            str(self.tcp),
            "--http-peer-port",
            str(self.http),
            "--http3-peer-port",
            str(self.h3),
            "--metrics-port",
            str(self.metrics),
            "--use-db=false",
            "--shutdown-grace",
            "2",
            *flags,
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Node:
        with open(self.log, "ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(prism_cmd(*self.args), stdout=out, stderr=out, env=prism_env())
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.metrics), 0.2).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"{self.name} did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"{self.name} ignored SIGTERM") from None
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def metric(session: aiohttp.ClientSession, node: Node, series: str) -> float:
    async with session.get(f"http://127.0.0.1:{node.metrics}/metrics") as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


async def http_get(session: aiohttp.ClientSession, node: Node, h: str) -> tuple[bytes, str]:
    async with session.get(f"http://127.0.0.1:{node.http}/blob", params={"hash": h}) as r:
        assert r.status == 200, (r.status, await r.text())
        return await r.read(), r.headers.get("Via", "")


async def peer_get(node: Node, h: str) -> bytes:
    from prism.store.peer import PeerStore

    store = PeerStore(f"127.0.0.1:{node.tcp}", 20)
    try:
        with await store.get(h) as ref:
            return ref.read()
    finally:
        await store.close()


async def send(node: Node, source: Path) -> str:
    """`prism send` the file to the node's receiver; the stream's sd hash."""
    sent = await asyncio.to_thread(
        subprocess.run,
        prism_cmd("--conf", "none", "send", f"127.0.0.1:{node.receiver}", str(source)),
        capture_output=True,
        text=True,
        timeout=60,
        env=prism_env(),
    )
    assert sent.returncode == 0, sent.stderr
    return str(json.loads(sent.stdout)["sd_hash"])


def decode(sd_bytes: bytes, blobs: dict[str, bytes]) -> bytes:
    sd = SdBlob.parse(sd_bytes)
    out = io.BytesIO()
    StreamDecoder(sd).decode(lambda info: blobs[info.blob_hash], out)
    return out.getvalue()


async def test_chain_origin_tcp_http_http3(tmp_path: Path):
    conf = tmp_path / "config.json"
    conf.write_text(json.dumps({"protected_list_url": ""}))  # never reach the public API from a test
    source = tmp_path / "movie.bin"
    payload = os.urandom(5 * 1024 * 1024 + 12345)
    source.write_bytes(payload)

    origin = Node(
        "origin", tmp_path, conf, "--store-path", str(tmp_path / "origin-store"), "--disk-cache", ""
    )
    nodes = [origin]
    try:
        origin.start()
        sd_hash = await send(origin, source)
        later = tmp_path / "later.bin"
        later.write_bytes(os.urandom(300_000))
        later_sd_hash = await send(origin, later)  # first asked for after the http3 upstream restarts

        def cache_flag(node_name: str) -> str:
            return f"1GB:{tmp_path / (node_name + '-cache')}:lru"

        a = Node(
            "A",
            tmp_path,
            conf,
            "--disable-uploads",
            "--upstream-reflector",
            f"127.0.0.1:{origin.tcp}",
            "--upstream-protocol",
            "tcp",
            "--disk-cache",
            cache_flag("A"),
        )
        nodes.append(a.start())
        b = Node(
            "B",
            tmp_path,
            conf,
            "--disable-uploads",
            "--upstream-reflector",
            f"127.0.0.1:{a.http}",
            "--upstream-protocol",
            "http",
            "--disk-cache",
            cache_flag("B"),
        )
        nodes.append(b.start())
        c_flags = [
            "--disable-uploads",
            "--upstream-reflector",
            f"127.0.0.1:{b.h3}",
            "--upstream-protocol",
            "http3",
            "--disk-cache",
            cache_flag("C"),
        ]
        c = Node("C", tmp_path, conf, *c_flags)
        nodes.append(c.start())

        async with aiohttp.ClientSession() as session:
            sd_bytes, via = await http_get(session, c, sd_hash)
            sd = SdBlob.parse(sd_bytes)
            hashes = [info.blob_hash for info in sd.content_blobs]
            names = [s.origin_name for s in BlobTrace.from_json(via).stacks]
            # A's peer client stack, then B's http client, then C's http3 client, in that order.
            assert "peer" in names and "http" in names and "http3" in names, names
            assert names.index("peer") < names.index("http") < names.index("http3"), names

            # 100 concurrent GETs of an uncached blob: one request reaches the origin.
            before = await metric(session, origin, "reflector_blob_download_total")
            results = await asyncio.gather(*(http_get(session, c, hashes[0]) for _ in range(100)))
            assert len({body for body, _ in results}) == 1
            after = await metric(session, origin, "reflector_blob_download_total")
            assert after - before == 1

            via_http = {}
            blobs_http = {}
            for h in hashes:
                blobs_http[h], via_http[h] = await http_get(session, c, h)
            assert decode(sd_bytes, blobs_http) == payload

            h3 = Http3Client(f"127.0.0.1:{c.h3}", timeout=20)
            try:
                blobs_h3 = {}
                for h in [sd_hash, *hashes]:
                    r = await h3.get(f"/get/{h}?trace=true")
                    assert r.status == 200
                    blobs_h3[h] = r.body
                    assert "via" in r.headers
            finally:
                await h3.close()
            assert blobs_h3[sd_hash] == sd_bytes
            assert all(blobs_h3[h] == blobs_http[h] for h in hashes)

            blobs_peer = {h: await peer_get(c, h) for h in [sd_hash, *hashes]}
            assert blobs_peer[sd_hash] == sd_bytes
            assert all(blobs_peer[h] == blobs_http[h] for h in hashes)

            assert await metric(session, c, "reflector_http_out_bytes") >= sum(map(len, blobs_http.values()))
            assert await metric(session, c, "reflector_udp_out_bytes") > 0
            assert await metric(session, c, "reflector_udp_in_bytes") > 0
            assert await metric(session, b, "reflector_udp_out_bytes") > 0
            assert await metric(session, a, "reflector_http_out_bytes") > 0
            assert await metric(session, a, "reflector_tcp_in_bytes") > 0

            # C's http3 upstream (B) dies without closing its QUIC connections and comes back on
            # the same port: C, never restarted, finds the old connection dead and reconnects.
            b.kill()
            b.start()
            t0 = time.monotonic()
            later_bytes, via = await http_get(session, c, later_sd_hash)
            assert SdBlob.parse(later_bytes).content_blobs
            assert "http3" in [s.origin_name for s in BlobTrace.from_json(via).stacks]
            assert time.monotonic() - t0 < 15, "C took too long to recover from B's restart"

        # Every upstream stops (gracefully: exit 0); C restarts and serves from its disk cache.
        for node in (c, b, a, origin):
            assert node.stop() == 0, node.log.read_text()[-2000:]
        c2 = Node("C", tmp_path, conf, *c_flags)
        nodes.append(c2.start())
        async with aiohttp.ClientSession() as session:
            again = {h: (await http_get(session, c2, h))[0] for h in hashes}
            sd_again, _ = await http_get(session, c2, sd_hash)
        assert sd_again == sd_bytes
        assert decode(sd_again, again) == payload
        assert c2.stop() == 0
    finally:
        for node in nodes:
            node.kill()
