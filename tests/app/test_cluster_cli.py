"""`prism cluster start|join` print the same membership; `prism start` refuses bad setups in one sentence."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from prism.cluster.agent import MISSING_SERF
from prism.config import MysqlParams
from tests.cluster.nodes import store_hashes
from tests.cluster.ports import free_cluster_ports
from tests.conftest import prism_cmd, prism_env
from tests.s3server import SeaweedFS, one_error_line, write_config

pytestmark = pytest.mark.slow


def membership_lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.startswith("membership:")]


def spawn(log: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(prism_cmd(*args), stdout=out, stderr=out, env=prism_env())


async def test_cluster_start_and_two_joins_print_the_same_membership(tmp_path: Path) -> None:
    [port] = free_cluster_ports(1)
    procs: list[subprocess.Popen[bytes]] = []
    logs = [tmp_path / f"{i}.log" for i in range(3)]
    try:
        for i, log in enumerate(logs):
            mode = "start" if i == 0 else "join"
            procs.append(spawn(log, "cluster", mode, "--cluster-port", str(port), "--host", "127.0.0.1"))
            if i == 0:  # the joiners need the first agent up
                for _ in range(200):
                    if membership_lines(log):
                        break
                    await asyncio.sleep(0.05)

        def last() -> list[str]:
            return [(membership_lines(p) or [""])[-1] for p in logs]

        for _ in range(300):
            if all(" of 3: " in ln for ln in last()):
                break
            await asyncio.sleep(0.05)
        lines = last()
        assert all(" of 3: " in ln for ln in lines), [p.read_text() for p in logs]
        members = {ln.split(": ", 2)[2] for ln in lines}
        assert len(members) == 1 and len(members.pop().split()) == 3
        assert sorted(ln.split(": ")[1] for ln in lines) == ["1 of 3", "2 of 3", "3 of 3"]
        procs[2].terminate()  # leaves: the others see two
        procs[2].wait(20)
        for _ in range(300):
            if all(" of 2: " in ln for ln in last()[:2]):
                break
            await asyncio.sleep(0.05)
        assert all(" of 2: " in ln for ln in last()[:2])
    finally:
        for p in procs:
            p.kill()
            p.wait()


async def start_refused(conf: Path | str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run `prism start` expected to refuse at once: its one error line."""
    proc = await asyncio.create_subprocess_exec(
        *prism_cmd("--conf", str(conf), "start", *args),
        env=env or prism_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1, (out, err)
    return one_error_line(err.decode())


async def test_start_refuses_missing_serf_a_taken_port_and_no_origin(
    tmp_path: Path, seaweedfs: SeaweedFS, s3_bucket: str, mysql_database: MysqlParams
) -> None:
    conf = write_config(tmp_path / "config.json", seaweedfs, s3_bucket, mysql_database)
    ports = ["--peer-port", "0", "--reflector-port", "0", "--dht-port", "0", "--host", "127.0.0.1"]
    ports += ["--http-peer-port", "0", "--http3-peer-port", "0", "--metrics-port", "0"]
    no_serf = {**prism_env(), "PATH": str(tmp_path)}
    assert await start_refused(conf, "new", *ports, env=no_serf) == f"Error: {MISSING_SERF}"
    assert "apt-get install serf" in MISSING_SERF

    [taken] = free_cluster_ports(1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", taken))
        line = await start_refused(conf, "new", "--cluster-port", str(taken), *ports)
    assert line.startswith("Error: --cluster-port:") and "in use" in line, line

    assert "S3 bucket" in await start_refused("none", "new", *ports)
    no_db = write_config(tmp_path / "no-db.json", seaweedfs, s3_bucket)
    assert "db_conn" in await start_refused(no_db, "new", *ports)
    assert "--hash-range" in await start_refused(conf, "new", "--hash-range", "zz", *ports)
    assert "SEED" in await start_refused(conf, "nowhere", *ports)


async def test_start_over_a_disk_origin_announces_its_catalogue_and_stops_on_sigterm(
    tmp_path: Path, mysql_database: MysqlParams
) -> None:
    """`--store-path` instead of S3 (the DB is still where the hashes come from); SIGTERM exits 0."""
    db = mysql_database
    conf = tmp_path / "config.json"
    conf.write_text(
        json.dumps({"db_conn": f"{db.user}:{db.password}@tcp({db.host}:{db.port})/{db.database}"})
    )
    store_hashes(db, 50)
    [port] = free_cluster_ports(1)
    args = ["--conf", str(conf), "start", "new", "--store-path", str(tmp_path / "blobs"), "--cluster-port"]
    args += [str(port), "--host", "127.0.0.1", "--dht-seeds", "127.0.0.1:1", "--hash-range", "0-ff"]
    for flag in ("--peer-port", "--reflector-port", "--dht-port", "--http-peer-port", "--http3-peer-port"):
        args += [flag, "0"]
    log = tmp_path / "node.log"
    proc = spawn(log, *args, "--metrics-port", "0")
    try:
        for _ in range(400):
            if "slice 1 of 1:" in log.read_text() or proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        line = next((ln for ln in log.read_text().splitlines() if ln.startswith("slice ")), log.read_text())
        # --hash-range 0-ff: only hashes below 0x100 (none of 50 random ones), whatever the position
        assert line == f"slice 1 of 1: {'0' * 96}-{'0' * 94}ff: 0 hashes"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0
    finally:
        proc.kill()
        proc.wait()
