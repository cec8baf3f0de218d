import asyncio
import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from prism.blob import sha384_hex
from prism.store import BlobNotFound, DiskStore, MemoryStore
from prism.store.disk import WRITE_PIECE, DirectorySyncer, GroupCommit
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
        assert not (root / h[:2] / h).exists()
        assert DiskStore(root).removed_temp_files == 0  # a live writer's locked temp file stays
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


def test_stale_temp_files_go_whatever_pid_they_name(tmp_path) -> None:
    # As PID 1 in a container, or restarted right after a kill, a dead writer's pid is often our own.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    h = "cd" * 48
    for name in (
        f"{h}.{os.getpid()}.0a0b0c0d",
        f"{h}.1.0a0b0c0d",
        f"{h}.0123456789abcdef",
        "cache-index.txt.1",
    ):
        (tmp / name).write_bytes(b"partial")
    store = DiskStore(tmp_path)
    assert store.removed_temp_files == 4
    assert os.listdir(tmp) == []


def test_a_locked_temp_file_is_left_to_its_writer(tmp_path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    path = tmp / f"{'ef' * 48}.0123456789abcdef"
    with open(path, "wb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        assert DiskStore(tmp_path).removed_temp_files == 0
    assert DiskStore(tmp_path).removed_temp_files == 1


def test_group_commit_covers_only_requests_made_before_the_fsync_began() -> None:
    g = GroupCommit()
    first = g.request()
    target = g.begin()
    assert target == first and g.begin() is None  # one fsync at a time
    late = g.request()  # made while the fsync runs: not covered by it
    g.finish(target, ok=True)
    assert g.covered(first) and not g.covered(late)
    also_late = g.request()
    target = g.begin()
    g.finish(target, ok=False)
    assert not g.covered(late)
    target = g.begin()
    g.finish(target, ok=True)
    assert g.covered(late) and g.covered(also_late)


def test_directory_syncer_coalesces_a_burst_into_one_more_fsync(tmp_path) -> None:
    entered = threading.Event()
    release = threading.Event()
    calls: list[str] = []

    def slow_fsync(path: str) -> None:
        calls.append(path)
        entered.set()
        assert release.wait(10)

    syncer = DirectorySyncer(slow_fsync)
    first = threading.Thread(target=syncer.sync, args=(str(tmp_path),))
    first.start()
    assert entered.wait(10)
    burst = [threading.Thread(target=syncer.sync, args=(str(tmp_path),)) for _ in range(8)]
    for t in burst:
        t.start()
    time.sleep(0.2)  # let the burst queue up behind the running fsync
    assert len(calls) == 1
    release.set()
    for t in [first, *burst]:
        t.join(10)
    assert calls == [str(tmp_path)] * 2 and syncer.fsyncs == 2


def test_write_blob_syncs_the_shard_directory_after_the_rename(tmp_path) -> None:
    store = DiskStore(tmp_path)
    synced: list[tuple[str, bool]] = []
    h, data = blob(3)

    def record(path: str) -> None:
        synced.append((path, (tmp_path / h[:2] / h).exists()))

    store.syncer = DirectorySyncer(record)
    store.write_blob(h, data)
    # The new shard directory's entry in the root first, then the rename in the shard directory.
    assert synced == [(str(tmp_path), False), (str(tmp_path / h[:2]), True)]
    h2, data2 = next((x, d) for x, d in (blob(i) for i in range(4, 2000)) if x[:2] == h[:2])
    synced.clear()
    store.write_blob(h2, data2)
    assert [p for p, _ in synced] == [str(tmp_path / h[:2])]  # the root only once per shard


def test_a_failed_directory_fsync_fails_the_put(tmp_path) -> None:
    store = DiskStore(tmp_path)

    def broken(path: str) -> None:
        raise OSError(5, "Input/output error")

    store.syncer = DirectorySyncer(broken)
    h, data = blob(5)
    with pytest.raises(OSError):
        asyncio.run(store.put(h, data))


def test_a_restarted_store_syncs_the_root_once_not_per_shard(tmp_path, monkeypatch) -> None:
    first = DiskStore(tmp_path)
    blobs = [blob(i) for i in range(40)]
    for h, data in blobs:
        first.write_blob(h, data)
    synced: list[str] = []
    monkeypatch.setattr("prism.store.disk.fsync_directory", synced.append)
    second = DiskStore(tmp_path)
    assert synced == [str(tmp_path)]  # once at start, for every shard directory found
    synced.clear()
    shards = {h[:2] for h, _ in blobs}
    h, data = next(b for b in (blob(i) for i in range(1000, 5000)) if b[0][:2] in shards)
    second.write_blob(h, data)
    assert synced == [str(tmp_path / h[:2])]  # an existing shard: its own fsync only


@pytest.mark.parametrize("durable", [True, False])
async def test_a_cache_directory_skips_the_fsync(tmp_path, monkeypatch, durable):
    """getstream's resume directory (durable=False) writes and renames without syncing each blob."""
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    store = DiskStore(tmp_path, durable=durable)
    data = b"blob bytes"
    blob_hash = sha384_hex(data)
    await store.put(blob_hash, data)
    assert bool(synced) == durable  # the file and its directory, or nothing
    with open(store.path_of(blob_hash), "rb") as f:
        assert f.read() == data


@pytest.mark.parametrize("size", [1, WRITE_PIECE, WRITE_PIECE + 1, 2 * 1024 * 1024])
def test_a_blob_is_written_in_pieces_and_whole(tmp_path, monkeypatch, size: int) -> None:
    sizes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data) -> int:  # type: ignore[no-untyped-def]
        sizes.append(len(data))
        return real_write(fd, data)

    store = DiskStore(tmp_path, durable=False)
    data = os.urandom(size)
    h = sha384_hex(data)
    monkeypatch.setattr(os, "write", counting_write)
    store.write_blob(h, data)
    monkeypatch.undo()
    assert max(sizes) <= WRITE_PIECE and sum(sizes) == size
    with open(store.path_of(h), "rb") as f:
        assert f.read() == data
