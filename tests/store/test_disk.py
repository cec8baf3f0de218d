import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from prism.blob import sha384_hex
from prism.store import BlobNotFound, DiskStore, MemoryStore
from tests.conftest import prism_env


def blob(i: int, size: int = 1000) -> tuple[str, bytes]:
    data = i.to_bytes(4, "big") * (size // 4)
    return sha384_hex(data), data


@pytest.mark.parametrize("kind", ["mem", "disk"])
async def test_store_semantics(kind: str, tmp_path) -> None:
    store = MemoryStore() if kind == "mem" else DiskStore(tmp_path / "blobs")
    h, data = blob(1)
    assert not await store.has(h)
    with pytest.raises(BlobNotFound) as exc:
        await store.get(h)
    assert str(exc.value) == "blob not found"
    await store.put(h, data)
    assert await store.has(h)
    with await store.get(h) as ref:
        assert ref.size == len(data) and ref.read() == data
        assert ref.trace.stacks[0].origin_name == store.name
    await store.put_sd(h, data)
    await store.delete(h)
    await store.delete(h)  # idempotent
    assert not await store.has(h)
    await store.close()


async def test_disk_layout_and_listing(tmp_path) -> None:
    store = DiskStore(tmp_path)
    hashes = []
    for i in range(20):
        h, data = blob(i, 64)
        await store.put(h, data)
        hashes.append(h)
        assert os.path.isfile(tmp_path / h[:2] / h)
    (tmp_path / "ab").mkdir(exist_ok=True)
    (tmp_path / "ab" / "not-a-blob").write_bytes(b"x")
    assert sorted(await store.list_hashes()) == sorted(hashes)
    assert os.listdir(tmp_path / "tmp") == []


async def test_disk_rejects_bad_hash_before_touching_paths(tmp_path) -> None:
    store = DiskStore(tmp_path)
    for bad in ["../../etc/passwd", "", "A" * 96]:
        with pytest.raises(ValueError):
            await store.put(bad, b"x")
        with pytest.raises(ValueError):
            await store.get(bad)


async def test_get_survives_delete_while_open(tmp_path) -> None:
    store = DiskStore(tmp_path)
    h, data = blob(7, 4096)
    await store.put(h, data)
    ref = await store.get(h)
    await store.delete(h)
    assert ref.read() == data  # the open file keeps the bytes readable


async def test_listing_100k_blobs(tmp_path) -> None:
    # Correctness only; the speed (index rebuild over 100,000 blobs) is measured by bench/cache.py.
    store = DiskStore(tmp_path)
    names = [sha384_hex(i.to_bytes(4, "big")) for i in range(100_000)]
    for name in names:  # direct file creation: we time the listing, not the writes
        d = tmp_path / name[:2]
        d.mkdir(exist_ok=True)
        (d / name).touch()
    listed = await store.list_hashes()
    assert sorted(listed) == sorted(names)


WRITER = textwrap.dedent(
    """
    import asyncio, os, sys, time
    from prism.store import DiskStore
    real_fsync = os.fsync
    def stall(fd):
        print("IN_PUT", flush=True)
        time.sleep(60)
    os.fsync = stall
    store = DiskStore(sys.argv[1])
    data = os.urandom(2 * 1024 * 1024)
    asyncio.run(store.put(sys.argv[2], data))
    """
)


def test_sigkill_mid_put_leaves_no_partial_blob(tmp_path) -> None:
    root = tmp_path / "blobs"
    h = "ab" * 48
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), h], stdout=subprocess.PIPE, text=True, env=prism_env()
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "IN_PUT"
        tmp_files = os.listdir(root / "tmp")
        assert len(tmp_files) == 1 and tmp_files[0].startswith(h)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (root / h[:2] / h).exists()
    store = DiskStore(root)  # the next start cleans up
    assert store.removed_temp_files == 1
    assert os.listdir(root / "tmp") == []
    assert not asyncio.run(store.has(h))


@pytest.mark.parametrize("fsync", [True, False])
async def test_a_cache_directory_skips_the_fsync(tmp_path, monkeypatch, fsync):
    """getstream's resume directory (fsync=False) writes and renames without syncing each blob."""
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    store = DiskStore(tmp_path, fsync=fsync)
    data = b"blob bytes"
    blob_hash = sha384_hex(data)
    await store.put(blob_hash, data)
    assert len(synced) == (1 if fsync else 0)
    with open(store.path_of(blob_hash), "rb") as f:
        assert f.read() == data
