"""`--host ::` listens dual-stack: every server answers on [::1] and on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from pathlib import Path

import aiohttp

from prism.dht.config import DhtConfig
from prism.dht.node import DhtNode
from prism.dht.rpc import DhtRpcServer
from prism.hostport import bind_socket
from prism.http.h3client import Http3Client
from prism.store.peer import PeerStore
from tests.app.test_reflector_e2e import free_ports
from tests.conftest import prism_cmd, prism_env
from tests.helpers import random_blob, running

HOSTS = ("127.0.0.1", "[::1]")


def test_bind_socket_on_any_ipv6_address_takes_ipv4_too() -> None:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with bind_socket("::", 0, kind) as sock:
            assert sock.family == socket.AF_INET6
            assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0


async def _wait_for_log(log: Path, needle: str, proc: subprocess.Popen[bytes]) -> str:
    for _ in range(300):
        text = log.read_text()
        if needle in text:
            return text
        assert proc.poll() is None, text
        await asyncio.sleep(0.1)
    raise AssertionError(f"{needle!r} never logged:\n{log.read_text()}")


async def test_reflector_on_host_any_v6_answers_http_peer_and_http3_on_both_families(tmp_path: Path) -> None:
    blob_hash, data = random_blob(300_000)
    origin = tmp_path / "origin"
    (origin / blob_hash[:2]).mkdir(parents=True)
    (origin / blob_hash[:2] / blob_hash).write_bytes(data)
    tcp, http, metrics, receiver = free_ports(4)
    (h3,) = free_ports(1, socket.SOCK_DGRAM)
    conf = tmp_path / "config.json"
    conf.write_text(json.dumps({"protected_list_url": ""}))
    argv = ["--conf", str(conf), "reflector", "--host", "::", "--use-db=false", "--disk-cache="]
    argv += ["--store-path", str(origin), "--tcp-peer-port", str(tcp), "--http-peer-port", str(http)]
    argv += ["--http3-peer-port", str(h3), "--metrics-port", str(metrics), "--receiver-port", str(receiver)]
    log = tmp_path / "prism.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(prism_cmd(*argv), stdout=out, stderr=out, env=prism_env())  # noqa: ASYNC220
    try:
        text = await _wait_for_log(log, "metrics on http://", proc)
        assert f"HTTP blob server listening on [::]:{http}" in text
        async with aiohttp.ClientSession() as session:
            for host in HOSTS:
                async with session.get(f"http://{host}:{http}/blob", params={"hash": blob_hash}) as r:
                    assert r.status == 200 and await r.read() == data, host
                async with session.get(f"http://{host}:{metrics}/metrics") as r:
                    assert r.status == 200, host
                store = PeerStore(f"{host}:{tcp}", 10)
                try:
                    with await store.get(blob_hash) as ref:
                        assert ref.read() == data, host
                finally:
                    await store.close()
                client = Http3Client(f"{host}:{h3}", 10)
                try:
                    resp = await client.get(f"/get/{blob_hash}")
                    assert resp.status == 200 and resp.body == data, host
                finally:
                    await client.close()
                with socket.create_connection((host.strip("[]"), receiver), 5):
                    pass
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 20)


async def test_dht_node_and_its_rpc_on_host_any_v6_answer_both_families() -> None:
    a = DhtNode(host="::", port=0, seeds=(), config=DhtConfig(allow_private_peers=True))
    b = DhtNode(host="127.0.0.1", port=0, seeds=(), config=DhtConfig(allow_private_peers=True))
    async with running(a), running(b), running(DhtRpcServer(a, "::", 0)) as rpc:
        # b (IPv4 only) pings a over IPv4: a's dual-stack socket answers to the IPv4 address.
        assert await b.ping(("127.0.0.1", a.port))
        async with aiohttp.ClientSession() as session:
            for host in HOSTS:
                body = {"method": "Ping", "params": [{"Address": f"127.0.0.1:{b.port}"}], "id": 1}
                async with session.post(f"http://{host}:{rpc.port}/", json=body) as r:
                    assert r.status == 200 and (await r.json())["error"] is None, host


async def test_dht_rpc_listens_on_the_nodes_host_only() -> None:
    node = DhtNode(host="127.0.0.1", port=0, seeds=())
    async with running(node), running(DhtRpcServer(node, "127.0.0.1", 0)) as rpc:
        with socket.socket(socket.AF_INET6) as s:
            assert s.connect_ex(("::1", rpc.port)) != 0
