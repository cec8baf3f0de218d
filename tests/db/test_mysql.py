"""The queries of reflector.md §5 against the real MariaDB, each test in a fresh database."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable

import pymysql
import pytest

from prism.blob import BlobSizeError, InvalidHashError
from prism.config import MysqlParams
from prism.db import DatabaseError, MysqlDatabase, StreamBlob, TrackAccess
from prism.db import mysql as mysql_module
from prism.db.runner import Connection, QueryRunner
from tests.conftest import connect, sql
from tests.db.streams import make_stream, random_hash


@pytest.fixture
async def open_db(mysql_database: MysqlParams) -> AsyncIterator[Callable[..., MysqlDatabase]]:
    """Opens MysqlDatabase handles on the test database; closes them all afterwards."""
    opened: list[MysqlDatabase] = []

    def factory(**options: object) -> MysqlDatabase:
        db = MysqlDatabase(mysql_database, **options)  # type: ignore[arg-type]
        opened.append(db)
        return db

    yield factory
    for db in opened:
        await db.close()


async def test_start_reports_ready(open_db: Callable[..., MysqlDatabase]) -> None:
    db = open_db()
    assert await db.start(require=True) is True
    assert db.available


async def test_add_blob_then_has(open_db: Callable[..., MysqlDatabase], mysql_database: MysqlParams) -> None:
    db = open_db()
    stored, known = random_hash(), random_hash()
    first = await db.add_blob(stored, 1000)
    assert first > 0
    assert await db.add_blob(known, 2000, stored=False) > first
    assert await db.has_blob(stored)
    assert not await db.has_blob(known)
    assert not await db.has_blob(random_hash())
    assert await db.has_blobs([stored, known, random_hash()]) == {stored}
    assert sql(mysql_database, "SELECT is_stored, length FROM blob_ WHERE hash = %s", (known,)) == [(0, 2000)]


async def test_add_blob_again_keeps_id_and_stored_flag(open_db: Callable[..., MysqlDatabase]) -> None:
    db = open_db()
    h = random_hash()
    blob_id = await db.add_blob(h, 10, stored=False)
    assert await db.add_blob(h, 10, stored=True) == blob_id  # becomes stored
    assert await db.add_blob(h, 10, stored=False) == blob_id  # and stays stored
    assert await db.has_blob(h)


async def test_add_blob_rejects_bad_input(open_db: Callable[..., MysqlDatabase]) -> None:
    db = open_db()
    with pytest.raises(InvalidHashError):
        await db.add_blob("ab" * 10, 10)
    with pytest.raises(InvalidHashError):
        await db.add_blob("'; DROP TABLE blob_; --" + "a" * 73, 10)
    with pytest.raises(BlobSizeError):
        await db.add_blob(random_hash(), 0)
    with pytest.raises(BlobSizeError):
        await db.add_blob(random_hash(), 2 * 1024 * 1024 + 1)
    assert await db.count_stored() == 0


async def test_queries_are_parameterised(open_db: Callable[..., MysqlDatabase]) -> None:
    db = open_db()
    h = random_hash()
    await db.add_blob(h, 5)
    evil = "x' OR '1'='1"
    evil96 = (evil * 10)[:96]
    assert not await db.has_blob(evil96)
    assert await db.has_blobs([evil96, h]) == {h}
    assert await db.missing_blobs_for_known_stream(evil) == []
    assert await db.stored_hashes_in_range("' OR ''='", "g") == [h]  # compared as plain text
    await db.mark_deleted(evil)
    assert await db.has_blob(h)


async def test_has_blobs_batches_ten_thousand(
    open_db: Callable[..., MysqlDatabase], mysql_database: MysqlParams, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashes = [random_hash() for _ in range(10050)]
    conn = connect(mysql_database)
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO blob_ (hash, is_stored, length) VALUES (%s, 1, 1)", [(h,) for h in hashes[:10040]]
        )
    conn.close()
    db = open_db()
    calls: list[int] = []
    real_query = QueryRunner.query

    async def counting_query(self: QueryRunner, conn: Connection, statement: str, args: tuple = ()) -> list:
        calls.append(len(args))
        return await real_query(self, conn, statement, args)

    monkeypatch.setattr(QueryRunner, "query", counting_query)
    found = await db.has_blobs(hashes)
    assert found == set(hashes[:10040])
    assert sorted(calls) == [50, 10000]  # one IN (...) query per 10000 hashes


async def test_add_stream_records_everything(
    open_db: Callable[..., MysqlDatabase], mysql_database: MysqlParams
) -> None:
    db = open_db()
    s = make_stream(5)
    stream_id = await db.add_sd_blob(s.sd_hash, s.sd_bytes)
    assert sql(mysql_database, "SELECT hash, sd_blob_id FROM stream") == [
        (s.sd.stream_hash, sql(mysql_database, "SELECT id FROM blob_ WHERE hash = %s", (s.sd_hash,))[0][0])
    ]
    rows = sql(
        mysql_database,
        "SELECT b.hash, b.is_stored, b.length, sb.num FROM stream_blob sb JOIN blob_ b ON b.id = sb.blob_id "
        "WHERE sb.stream_id = %s ORDER BY sb.num",
        (stream_id,),
    )
    assert rows == [(h, 0, 1024, i) for i, h in enumerate(s.hashes)]
    assert await db.has_blob(s.sd_hash)
    assert await db.has_blobs(s.hashes) == set()
    assert await db.count_stored() == 1
    # Recording the same sd blob again changes nothing.
    assert await db.add_sd_blob(s.sd_hash, s.sd_bytes) == stream_id
    assert sql(mysql_database, "SELECT COUNT(*) FROM stream_blob") == [(5,)]
    assert sql(mysql_database, "SELECT COUNT(*) FROM blob_") == [(6,)]


async def test_add_stream_keeps_stored_content_blobs_stored(open_db: Callable[..., MysqlDatabase]) -> None:
    db = open_db()
    s = make_stream(3)
    await db.add_blob(s.hashes[1], 1024)  # uploaded before its sd blob (reflector.go's `send` does this)
    await db.add_sd_blob(s.sd_hash, s.sd_bytes)
    assert await db.has_blobs(s.hashes) == {s.hashes[1]}
    assert await db.missing_blobs_for_known_stream(s.sd_hash) == [s.hashes[0], s.hashes[2]]


async def test_add_stream_is_one_transaction(
    open_db: Callable[..., MysqlDatabase], mysql_database: MysqlParams
) -> None:
    # A trigger makes the last step (linking the content blobs) fail: nothing may remain.
    sql(
        mysql_database,
        "CREATE TRIGGER refuse_links BEFORE INSERT ON stream_blob FOR EACH ROW "
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'links refused by test'",
    )
    db = open_db()
    s = make_stream(4)
    with pytest.raises(DatabaseError, match="links refused by test"):
        await db.add_sd_blob(s.sd_hash, s.sd_bytes)
    # In a thread: the event loop must run to close the failed connection (ending its transaction).
    for table in ("blob_", "stream", "stream_blob"):
        assert await asyncio.to_thread(sql, mysql_database, f"SELECT COUNT(*) FROM {table}") == [(0,)]
    # The handle still works afterwards.
    await asyncio.to_thread(sql, mysql_database, "DROP TRIGGER refuse_links")
    await db.add_sd_blob(s.sd_hash, s.sd_bytes)
    assert await db.missing_blobs_for_known_stream(s.sd_hash) == s.hashes


async def test_large_stream_in_batches(
    open_db: Callable[..., MysqlDatabase], mysql_database: MysqlParams
) -> None:
    db = open_db()
    blobs = [StreamBlob(i, random_hash(), 2097152) for i in range(2500)]  # a 5 GB stream
    sd_hash = random_hash()
    await db.add_stream(sd_hash, 300000, random_hash(), blobs)
    missing = await db.missing_blobs_for_known_stream(sd_hash)
    assert missing == [b.hash for b in blobs]
    assert sql(mysql_database, "SELECT MIN(num), MAX(num), COUNT(*) FROM stream_blob") == [(0, 2499, 2500)]


async def test_add_stream_rejects_missing_stream_hash(open_db: Callable[..., MysqlDatabase]) -> None:
    db = open_db()
    with pytest.raises(DatabaseError, match="sd blob is missing stream hash"):
        await db.add_stream(random_hash(), 100, "", [])


async def test_missing_blobs_for_known_stream(open_db: Callable[..., MysqlDatabase]) -> None:
    db = open_db()
    s = make_stream(6)
    assert await db.missing_blobs_for_known_stream(s.sd_hash) == []  # unknown stream looks complete
    await db.add_sd_blob(s.sd_hash, s.sd_bytes)
    assert await db.missing_blobs_for_known_stream(s.sd_hash) == s.hashes
    for h in s.hashes[:3]:
        await db.add_blob(h, 1024)
    assert await db.missing_blobs_for_known_stream(s.sd_hash) == s.hashes[3:]
    for h in s.hashes[3:]:
        await db.add_blob(h, 1024)
    assert await db.missing_blobs_for_known_stream(s.sd_hash) == []


async def test_hard_delete(open_db: Callable[..., MysqlDatabase], mysql_database: MysqlParams) -> None:
    db = open_db()
    s = make_stream(2)
    await db.add_sd_blob(s.sd_hash, s.sd_bytes)
    await db.add_blob(s.hashes[0], 1024)
    await db.delete(s.hashes[0])  # a content blob: its row and link go
    assert sql(mysql_database, "SELECT COUNT(*) FROM stream_blob") == [(1,)]
    await db.delete(s.sd_hash)  # the sd blob: its stream goes too
    assert sql(mysql_database, "SELECT COUNT(*) FROM stream") == [(0,)]
    assert sql(mysql_database, "SELECT hash FROM blob_") == [(s.hashes[1],)]
    await db.delete(random_hash())  # unknown: nothing happens


async def test_soft_delete(open_db: Callable[..., MysqlDatabase], mysql_database: MysqlParams) -> None:
    db = open_db(soft_delete=True, track_access="blobs")
    h = random_hash()
    await db.add_blob(h, 7)
    await db.delete(h)
    assert not await db.has_blob(h)
    assert sql(mysql_database, "SELECT is_stored, length FROM blob_") == [(0, 7)]
    assert await db.count_stored() == 0


def _accessed(params: MysqlParams, table: str, column: str, value: object) -> object:
    return sql(params, f"SELECT last_accessed_at FROM {table} WHERE {column} = %s", (value,))[0][0]


async def test_touch_in_blobs_mode(
    open_db: Callable[..., MysqlDatabase], mysql_database: MysqlParams
) -> None:
    db = open_db(track_access=TrackAccess.BLOBS)
    fresh, stale, never = random_hash(), random_hash(), random_hash()
    for h in (fresh, stale, never):
        await db.add_blob(h, 1)
    sql(
        mysql_database,
        "UPDATE blob_ SET last_accessed_at = NOW() - INTERVAL 1 HOUR WHERE hash = %s",
        (fresh,),
    )
    sql(
        mysql_database,
        "UPDATE blob_ SET last_accessed_at = NOW() - INTERVAL 7 HOUR WHERE hash = %s",
        (stale,),
    )
    sql(mysql_database, "UPDATE blob_ SET last_accessed_at = NULL WHERE hash = %s", (never,))
    before_fresh = _accessed(mysql_database, "blob_", "hash", fresh)
    assert await db.has_blobs([fresh, stale, never], touch=False) == {fresh, stale, never}
    assert _accessed(mysql_database, "blob_", "hash", never) is None  # no touch without touch=True
    assert await db.has_blobs([fresh, stale, never], touch=True) == {fresh, stale, never}
    assert _accessed(mysql_database, "blob_", "hash", fresh) == before_fresh  # younger than 6 h: left alone
    now = sql(mysql_database, "SELECT NOW()")[0][0]
    for h in (stale, never):
        assert (now - _accessed(mysql_database, "blob_", "hash", h)).total_seconds() < 60
    # Least recently accessed first.
    assert await db.least_recently_accessed(1) == [fresh]
    oldest_first = await db.least_recently_accessed(10)
    assert oldest_first[0] == fresh and set(oldest_first) == {fresh, stale, never}


async def test_touch_in_streams_mode(
    open_db: Callable[..., MysqlDatabase], mysql_database: MysqlParams
) -> None:
    db = open_db(track_access=TrackAccess.STREAMS)
    s = make_stream(2)
    await db.add_sd_blob(s.sd_hash, s.sd_bytes)
    await db.add_blob(s.hashes[0], 1024)
    lone = random_hash()
    await db.add_blob(lone, 1)
    sql(mysql_database, "UPDATE stream SET last_accessed_at = NULL")
    # Via a content blob.
    assert await db.has_blob(s.hashes[0], touch=True)
    assert _accessed(mysql_database, "stream", "hash", s.sd.stream_hash) is not None
    sql(mysql_database, "UPDATE stream SET last_accessed_at = NOW() - INTERVAL 1 DAY")
    # Via the sd blob.
    assert await db.has_blob(s.sd_hash, touch=True)
    now = sql(mysql_database, "SELECT NOW()")[0][0]
    assert (now - _accessed(mysql_database, "stream", "hash", s.sd.stream_hash)).total_seconds() < 60
    # A stored blob of no stream is still stored (reflector.go would say absent, reflector.md §11.14).
    assert await db.has_blob(lone, touch=True)
    assert not await db.has_blob(s.hashes[1], touch=True)
    # Blob rows are never touched in this mode.
    assert sql(mysql_database, "SELECT COUNT(*) FROM blob_ WHERE last_accessed_at IS NOT NULL") == [(0,)]


async def test_no_touch_in_none_mode(
    open_db: Callable[..., MysqlDatabase], mysql_database: MysqlParams
) -> None:
    db = open_db(track_access="none")
    s = make_stream(1)
    await db.add_sd_blob(s.sd_hash, s.sd_bytes)
    assert await db.has_blob(s.sd_hash, touch=True)
    assert sql(mysql_database, "SELECT COUNT(*) FROM blob_ WHERE last_accessed_at IS NOT NULL") == [(0,)]
    assert sql(mysql_database, "SELECT COUNT(*) FROM stream WHERE last_accessed_at IS NOT NULL") == [(0,)]
    with pytest.raises(DatabaseError, match="access tracking mode 'blobs'"):
        await db.least_recently_accessed(5)


async def test_count_block_and_ranges(open_db: Callable[..., MysqlDatabase]) -> None:
    db = open_db()
    assert await db.hash_range() is None
    hashes = sorted(random_hash() for _ in range(4))
    for h in hashes:
        await db.add_blob(h, 3)
    await db.add_blob(random_hash(), 3, stored=False)
    assert await db.count_stored() == 4
    assert await db.stored_hashes_in_range(hashes[1], hashes[2]) == hashes[1:3]
    lo, hi = await db.hash_range() or ("", "")
    assert lo <= hashes[0] and hi >= hashes[-1]
    blocked = random_hash()
    assert await db.blocked_hashes() == set()
    await db.block(blocked)
    await db.block(blocked)
    assert await db.blocked_hashes() == {blocked}
    with pytest.raises(InvalidHashError):
        await db.block("nope")


async def locked_blob(
    open_db: Callable[..., MysqlDatabase], params: MysqlParams
) -> tuple[MysqlDatabase, str, pymysql.Connection]:
    """A handle with 1 s lock waits, and a known blob whose row another session holds locked."""
    db = open_db(lock_wait_timeout=1, query_timeout=10.0)
    h = random_hash()
    await db.add_blob(h, 1, stored=False)
    holder = connect(params)
    holder.autocommit(False)
    with holder.cursor() as cur:
        cur.execute("SELECT id FROM blob_ WHERE hash = %s FOR UPDATE", (h,))
    return db, h, holder


async def test_lock_wait_timeout_is_retried(
    open_db: Callable[..., MysqlDatabase], mysql_database: MysqlParams, caplog: pytest.LogCaptureFixture
) -> None:
    # Another session holds the row lock a little longer than one lock wait.
    db, h, holder = await locked_blob(open_db, mysql_database)
    release = threading.Timer(1.5, holder.commit)
    release.start()
    try:
        await db.add_blob(h, 1, stored=True)
    finally:
        release.join()
        holder.close()
    assert await db.has_blob(h)
    assert "Lock wait timeout" in caplog.text and "retry 1 of 3" in caplog.text


async def test_lock_wait_gives_up_after_three_retries(
    open_db: Callable[..., MysqlDatabase], mysql_database: MysqlParams
) -> None:
    db, h, holder = await locked_blob(open_db, mysql_database)
    try:
        with pytest.raises(DatabaseError, match=r"add blob failed: Lock wait timeout.*1205"):
            await db.add_blob(h, 1, stored=True)
    finally:
        holder.rollback()
        holder.close()


async def test_query_timeout_is_bounded(open_db: Callable[..., MysqlDatabase]) -> None:
    # SLEEP stands in for a server that stops answering: the call gives up at the timeout.
    db = open_db(query_timeout=0.5)
    await db.ping()

    async def slow(conn: Connection) -> None:
        await db.runner.query(conn, "SELECT SLEEP(5)")

    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(DatabaseError, match=r"did not answer within 0.5s"):
        await db.runner.run("slow query", slow)
    assert loop.time() - start < 2.0


def test_from_dsn_reads_go_timeouts() -> None:
    db = MysqlDatabase.from_dsn(
        "reflector:pw@tcp(db.example:3307)/reflector?parseTime=1&timeout=2s&readTimeout=1500ms",
        track_access="streams",
    )
    assert (db.runner.connect_timeout, db.runner.query_timeout) == (2.0, 1.5)
    assert db.track_access is TrackAccess.STREAMS
    assert db.where == "MySQL reflector@db.example:3307/reflector"
    assert mysql_module._go_duration("1m30s") == 90.0
    with pytest.raises(ValueError, match="invalid duration"):
        mysql_module._go_duration("5 seconds")
    with pytest.raises(ValueError, match="unknown access tracking mode"):
        TrackAccess.parse("sometimes")


@pytest.mark.parametrize("coalesce", [True, False])
async def test_concurrent_has_blob_answers_each_caller(
    open_db: Callable[..., MysqlDatabase], coalesce: bool
) -> None:
    db = open_db(coalesce_has=coalesce, max_connections=4)
    present = [random_hash() for _ in range(50)]
    for h in present:
        await db.add_blob(h, 1)
    absent = [random_hash() for _ in range(50)]
    asked = (present + absent) * 3
    db.has_queries = db.has_queries_hashes = 0
    answers = await asyncio.gather(*(db.has_blob(h) for h in asked))
    assert answers == [h in present for h in asked]
    if coalesce:
        assert db.has_queries < len(asked) / 4  # callers waiting for a connection share queries
    else:
        assert db.has_queries == len(asked)


async def test_cancelled_has_caller_does_not_break_the_shared_query(
    open_db: Callable[..., MysqlDatabase],
) -> None:
    db = open_db(max_connections=1)
    h = random_hash()
    await db.add_blob(h, 1)
    first = asyncio.ensure_future(db.has_blob(h))
    second = asyncio.ensure_future(db.has_blob(h))
    await asyncio.sleep(0)
    first.cancel()
    assert await second is True
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_concurrent_overlapping_streams(
    open_db: Callable[..., MysqlDatabase], mysql_database: MysqlParams
) -> None:
    # Streams sharing content blobs, recorded at once from many connections: deadlocks (1213) and
    # lock waits are retried, and every stream ends up complete and linked exactly once.
    db = open_db(max_connections=8)
    shared = [StreamBlob(0, random_hash(), 100), StreamBlob(1, random_hash(), 100)]
    streams = []
    for _ in range(8):
        own = [StreamBlob(i + 2, random_hash(), 100) for i in range(30)]
        streams.append((random_hash(), random_hash(), shared + own))
    ids = await asyncio.gather(*(db.add_stream(sd, 500, sh, blobs) for sd, sh, blobs in streams * 2))
    assert ids[:8] == ids[8:] and len(set(ids)) == 8
    for sd, _, blobs in streams:
        assert await db.missing_blobs_for_known_stream(sd) == [b.hash for b in blobs]
    assert sql(mysql_database, "SELECT COUNT(*) FROM stream_blob") == [(8 * 32,)]
    assert sql(mysql_database, "SELECT COUNT(*) FROM blob_") == [(8 + 2 + 8 * 30,)]
