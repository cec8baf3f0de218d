"""The localdb cache index: SQLite (default) and the real MariaDB `blob_` table."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time

import pytest

from prism.config import MysqlParams
from prism.db.localdb import (
    SQLITE_NAME,
    LocalDB,
    LocalDBError,
    LocalDBIndex,
    MysqlLocalDB,
    SqliteLocalDB,
    populate,
)
from prism.store import BlobNotFound, DiskStore
from prism.store.disk_cache import DiskCacheStore, scan_blobs
from prism.store.eviction import LRUPolicy
from tests.conftest import sql
from tests.helpers import ManualSleep, make_blob

KB = 1000


def mysql_rows(params: MysqlParams) -> dict[str, tuple[int, int, float | None]]:
    """hash -> (is_stored, length, last access unix time) straight from MariaDB."""
    rows = sql(params, "SELECT hash, is_stored, length, UNIX_TIMESTAMP(last_accessed_at) FROM blob_")
    return {h: (s, n, None if t is None else float(t)) for h, s, n, t in rows}


def sqlite_rows(path: str) -> dict[str, tuple[int, int, float | None]]:
    conn = sqlite3.connect(path)
    try:
        return {h: (s, n, t) for h, s, n, t in conn.execute("SELECT * FROM blob_")}
    finally:
        conn.close()


def make_db(kind: str, tmp_path, mysql: MysqlParams | None) -> LocalDB:
    if kind == "sqlite":
        return SqliteLocalDB(str(tmp_path / SQLITE_NAME))
    assert mysql is not None
    return MysqlLocalDB(mysql)


def rows_of(kind: str, tmp_path, mysql: MysqlParams | None) -> dict[str, tuple[int, int, float | None]]:
    return sqlite_rows(str(tmp_path / SQLITE_NAME)) if kind == "sqlite" else mysql_rows(mysql)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "mariadb"])
def db_kind(request) -> str:
    return request.param


@pytest.fixture
def mysql_params(db_kind: str, request) -> MysqlParams | None:
    return request.getfixturevalue("mysql_database") if db_kind == "mariadb" else None


async def test_backend_operations(db_kind: str, mysql_params, tmp_path) -> None:
    db = make_db(db_kind, tmp_path, mysql_params)
    await db.open()
    try:
        (h1, _), (h2, _), (h3, _) = (make_blob(i) for i in range(3))
        await db.upsert([(h1, 100, 1_700_000_000.0), (h2, 200, 1_700_000_100.0)])
        await db.upsert([(h1, 150, 1_700_000_050.0)])  # update in place
        stored = {h: (n, t) for h, n, t in await db.load_stored()}
        assert stored == {h1: (150, 1_700_000_050.0), h2: (200, 1_700_000_100.0)}
        await db.touch([h2, h3], 1_700_000_500.0)  # h3 is unknown: nothing happens
        await db.mark_deleted([h1])
        assert {h for h, _, _ in await db.load_stored()} == {h2}
        assert await db.known() == {h1: (False, 150), h2: (True, 200)}
        await db.set_stored([(h1, 160)])
        rows = rows_of(db_kind, tmp_path, mysql_params)
        assert rows[h1][:2] == (1, 160) and rows[h1][2] == 1_700_000_050.0  # access time kept
        assert rows[h2] == (1, 200, 1_700_000_500.0)
    finally:
        await db.close()


async def test_access_times_are_batched_not_written_per_hit(db_kind: str, mysql_params, tmp_path) -> None:
    db = make_db(db_kind, tmp_path, mysql_params)
    index = LocalDBIndex(db, flush_interval=3600)  # flush only when asked
    await index.start()
    try:
        blobs = [make_blob(i)[0] for i in range(50)]
        for h in blobs:
            index.record_add(h, 1000, 1_600_000_000.0)
        await index.flush()
        before = db.statements
        for _ in range(20):  # 1000 hits
            for h in blobs:
                index.record_access(h)
        assert db.statements == before  # nothing written on the request path
        assert index.pending == 50
        t0 = time.time()
        await index.flush()
        assert db.statements - before == 1  # one batched statement for all of them
        rows = rows_of(db_kind, tmp_path, mysql_params)
        assert all(rows[h][2] is not None and rows[h][2] >= int(t0) - 1 for h in blobs)
    finally:
        await index.stop()


async def started_sqlite_index(
    tmp_path, flush_interval: float, size: int, sleep: ManualSleep | None = None
) -> tuple[SqliteLocalDB, LocalDBIndex, str]:
    """A started SQLite-backed index with one blob of `size` recorded (not flushed yet)."""
    db = SqliteLocalDB(str(tmp_path / SQLITE_NAME))
    index = LocalDBIndex(db, flush_interval=flush_interval, sleep=sleep or asyncio.sleep)
    await index.start()
    h, _ = make_blob(1)
    index.record_add(h, size)
    return db, index, h


async def test_flusher_writes_every_interval(tmp_path) -> None:
    sleep = ManualSleep()
    _, index, h = await started_sqlite_index(tmp_path, 0.1, 1234, sleep=sleep)
    assert await sleep.calls.get() == 0.1  # the flusher waits one interval before writing
    assert index.pending == 1 and index.flushes == 0
    sleep.release()
    assert await sleep.calls.get() == 0.1  # one flush done, waiting for the next interval
    assert index.pending == 0 and index.flushes == 1
    assert sqlite_rows(str(tmp_path / SQLITE_NAME))[h][:2] == (1, 1234)
    index.record_access(h)
    sleep.release()
    assert await sleep.calls.get() == 0.1
    assert index.pending == 0 and index.flushes == 2
    index.record_delete(h)
    await index.stop()  # stop flushes what is left
    assert sqlite_rows(str(tmp_path / SQLITE_NAME))[h][0] == 0


async def test_failed_flush_keeps_changes(tmp_path) -> None:
    db, index, _ = await started_sqlite_index(tmp_path, 3600, 10)
    await db.close()  # the database goes away
    with pytest.raises(LocalDBError):
        await index.flush()
    assert index.pending == 1
    await db.open()
    await index.flush()
    assert index.pending == 0
    await index.stop()


async def test_mysql_unreachable_is_a_clear_error() -> None:
    db = MysqlLocalDB(MysqlParams("nobody", "", "nothing", host="127.0.0.1", port=1))
    with pytest.raises(LocalDBError, match=r"cannot connect to localdb MySQL at 127\.0\.0\.1:1/nothing"):
        await db.open()


async def test_localdb_disk_cache_restart_uses_the_database(db_kind: str, mysql_params, tmp_path) -> None:
    cache_dir = tmp_path / "cache"

    def open_cache() -> DiskCacheStore:
        index = LocalDBIndex(make_db(db_kind, cache_dir, mysql_params), flush_interval=0.05)
        return DiskCacheStore(DiskStore(cache_dir), 4 * KB, LRUPolicy(), index=index, low_watermark=1.0)

    cache = open_cache()
    assert cache.name == "db-backed"
    await cache.start()
    blobs = [make_blob(i, KB) for i in range(5)]
    for h, data in blobs[:4]:
        await cache.put(h, data)
    for h, _ in (blobs[0], blobs[2], blobs[3]):
        (await cache.get(h)).close()
    assert cache.index is not None
    await cache.index.flush()
    await cache.put(*blobs[4])  # evicts blob 1
    await cache.stop()
    rows = rows_of(db_kind, cache_dir, mysql_params)
    assert rows[blobs[1][0]][:2] == (0, KB)  # soft-deleted
    assert {h for h, r in rows.items() if r[0] == 1} == {blobs[i][0] for i in (0, 2, 3, 4)}
    assert all(r[1] == KB for r in rows.values())  # real sizes

    # Make the access order unambiguous (the database keeps whole seconds).
    ages = {blobs[0][0]: 500, blobs[2][0]: 100, blobs[3][0]: 400, blobs[4][0]: 300}
    db = make_db(db_kind, cache_dir, mysql_params)
    await db.open()
    for h, age in ages.items():
        await db.touch([h], time.time() - age)
    await db.close()
    # While stopped: one blob disappears, one unknown blob appears.
    disk = DiskStore(cache_dir)
    os.unlink(disk.path_of(blobs[4][0]))
    stranger, sdata = make_blob(99, KB)
    await disk.put(stranger, sdata)

    again = open_cache()
    await again.start()
    assert again.rebuild is not None and again.rebuild.clean  # warm: the rows, no directory walk
    assert (again.rebuild.blobs, again.rebuild.adopted, again.rebuild.forgotten) == (4, 0, 0)
    assert again.adoption is not None and again.index is not None
    await again.adoption  # the background pass after a warm start
    await again.index.flush()
    assert (again.rebuild.blobs, again.rebuild.adopted, again.rebuild.forgotten) == (4, 1, 1)
    rows = rows_of(db_kind, cache_dir, mysql_params)
    assert rows[stranger][:2] == (1, KB) and rows[blobs[4][0]][0] == 0
    # Oldest access first: blob 0 (500 s ago), then blob 3 (400 s).
    await again.put(*make_blob(100, KB))
    assert not await again.has(blobs[0][0])
    await again.put(*make_blob(101, KB))
    assert not await again.has(blobs[3][0])
    assert await again.has(blobs[2][0]) and await again.has(stranger)
    await again.stop()
    on_disk = {b.hash for b in scan_blobs(str(cache_dir))}
    assert on_disk == {h for h, r in rows_of(db_kind, cache_dir, mysql_params).items() if r[0] == 1}


async def test_populate_is_idempotent(db_kind: str, mysql_params, tmp_path) -> None:
    disk = DiskStore(tmp_path / "store")
    blobs = [make_blob(i, 100 + i) for i in range(30)]
    for h, data in blobs:
        await disk.put(h, data)
    found = [(b.hash, b.size, b.stamp) for b in scan_blobs(disk.root)]
    db = make_db(db_kind, tmp_path, mysql_params)
    await db.open()
    try:
        await db.upsert([(blobs[0][0], 2097152, 1_600_000_000.0)])  # wrong length from an old index
        await db.mark_deleted([blobs[0][0]])
        first = await populate(db, found)
        assert (first.scanned, first.added, first.updated, first.unchanged) == (30, 29, 1, 0)
        rows1 = rows_of(db_kind, tmp_path, mysql_params)
        assert {h: r[:2] for h, r in rows1.items()} == {h: (1, len(d)) for h, d in blobs}
        second = await populate(db, found)
        assert (second.added, second.updated, second.unchanged) == (0, 0, 30)
        assert rows_of(db_kind, tmp_path, mysql_params) == rows1
    finally:
        await db.close()


async def test_localdb_disk_cache_after_a_crash_hashes_files_before_serving(tmp_path) -> None:
    cache_dir = tmp_path / "cache"

    def open_cache() -> DiskCacheStore:
        index = LocalDBIndex(SqliteLocalDB.in_cache_dir(str(cache_dir)), flush_interval=0.05)
        return DiskCacheStore(DiskStore(cache_dir), 10 * KB, LRUPolicy(), index=index)

    cache = open_cache()
    await cache.start()
    (h, data), (h2, data2) = make_blob(1, KB), make_blob(2, KB)
    await cache.put(h, data)
    await cache.put(h2, data2)
    assert cache.index is not None
    await cache.index.stop()  # the database is written, then the process dies: no clean mark
    with open(cache.disk.path_of(h), "r+b") as f:
        f.write(b"\0" * 10)

    again = open_cache()
    await again.start()
    assert again.rebuild is not None and not again.rebuild.clean and again.rebuild.unverified == 2
    with pytest.raises(BlobNotFound):
        await again.get(h)
    assert (await again.get(h2)).read() == data2
    await again.stop()
    rows = sqlite_rows(str(cache_dir / SQLITE_NAME))
    assert rows[h][0] == 0 and rows[h2][0] == 1 and not os.path.exists(again.disk.path_of(h))
