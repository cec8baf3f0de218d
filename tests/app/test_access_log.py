"""`-v http` / `-v peer` / `-v reflector`: one access-log line per request, with the layer that answered."""

from __future__ import annotations

import logging
import re
import subprocess
import urllib.request

import aiohttp
import pytest

from prism.http.server import HttpBlobServer
from prism.peer.server import PeerServer
from prism.reflector.client import ReflectorClient
from prism.reflector.receiver import ReflectorReceiver
from prism.store.memory import MemoryStore
from prism.store.peer import PeerStore
from tests.app.test_reflector_e2e import free_ports
from tests.conftest import prism_cmd, prism_env
from tests.helpers import random_blob, running

LINE = re.compile(r"^(\S+) (.+) ([0-9a-f]{16}) (\S+) (\d+)B ([0-9.]+)ms (\S+)$")


def access_lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[tuple[str, ...]]:
    out = []
    for record in caplog.records:
        if record.name == logger:
            m = LINE.match(record.getMessage())
            assert m, record.getMessage()
            out.append(m.groups())
    return out


async def test_http_access_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="prism.http")
    store = MemoryStore("origin")
    h, d = random_blob(5000)
    await store.put(h, d)
    missing, _ = random_blob(10)
    async with running(HttpBlobServer(store, "127.0.0.1", 0)) as server, aiohttp.ClientSession() as s:
        for blob in (h, missing):
            async with s.get(f"http://127.0.0.1:{server.port}/blob", params={"hash": blob}) as r:
                await r.read()
    lines = access_lines(caplog, "prism.http.access")
    assert [(x[1], x[2], x[3], x[4], x[6]) for x in lines] == [
        ("http GET", h[:16], "200", "5000", "origin"),
        ("http GET", missing[:16], "404", "0", "-"),
    ]
    assert lines[0][0].startswith("127.0.0.1:")


async def test_peer_and_reflector_access_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="prism.peer")
    caplog.set_level(logging.DEBUG, logger="prism.reflector")
    store = MemoryStore("origin")
    h, d = random_blob(5000)
    async with running(ReflectorReceiver(store, host="127.0.0.1", port=0)) as receiver:
        async with ReflectorClient("127.0.0.1", receiver.port) as client:
            await client.send_blob(h, d)
    async with running(PeerServer(store, "127.0.0.1", 0)) as server:
        peer = PeerStore(f"127.0.0.1:{server.port}", 10)
        try:
            (await peer.get(h)).close()
        finally:
            await peer.close()
    (stored,) = access_lines(caplog, "prism.reflector.access")
    assert stored[1:5] == ("reflector PUT", h[:16], "stored", "5000")
    (sent,) = access_lines(caplog, "prism.peer.access")
    assert (*sent[1:5], sent[6]) == ("peer GET", h[:16], "sent", "5000", "origin")


def test_reflector_command_with_verbose_http_logs_each_request(tmp_path) -> None:
    h, d = random_blob(4000)
    origin = tmp_path / "origin"
    (origin / h[:2]).mkdir(parents=True)
    (origin / h[:2] / h).write_bytes(d)
    tcp, http, metrics = free_ports(3)
    argv = ["reflector", "--conf=none", "-v", "http", "--use-db=false", "--disable-uploads", "--host"]
    argv += ["127.0.0.1", "--store-path", str(origin), "--disk-cache=", "--protected-list-url="]
    argv += ["--tcp-peer-port", str(tcp), "--http-peer-port", str(http), "--metrics-port", str(metrics)]
    argv += ["--http3-peer-port", "0"]
    proc = subprocess.Popen(prism_cmd(*argv), stderr=subprocess.PIPE, text=True, env=prism_env())
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "metrics on http://" in line:
                break
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/blob?hash={h}", timeout=10) as r:
            assert r.read() == d
    finally:
        proc.terminate()
        _out, rest = proc.communicate(timeout=20)
    assert proc.returncode == 0, rest
    assert re.search(
        rf"prism\.http\.access: 127\.0\.0\.1:\d+ http GET {h[:16]} 200 4000B \S+ms disk", rest
    ), rest
