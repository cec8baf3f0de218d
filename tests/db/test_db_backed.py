"""DBBackedStore (reflector.md §3.3) over a real disk store and the real MariaDB."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from prism.config import MysqlParams
from prism.db import MysqlDatabase, TrackAccess
from prism.store import BlobNotFound, Blocklister, DiskStore, MemoryStore, NeededBlobChecker, find_capability
from prism.store.caching import CachingStore
from prism.store.db_backed import DBBackedStore, InvalidSdBlobError
from prism.store.singleflight import SingleFlightStore
from tests.db.streams import make_stream, random_hash


@pytest.fixture
async def db(mysql_database: MysqlParams) -> AsyncIterator[MysqlDatabase]:
    handle = MysqlDatabase(mysql_database, track_access=TrackAccess.STREAMS)
    yield handle
    await handle.close()


@pytest.fixture
def disk(tmp_path: Path) -> DiskStore:
    return DiskStore(tmp_path / "blobs")


async def test_database_decides_existence(db: MysqlDatabase, disk: DiskStore) -> None:
    store = DBBackedStore(disk, db)
    assert store.inner is disk
    h, data = random_hash(), b"x" * 100
    await disk.put(h, data)  # on disk, unknown to the database
    assert not await store.has(h)
    with pytest.raises(BlobNotFound):
        await store.get(h)
    await store.put(h, data)
    assert await store.has(h)
    with await store.get(h) as ref:
        assert ref.read() == data
        assert [s.origin_name for s in ref.trace.stacks] == ["disk", "db-backed"]
    assert await db.has_blob(h)
    assert await store.has_many([h, random_hash()]) == {h}


async def test_missing_on_disk_with_and_without_delete_on_miss(db: MysqlDatabase, disk: DiskStore) -> None:
    h = random_hash()
    await db.add_blob(h, 10)  # the database says stored, the disk does not have it
    with pytest.raises(BlobNotFound):
        await DBBackedStore(disk, db).get(h)
    assert await db.has_blob(h)
    with pytest.raises(BlobNotFound):
        await DBBackedStore(disk, db, delete_on_miss=True).get(h)
    assert not await db.has_blob(h)


async def test_delete_removes_from_both(db: MysqlDatabase, disk: DiskStore) -> None:
    store = DBBackedStore(disk, db)
    h = random_hash()
    await store.put(h, b"abc")
    await store.delete(h)
    assert not await store.has(h)
    assert not await disk.has(h)
    await store.delete(h)  # idempotent


async def test_put_sd_records_the_stream(db: MysqlDatabase, disk: DiskStore) -> None:
    store = DBBackedStore(disk, db)
    s = make_stream(4)
    await store.put_sd(s.sd_hash, s.sd_bytes)
    assert await store.has(s.sd_hash)
    with await store.get(s.sd_hash) as ref:
        assert ref.read() == s.sd_bytes
    assert await store.missing_blobs_for_known_stream(s.sd_hash) == s.hashes


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"not json", "not valid JSON"),
        (b'{"blobs": [], "key": "00", "stream_hash": ""}', "sd blob"),
        (b"[1, 2]", "JSON object"),
    ],
)
async def test_bad_sd_blob_stores_nothing(
    db: MysqlDatabase, disk: DiskStore, data: bytes, reason: str
) -> None:
    store = DBBackedStore(disk, db)
    h = random_hash()
    with pytest.raises(InvalidSdBlobError, match=reason):
        await store.put_sd(h, data)
    assert not await disk.has(h)
    assert not await db.has_blob(h)


async def test_sd_blob_with_wrong_stream_hash_is_rejected(db: MysqlDatabase, disk: DiskStore) -> None:
    s = make_stream(2)
    tampered = s.sd_bytes.replace(s.sd.stream_hash.encode(), b"0" * 96)
    with pytest.raises(InvalidSdBlobError, match="stream_hash"):
        await DBBackedStore(disk, db).put_sd(random_hash(), tampered)


async def test_capabilities_are_found_through_wrappers(db: MysqlDatabase) -> None:
    store = DBBackedStore(MemoryStore(), db)

    # Two layers of real wrappers, as `prism reflector` builds them.
    outer = CachingStore(SingleFlightStore(store), MemoryStore("cache"))
    assert find_capability(outer, Blocklister) is store
    assert find_capability(outer, NeededBlobChecker) is store


async def test_wants_refuses_stored_and_blocked(db: MysqlDatabase, disk: DiskStore) -> None:
    store = DBBackedStore(disk, db)
    stored, blocked, fresh = random_hash(), random_hash(), random_hash()
    await store.put(stored, b"1")
    await store.block(blocked)
    await store.block(blocked)  # twice is fine
    assert not await store.wants(stored)
    assert not await store.wants(blocked)
    assert await store.wants(fresh)
    assert await store.is_blocked(blocked)
    # A new store (a restarted server) loads the block list from the database.
    again = DBBackedStore(MemoryStore(), db)
    assert not await again.wants(blocked)
    assert await db.blocked_hashes() == {blocked}


async def test_receiver_answers_for_a_partly_uploaded_stream(db: MysqlDatabase, disk: DiskStore) -> None:
    """What the reflector receiver asks (reflector.md §4.3 b-c) as a stream arrives piece by piece."""
    store = DBBackedStore(disk, db)
    s = make_stream(6)
    # Nothing uploaded yet: the sd blob is wanted.
    assert await store.wants(s.sd_hash)
    assert await store.missing_blobs_for_known_stream(s.sd_hash) == []
    # The sd blob only: not wanted again, and every content blob is needed.
    await store.put_sd(s.sd_hash, s.sd_bytes)
    assert not await store.wants(s.sd_hash)
    assert await store.missing_blobs_for_known_stream(s.sd_hash) == s.hashes
    assert all([await store.wants(h) for h in s.hashes])
    # Half of them: the other half.
    for h, data in s.blobs[:3]:
        await store.put(h, data)
    assert await store.missing_blobs_for_known_stream(s.sd_hash) == s.hashes[3:]
    assert [await store.wants(h) for h in s.hashes] == [False] * 3 + [True] * 3
    # All of them: nothing.
    for h, data in s.blobs[3:]:
        await store.put(h, data)
    assert await store.missing_blobs_for_known_stream(s.sd_hash) == []
    for h, data in s.blobs:
        with await store.get(h) as ref:
            assert ref.read() == data


async def test_blocked_sd_hash_is_not_wanted(db: MysqlDatabase, disk: DiskStore) -> None:
    store = DBBackedStore(disk, db)
    s = make_stream(2)
    await store.block(s.sd_hash)
    assert not await store.wants(s.sd_hash)
    # Never uploaded, so no stream is known: nothing is needed either (the receiver refuses it).
    assert await store.missing_blobs_for_known_stream(s.sd_hash) == []


async def test_as_a_localdb_cache(mysql_database: MysqlParams, disk: DiskStore) -> None:
    """reflector.go's localdb cache: blobs access tracking, soft delete, delete on miss."""
    db = MysqlDatabase(mysql_database, track_access=TrackAccess.BLOBS, soft_delete=True)
    try:
        store = DBBackedStore(disk, db, delete_on_miss=True)
        kept, lost = random_hash(), random_hash()
        await store.put(kept, b"kept")
        await store.put(lost, b"lost")
        await disk.delete(lost)  # evicted behind the database's back
        with await store.get(kept) as ref:
            assert ref.read() == b"kept"
        with pytest.raises(BlobNotFound):
            await store.get(lost)
        assert not await store.has(lost)  # forgotten (soft: the row stays, not stored)
        assert await db.count_stored() == 1
        assert await db.least_recently_accessed(5) == [kept]
    finally:
        await db.close()
