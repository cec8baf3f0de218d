"""An operator's mistake never gets a traceback: exit 1 and one sentence naming the flag or key.

One line per case: the argv (with `{name}` filled in from `Setting`) and the flag or key the
error must name. Every case must finish within `LIMIT` seconds.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from prism.http.server import HttpBlobServer
from prism.store.memory import MemoryStore
from tests.conftest import prism_cmd, prism_env

LIMIT = 15.0
PORTS = "--host 127.0.0.1 --receiver-port 0 --tcp-peer-port 0 --http-peer-port 0 --http3-peer-port 0 --metrics-port 0"
REFLECTOR = f"--conf=none reflector --use-db=false {PORTS}"
ORIGIN = "--store-path {tmp}/origin"

CASES = [
    (f"{REFLECTOR} {ORIGIN} --disk-cache=2GB:/proc/x:lru", "--disk-cache"),
    (f"{REFLECTOR} {ORIGIN} --disk-cache=2GB:/etc/passwd/dc:lru", "--disk-cache"),
    (f"{REFLECTOR} {ORIGIN} --optional-disk-cache=1GB:{{file}}/dc:lru --disk-cache=", "--optional-disk-cache"),
    (f"{REFLECTOR} --store-path /proc/x --disk-cache=", "--store-path"),
    (f"{REFLECTOR} --store-path {{file}} --disk-cache=", "--store-path"),
    (f"--conf={{db_garbage}} reflector {PORTS} {ORIGIN} --disk-cache=", "db_conn"),
    (f"--conf={{local_db_garbage}} reflector --use-db=false {PORTS} {ORIGIN} --disk-cache=1GB:{{tmp}}/dc:localdb", "local_db_conn"),
    ("--conf=none dht connect --port {udp_busy} --seeds 127.0.0.1:9", "--port"),
    ("--conf=none dht bootstrap --port {udp_busy}", "--port"),
    ("--conf=none dht connect --port 0 --rpcPort {tcp_busy} --seeds 127.0.0.1:9", "--rpcPort"),
    ("--conf=none dht bootstrap --port 0 --rpcPort {tcp_busy}", "--rpcPort"),
    ("--conf=none send --sd-cache /proc/x/sd 127.0.0.1:{http_port} {file}", "--sd-cache"),
    ("--conf=none send --sd-cache {file}/sd 127.0.0.1:{http_port} {file}", "--sd-cache"),
    ("--conf=none send 127.0.0.1:{http_port} {file}", "reflector's receiver port"),
]  # fmt: skip


@dataclass
class Setting:
    """What the cases' `{name}`s stand for."""

    tmp: Path
    file: Path
    db_garbage: Path
    local_db_garbage: Path
    udp_busy: int
    tcp_busy: int
    http_port: int


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    """A prism HTTP blob server (not a reflector receiver) on a thread of its own."""
    loop = asyncio.new_event_loop()
    server = HttpBlobServer(MemoryStore(), "127.0.0.1", 0)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        yield server.port
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(0.1), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def setting(tmp_path: Path, http_port: int) -> Iterator[Setting]:
    file = tmp_path / "a-file"
    file.write_bytes(b"x" * 5000)
    db_garbage = tmp_path / "db.json"
    db_garbage.write_text('{"db_conn": "garbage", "protected_list_url": ""}')
    local_db_garbage = tmp_path / "localdb.json"
    local_db_garbage.write_text('{"local_db_conn": "garbage", "protected_list_url": ""}')
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        udp.bind(("0.0.0.0", 0))
        tcp.bind(("0.0.0.0", 0))
        tcp.listen()
        yield Setting(
            tmp_path,
            file,
            db_garbage,
            local_db_garbage,
            udp.getsockname()[1],
            tcp.getsockname()[1],
            http_port,
        )


@pytest.mark.parametrize(("argv", "needle"), CASES)
def test_mistake_exits_1_naming_the_flag_without_a_traceback(
    setting: Setting, argv: str, needle: str
) -> None:
    args = argv.format(**vars(setting)).split()
    started = time.monotonic()
    r = subprocess.run(prism_cmd(*args), capture_output=True, text=True, timeout=LIMIT, env=prism_env())
    took = time.monotonic() - started
    assert r.returncode == 1, r.stderr
    assert needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert took < LIMIT
