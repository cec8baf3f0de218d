"""`prism send` / `sendblob` processes into an in-process receiver on 127.0.0.1 (store inspected directly)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import subprocess
from pathlib import Path

import pytest

from prism.reflector.receiver import ReflectorReceiver
from prism.store.memory import MemoryStore
from prism.stream import SdBlob, StreamDecoder
from tests.conftest import prism_cmd, prism_env
from tests.helpers import CountingStore, running


async def run_prism(*args: str, limit: float = 120) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *prism_cmd(*args), env=prism_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), limit)
    return proc.returncode or 0, out.decode(), err.decode()


def decode_from_store(store: MemoryStore, sd_hash: str) -> bytes:
    """Fetch the blobs from the store and decode them (test_e2e.py downloads through the peer server)."""
    sd = SdBlob.parse(store.blobs[sd_hash])
    out = io.BytesIO()
    StreamDecoder(sd).decode(lambda info: store.blobs[info.blob_hash], out)
    return out.getvalue()


def pattern(size: int) -> bytes:
    return os.urandom(min(size, 1 << 20)) * (size // (1 << 20) + 1)


@pytest.mark.parametrize("size", [0, 1, 2097151, 50 * 1024 * 1024])
async def test_send_then_decode(tmp_path: Path, size: int) -> None:
    data = pattern(size)[:size]
    path = tmp_path / "my file?.bin"
    path.write_bytes(data)
    store = CountingStore()
    receiver = ReflectorReceiver(store, host="127.0.0.1", port=0, timeout=30)
    await receiver.start()
    try:
        cache = tmp_path / "sd-cache"
        code, out, err = await run_prism(
            "send", f"127.0.0.1:{receiver.port}", str(path), "--sd-cache", str(cache)
        )
        assert code == 0, err
        printed = json.loads(out)
        assert out == json.dumps(printed, indent=2) + "\n"
        assert printed["source_hash"] == hashlib.sha384(data).hexdigest()
        sd = SdBlob.parse(store.blobs[printed["sd_hash"]])
        assert sd.name == "my file?.bin" and sd.file_name == "my file.bin"  # sanitised per lbry-wire.md §2.2
        assert decode_from_store(store, printed["sd_hash"]) == data
        assert (cache / "my file?.bin.sdblob").read_bytes() == store.blobs[printed["sd_hash"]]
        # A second send with the same cache: the same stream, no content-blob bytes, no sd bytes.
        before = (receiver.stats.bytes_received, dict(store.put_counts))
        code, out2, err = await run_prism(
            "send", f"127.0.0.1:{receiver.port}", str(path), "--sd-cache", str(cache)
        )
        assert code == 0, err
        assert json.loads(out2) == printed
        assert (receiver.stats.bytes_received, dict(store.put_counts)) == before
    finally:
        await receiver.stop()


@pytest.mark.parametrize("spool_mb", ["0", "3"])
async def test_send_with_a_small_spool(tmp_path: Path, spool_mb: str) -> None:
    data = pattern(5 * 1024 * 1024)  # three blobs: none kept, or the first one
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    store = CountingStore()
    async with running(ReflectorReceiver(store, host="127.0.0.1", port=0, timeout=30)) as receiver:
        code, out, err = await run_prism(
            "send", f"127.0.0.1:{receiver.port}", str(path), "--spool-mb", spool_mb
        )
    assert code == 0, err
    assert decode_from_store(store, json.loads(out)["sd_hash"]) == data


async def test_killed_send_resumes_with_missing_blobs_only(tmp_path: Path) -> None:
    data = pattern(30 * 1024 * 1024)[: 30 * 1024 * 1024]  # 16 content blobs
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    cache = tmp_path / "cache"
    store = CountingStore(put_delay=0.1)
    receiver = ReflectorReceiver(store, host="127.0.0.1", port=0, timeout=30)
    await receiver.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            *prism_cmd("send", f"127.0.0.1:{receiver.port}", str(path), "--sd-cache", str(cache)),
            env=prism_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            while len(store.put_counts) < 7:  # the sd blob and 6 content blobs
                store.stored.clear()
                await store.stored.wait()
        proc.kill()
        await proc.wait()
        first = set(store.put_counts)
        assert 6 <= receiver.stats.blobs_received < 16
        store.put_delay = 0
        code, out, err = await run_prism(
            "send", f"127.0.0.1:{receiver.port}", str(path), "--sd-cache", str(cache)
        )
        assert code == 0, err
        sd_hash = json.loads(out)["sd_hash"]
        sd = SdBlob.parse(store.blobs[sd_hash])
        assert len(sd.content_blobs) == 16
        assert max(store.put_counts.values()) == 1  # nothing was sent twice
        assert set(store.put_counts) - first == {b.blob_hash for b in sd.content_blobs} - first
        assert decode_from_store(store, sd_hash) == data
    finally:
        await receiver.stop()


async def test_send_failures_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x")
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    code, out, err = await run_prism("send", f"127.0.0.1:{port}", str(path))
    assert code == 1 and out == "" and "cannot connect to reflector" in err
    code, out, err = await run_prism("send", "nonsense", str(path))
    assert code == 1 and "bad address" in err
    code, out, err = await run_prism("send", f"127.0.0.1:{port}", str(tmp_path / "missing"))
    assert code == 1 and "not a readable file" in err
    # A cached sd blob that no longer matches the file.
    store = MemoryStore()
    receiver = ReflectorReceiver(store, host="127.0.0.1", port=0)
    await receiver.start()
    try:
        cache = tmp_path / "c"
        assert (await run_prism("send", f"127.0.0.1:{receiver.port}", str(path), "--sd-cache", str(cache)))[
            0
        ] == 0
        path.write_bytes(b"y")
        store.blobs.clear()
        code, out, err = await run_prism(
            "send", f"127.0.0.1:{receiver.port}", str(path), "--sd-cache", str(cache)
        )
        assert code == 1 and "changed" in err
    finally:
        await receiver.stop()


async def test_sendblob(tmp_path: Path) -> None:
    store = MemoryStore()
    receiver = ReflectorReceiver(store, host="127.0.0.1", port=0)
    await receiver.start()
    try:
        code, out, err = await run_prism("sendblob", f"127.0.0.1:{receiver.port}")
        assert code == 0, err
        blob_hash = json.loads(out)["blob_hash"]
        assert len(store.blobs[blob_hash]) == 1024
        path = tmp_path / "s.txt"
        path.write_bytes(b"hello" * 1000)
        code, out, err = await run_prism("sendblob", f"127.0.0.1:{receiver.port}", str(path))
        assert code == 0, err
        assert decode_from_store(store, json.loads(out)["sd_hash"]) == b"hello" * 1000
    finally:
        await receiver.stop()


def test_progress_bar_draws_only_when_enabled(capsys: pytest.CaptureFixture[str]) -> None:
    from prism.app.send import upload_progress

    bar = upload_progress(4, enabled=True)
    bar.advance(1, 0)
    bar.advance(2, 4_000_000)
    bar.finish()
    err = capsys.readouterr().err
    assert "3/4 blobs" in err and "4.0 MB sent" in err and err.endswith("\n")
    quiet = upload_progress(4, enabled=False)
    quiet.advance(4, 10)
    quiet.finish()
    assert capsys.readouterr().err == "" and quiet.done == 4


async def test_send_version_0(tmp_path: Path) -> None:
    data = os.urandom(3_000_000)
    path = tmp_path / "v0.bin"
    path.write_bytes(data)
    store = MemoryStore()
    receiver = ReflectorReceiver(store, host="127.0.0.1", port=0)
    await receiver.start()
    try:
        code, out, err = await run_prism(
            "send", f"127.0.0.1:{receiver.port}", str(path), "--protocol-version", "0"
        )
        assert code == 0, err
        assert decode_from_store(store, json.loads(out)["sd_hash"]) == data
    finally:
        await receiver.stop()


class ForgetfulStore(MemoryStore):
    """Acknowledges every blob but keeps only the sd blob: a reflector that loses data."""

    async def put(self, blob_hash: str, data: bytes) -> None:
        pass

    async def put_sd(self, blob_hash: str, data: bytes) -> None:
        self.blobs[blob_hash] = bytes(data)


async def test_send_fails_when_the_reflector_still_lacks_blobs_after_the_upload(tmp_path: Path) -> None:
    path = tmp_path / "three-blobs.bin"
    path.write_bytes(pattern(5 * 1024 * 1024)[: 5 * 1024 * 1024])
    store = ForgetfulStore()
    async with running(ReflectorReceiver(store, host="127.0.0.1", port=0, timeout=30)) as receiver:
        code, out, err = await run_prism("send", f"127.0.0.1:{receiver.port}", str(path))
    assert code == 1, (out, err)
    assert "the reflector still lacks 3 blob(s)" in err and "run the same send again" in err
    assert out == ""
