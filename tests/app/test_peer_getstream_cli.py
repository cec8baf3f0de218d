"""End to end on 127.0.0.1: `prism peer --store-path` serves streams, `prism getstream` fetches them."""

import asyncio
import hashlib
import io
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from prism.peer.server import PeerServer
from prism.store.disk import DiskStore
from prism.stream import StreamEncoder
from tests.conftest import prism_cmd, prism_env

SIZES = {"empty.bin": 0, "one.bin": 1, "exact.bin": 2097151, "fifty.bin": 50_000_000}


def start_peer(store_dir: Path, log_path: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    return start_peer_command(log_path, "peer", "--store-path", str(store_dir), *extra)


def start_peer_command(log_path: Path, *args: str) -> tuple[subprocess.Popen, int]:
    """Run `prism *args --host 127.0.0.1 --port 0` (args ending in `peer ...`); the process and its port."""
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        prism_cmd(*args, "--host", "127.0.0.1", "--port", "0"),
        env=prism_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        m = re.search(rb"listening on 127\.0\.0\.1:(\d+)", log_path.read_bytes())
        if m:
            return proc, int(m.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"prism peer did not start: {log_path.read_text()}")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A disk store holding one stream per size, encoded straight into it, and a running `prism peer`."""
    root = tmp_path_factory.mktemp("peer-e2e")
    sources = root / "sources"
    sources.mkdir()
    store = DiskStore(root / "store")
    streams = {}
    for name, size in SIZES.items():
        path = sources / name
        path.write_bytes(os.urandom(size))
        enc = StreamEncoder(name)
        with open(path, "rb") as f:
            for blob in enc.encode(f):
                store.write_blob(blob.hash, blob.data)
        store.write_blob(enc.sd_hash, enc.sd_bytes)
        streams[name] = (enc.sd_hash, path)
    proc, port = start_peer(root / "store", root / "peer.log")
    yield port, streams, root
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)


def _sha(path: Path | str) -> str:
    h = hashlib.sha384()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@pytest.mark.parametrize(
    "name",
    ["empty.bin", "one.bin", "exact.bin", pytest.param("fifty.bin", marks=pytest.mark.slow)],
)
def test_getstream_downloads_identical_file(served, tmp_path, name: str) -> None:
    port, streams, _ = served
    sd_hash, source = streams[name]
    out = tmp_path / "out"
    out.mkdir()
    cmd = prism_cmd(
        "getstream", f"127.0.0.1:{port}", sd_hash, "--out", str(out), "--blob-dir", str(tmp_path / "blobs")
    )
    done = subprocess.run(cmd, env=prism_env(), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == str(out / name)
    assert os.listdir(out) == [name]
    assert os.path.getsize(out / name) == SIZES[name]
    assert _sha(out / name) == _sha(source)
    assert b"wrote" in done.stderr  # plain log lines when stderr is not a terminal


def test_getstream_errors_exit_1(served, tmp_path) -> None:
    port, _, _ = served
    bad = subprocess.run(
        prism_cmd("getstream", f"127.0.0.1:{port}", "nothex", "--blob-dir", str(tmp_path)),
        env=prism_env(),
        capture_output=True,
        timeout=30,
    )
    assert bad.returncode == 1 and b"Error: invalid blob hash" in bad.stderr
    missing = subprocess.run(
        prism_cmd(
            "getstream", f"127.0.0.1:{port}", "0" * 96, "--blob-dir", str(tmp_path), "--out", str(tmp_path)
        ),
        env=prism_env(),
        capture_output=True,
        timeout=30,
    )
    assert missing.returncode == 1 and b"no peer has the sd blob" in missing.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_peer_stops_cleanly_on_signal(tmp_path, sig: int) -> None:
    proc, port = start_peer(tmp_path / "store", tmp_path / "peer.log")
    proc.send_signal(sig)
    assert proc.wait(timeout=10) == 0
    log = (tmp_path / "peer.log").read_text()
    assert f"peer server on port {port} stopped" in log and "Traceback" not in log


def test_peer_needs_a_store_path() -> None:
    done = subprocess.run(prism_cmd("peer", "--nodb"), env=prism_env(), capture_output=True, timeout=30)
    assert done.returncode == 1 and b"--store-path" in done.stderr


def _cached_blobs(blob_dir: Path) -> int:
    if not blob_dir.is_dir():
        return 0
    return sum(1 for p in blob_dir.glob("??/*") if len(p.name) == 96)


class _SlowStore:
    """A disk store that takes 0.25 s per get, so a download can be interrupted midway."""

    def __init__(self, inner: DiskStore) -> None:
        self.inner = inner
        self.name = "slow"

    async def has(self, blob_hash: str) -> bool:
        return await self.inner.has(blob_hash)

    async def get(self, blob_hash: str):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.25)
        return await self.inner.get(blob_hash)


async def test_ctrl_c_then_resume(tmp_path) -> None:
    data = os.urandom(20 * 2097151)
    store = DiskStore(tmp_path / "store")
    enc = StreamEncoder("resume.bin")
    for blob in enc.encode(io.BytesIO(data)):
        store.write_blob(blob.hash, blob.data)
    store.write_blob(enc.sd_hash, enc.sd_bytes)
    out = tmp_path / "out"
    out.mkdir()
    server = PeerServer(_SlowStore(store), "127.0.0.1", 0)  # type: ignore[arg-type]
    await server.start()
    try:
        argv = prism_cmd(
            "getstream", f"127.0.0.1:{server.port}", enc.sd_hash, "--out", str(out), "--blob-dir",
            str(tmp_path / "blobs"), "--parallel", "2",
        )  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *argv, env=prism_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        async with asyncio.timeout(20):  # the sd blob and two content blobs cached, of 21 needing ~2.6 s
            while _cached_blobs(tmp_path / "blobs") < 3:  # noqa: ASYNC110 - polling a directory
                await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 130, err.decode()
        assert b"run the same command again to resume" in err
        assert os.listdir(out) == []  # no partial file left, and nothing under the final name
        sent_before = server.stats.downloads
        assert 1 < sent_before < 21
        proc = await asyncio.create_subprocess_exec(
            *argv, env=prism_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        m = re.search(rb"(\d+) blobs downloaded, (\d+) from the blob cache", err)
        assert m, err.decode()
        downloaded, cached = int(m.group(1)), int(m.group(2))
        assert downloaded + cached == 21 and cached >= 3  # the sd blob and at least two content blobs
        assert server.stats.downloads - sent_before == downloaded
        assert (out / "resume.bin").read_bytes() == data
    finally:
        await server.stop(1)
