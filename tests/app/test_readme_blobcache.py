"""reflector.go's README invocation of a private blobcache, run verbatim but for two substitutions.

The disk-cache path becomes a temporary directory and, in the first test, the upstream host becomes
127.0.0.1 (still without a port: an HTTP upstream means port 80, served here by a prism HTTP server
the test starts). Every other flag, and the default ports, are the README's.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest

from prism.http.server import HttpBlobServer
from prism.store.memory import MemoryStore
from tests.conftest import prism_cmd, prism_env
from tests.helpers import random_blob

README_ARGV = (
    "reflector --conf=none --disable-uploads=true --use-db=false --upstream-reflector=reflector.lbry.com "
    "--upstream-protocol=http --request-queue-size=200 --disk-cache=2GB:/path/to/your/storage/:localdb"
).split()
HTTP_PORT = 5569  # the README keeps reflector.go's default ports
METRICS_PORT = 2112


def readme_argv(cache_dir: Path, upstream: str = "reflector.lbry.com") -> list[str]:
    """The README's argv with the disk-cache path and the upstream host replaced, nothing else."""
    argv = [a.replace("/path/to/your/storage/", f"{cache_dir}/") for a in README_ARGV]
    return [a.replace("=reflector.lbry.com", f"={upstream}") for a in argv]


@contextmanager
def reflector_process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(prism_cmd(*argv), stdout=out, stderr=out, env=prism_env())
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"prism exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", METRICS_PORT), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"prism did not start:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, log.read_text()[-3000:]


def alarming(log_text: str) -> list[str]:
    """WARNING and ERROR lines: a blobcache with no network (no protected list) logs none by itself."""
    return [line for line in log_text.splitlines() if " WARNING " in line or " ERROR " in line]


async def get_blob(session: aiohttp.ClientSession, blob_hash: str) -> tuple[int, bytes]:
    async with session.get(f"http://127.0.0.1:{HTTP_PORT}/blob", params={"hash": blob_hash}) as r:
        return r.status, await r.read()


async def test_readme_blobcache_fetches_through_a_portless_http_upstream(tmp_path: Path) -> None:
    blob_hash, data = random_blob(2 * 1024 * 1024)
    origin = MemoryStore()
    await origin.put(blob_hash, data)
    upstream = HttpBlobServer(origin, "127.0.0.1", 80)
    try:
        await upstream.start()
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            pytest.fail("port 80 is taken: this test serves the README's port-less upstream there")
        raise
    try:
        cache = tmp_path / "storage"
        with reflector_process(readme_argv(cache, "127.0.0.1"), tmp_path / "prism.log"):
            async with aiohttp.ClientSession() as session:
                status, body = await get_blob(session, blob_hash)
        assert status == 200
        assert body == data
    finally:
        await upstream.stop(0.1)
    cached = cache / blob_hash[:2] / blob_hash
    assert cached.read_bytes() == data
    assert alarming((tmp_path / "prism.log").read_text()) == []


async def test_readme_blobcache_with_an_unresolvable_upstream(tmp_path: Path) -> None:
    cache = tmp_path / "storage"
    blob_hash, data = random_blob(100_000)
    (cache / blob_hash[:2]).mkdir(parents=True)
    (cache / blob_hash[:2] / blob_hash).write_bytes(data)
    log = tmp_path / "prism.log"
    missing, _ = random_blob(1000)
    other_missing, _ = random_blob(1001)
    with reflector_process(readme_argv(cache), log):
        async with aiohttp.ClientSession() as session:
            assert await get_blob(session, blob_hash) == (200, data)
            for h in (missing, other_missing, missing):
                started = time.monotonic()
                status, body = await get_blob(session, h)
                assert time.monotonic() - started < 2.0
                assert status >= 500
                assert body == b"internal error\n"  # the detail is in the log, once (issue 18 item 7)
    text = log.read_text()
    assert "Traceback" not in text
    failures = [line for line in text.splitlines() if "reflector.lbry.com" in line]
    assert len(failures) == 1, text
    assert alarming(text) == failures
    assert os.path.exists(cache / blob_hash[:2] / blob_hash)
