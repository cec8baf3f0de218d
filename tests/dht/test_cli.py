"""`prism dht connect|bootstrap` as real processes on 127.0.0.1: JSON-RPC, SIGTERM, saved routing table."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess

import aiohttp

from tests.conftest import prism_cmd, prism_env


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def rpc(port: int, method: str, params: dict | None = None) -> dict:
    async with aiohttp.ClientSession() as session:
        body = {"method": method, "params": [params or {}], "id": 7}
        async with session.post(f"http://127.0.0.1:{port}/", json=body) as resp:
            out = await resp.json()
    assert out["id"] == 7
    return out


async def spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *prism_cmd("--conf=none", "dht", *args),
        env=prism_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def read_until(proc: asyncio.subprocess.Process, prefix: str) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(15):
        while True:
            line = (await proc.stdout.readline()).decode()
            assert line, "process ended early"
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()


async def wait_for_contacts(rpc_port: int, want: str) -> dict:
    async with asyncio.timeout(15):
        while True:
            table = (await rpc(rpc_port, "rpc.GetRoutingTable"))["result"]
            ids = [c["ID"] for b in table["Buckets"] for c in b["Contacts"]]
            if want in ids:
                return table
            await asyncio.sleep(0.1)


async def stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    async with asyncio.timeout(15):
        return await proc.wait()


async def test_connect_bootstrap_rpc_and_saved_routing_table(tmp_path):
    boot_port, node_port, rpc_port = free_port(), free_port(), free_port(socket.SOCK_STREAM)
    boot = await spawn(
        "bootstrap",
        "--host",
        "127.0.0.1",
        "--port",
        str(boot_port),
        "--allow-private-peers",
        "--routing-table",
        str(tmp_path / "boot.json"),
    )
    node = None
    try:
        boot_id = await read_until(boot, "node id")
        node_id = os.urandom(48).hex()
        state = tmp_path / "node.json"
        node = await spawn(
            "connect",
            "--host",
            "127.0.0.1",
            "--port",
            str(node_port),
            "--nodeID",
            node_id,
            "--rpcPort",
            str(rpc_port),
            "--seeds",
            f"127.0.0.1:{boot_port}",
            "--allow-private-peers",
            "--routing-table",
            str(state),
        )
        assert await read_until(node, "node id") == node_id
        await read_until(node, "json-rpc")
        table = await wait_for_contacts(rpc_port, boot_id)
        assert table["NodeID"] == node_id and table["NumBuckets"] == len(table["Buckets"]) >= 1

        # the other JSON-RPC methods, against the bootstrap node
        assert (await rpc(rpc_port, "rpc.Ping", {"Address": f"127.0.0.1:{boot_port}"}))["result"] == "pong"
        found = await rpc(
            rpc_port,
            "rpc.FindNode",
            {"Key": node_id, "NodeID": boot_id, "IP": "127.0.0.1", "Port": boot_port},
        )
        assert found["error"] is None and isinstance(found["result"], list)
        fv = await rpc(
            rpc_port,
            "rpc.FindValue",
            {"Key": os.urandom(48).hex(), "NodeID": boot_id, "IP": "127.0.0.1", "Port": boot_port},
        )
        assert fv["result"]["Value"] == "" and isinstance(fv["result"]["Contacts"], list)
        ifv = await rpc(rpc_port, "rpc.IterativeFindValue", {"Key": os.urandom(48).hex()})
        assert ifv["result"]["FoundValue"] is False and boot_id in [
            c["ID"] for c in ifv["result"]["Contacts"]
        ]
        added = await rpc(rpc_port, "rpc.AddKnownNode", {"ID": boot_id, "IP": "127.0.0.1", "Port": boot_port})
        assert added["error"] is None
        key = os.urandom(48).hex()
        announced = await rpc(rpc_port, "rpc.Announce", {"Key": key})
        assert announced["error"] is None and announced["result"]["StoredOn"] >= 1, announced
        assert announced["result"]["PeerPort"] == 3333  # (the bootstrap node stored it: STORED_OK)
        assert "hex" in (await rpc(rpc_port, "rpc.Announce", {"Key": "zz"}))["error"]
        bad = await rpc(rpc_port, "rpc.FindNode", {"Key": "zz"})
        assert bad["result"] is None and "hex" in bad["error"]
        assert "can't find method" in (await rpc(rpc_port, "rpc.Nope"))["error"]

        # SIGTERM: clean exit, routing table saved
        assert await stop(node) == 0
        saved = json.loads(state.read_text())
        assert saved["node_id"] == node_id and boot_id in [c["id"] for c in saved["contacts"]]

        # restart without a working seed and without --nodeID: same id, rejoins through the saved table
        node = await spawn(
            "connect",
            "--host",
            "127.0.0.1",
            "--port",
            str(node_port),
            "--rpcPort",
            str(rpc_port),
            "--seeds",
            "127.0.0.1:9",
            "--allow-private-peers",
            "--routing-table",
            str(state),
        )
        assert await read_until(node, "node id") == node_id
        await read_until(node, "json-rpc")
        await wait_for_contacts(rpc_port, boot_id)
        assert await stop(node, signal.SIGINT) == 0
        node = None
    finally:
        for p in (node, boot):
            if p is not None and p.returncode is None:
                p.kill()
                await p.wait()
    assert boot.returncode is not None


def test_bad_flags():
    for args in (["connect", "--nodeID", "abc"], ["connect", "--seeds", "nohost"], ["sideways"]):
        r = subprocess.run(
            prism_cmd("--conf=none", "dht", *args), env=prism_env(), capture_output=True, timeout=30
        )
        assert r.returncode == 2, (args, r.stderr)


def test_port_in_use_names_the_flag(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        args = [
            "bootstrap",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--routing-table",
            str(tmp_path / "t"),
        ]
        r = subprocess.run(
            prism_cmd("--conf=none", "dht", *args), env=prism_env(), capture_output=True, timeout=30
        )
    assert r.returncode == 1 and b"--port" in r.stderr and b"already in use" in r.stderr, r.stderr


def test_mode_defaults_for_seeds_and_ping_delay(tmp_path):
    from prism.app.dht import BOOTSTRAP_PING_DELAY, DhtOptions, build_node
    from prism.dht import DEFAULT_SEEDS
    from prism.hostport import HostPort

    connect = build_node(DhtOptions(mode="connect", state_path=tmp_path / "c"))
    assert connect.seeds == list(DEFAULT_SEEDS) and connect.config.maybe_ping_delay == 60.0
    boot = build_node(DhtOptions(mode="bootstrap", state_path=tmp_path / "b"))
    assert boot.seeds == [] and boot.config.maybe_ping_delay == BOOTSTRAP_PING_DELAY
    given = [HostPort("127.0.0.1", 4444)]
    assert build_node(DhtOptions(mode="bootstrap", state_path=tmp_path / "g", seeds=given)).seeds == given
