"""A database that goes away: clear fast errors, never a hang, and recovery by itself.

These tests stop, freeze and lock out a private MariaDB server of their own (see conftest.py),
never the shared one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest

from prism.config import MysqlParams
from prism.db import DatabaseTimeout, DatabaseUnavailable, MysqlDatabase, TrackAccess
from prism.store import MemoryStore
from prism.store.db_backed import DatabaseStoreError, DBBackedStore
from tests.db.conftest import PrivateMariaDB
from tests.db.streams import make_stream, random_hash

QUERY_TIMEOUT = 2.0
RETRY_INTERVAL = 0.2


@pytest.fixture
async def db(private_database: MysqlParams) -> AsyncIterator[MysqlDatabase]:
    handle = MysqlDatabase(
        private_database,
        track_access=TrackAccess.STREAMS,
        query_timeout=QUERY_TIMEOUT,
        connect_timeout=1.0,
        retry_interval=RETRY_INTERVAL,
    )
    yield handle
    await handle.close()


async def _timed_has(store: DBBackedStore, h: str) -> tuple[bool | Exception, float]:
    start = time.monotonic()
    try:
        result: bool | Exception = await store.has(h)
    except DatabaseStoreError as e:
        result = e
    return result, time.monotonic() - start


async def _wait_until_served(store: DBBackedStore, h: str, limit: float = 15.0) -> float:
    """Seconds until `has` works again (fails the test after `limit`)."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        result, _ = await _timed_has(store, h)
        if result is True:
            return time.monotonic() - start
        await asyncio.sleep(0.05)
    pytest.fail(f"the store did not recover within {limit}s of the database coming back")


async def _put_once_back(store: DBBackedStore, h: str, data: bytes, failure: str, limit: float = 10) -> None:
    """Retry `put` until the database takes it (fails the test with `failure` after `limit` s)."""
    deadline = time.monotonic() + limit
    while True:
        try:
            await store.put(h, data)
            return
        except DatabaseStoreError:
            assert time.monotonic() < deadline, failure
            await asyncio.sleep(0.05)


def _down_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "requests fail until it is back" in r.getMessage()]


async def test_database_stopped_during_a_run_of_requests(
    private_mariadb: PrivateMariaDB, db: MysqlDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="prism.db")
    store = DBBackedStore(MemoryStore(), db)
    s = make_stream(3)
    await store.put_sd(s.sd_hash, s.sd_bytes)
    for h, data in s.blobs:
        await store.put(h, data)

    results: list[tuple[bool | Exception, float]] = []
    stop = asyncio.Event()

    async def client(h: str) -> None:  # a steady run of requests from 8 concurrent callers
        while not stop.is_set():
            results.append(await _timed_has(store, h))
            await asyncio.sleep(0.01)

    clients = [asyncio.create_task(client(h)) for h in [s.sd_hash, *s.hashes] * 2]
    await asyncio.sleep(0.3)
    served_before = sum(r is True for r, _ in results)
    await asyncio.to_thread(private_mariadb.stop)
    await asyncio.sleep(1.0)
    during = len(results)
    await asyncio.sleep(1.0)
    failures = [(r, t) for r, t in results[during:]]
    await asyncio.to_thread(private_mariadb.start)
    recovery = await _wait_until_served(store, s.sd_hash)
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*clients)

    assert served_before > 0
    # While the server is down every request fails, fast, with a clear error.
    assert failures and all(isinstance(r, DatabaseStoreError) for r, _ in failures)
    assert max(t for _, t in failures) < 0.5
    assert all("unreachable" in str(r) and "127.0.0.1" in str(r) for r, _ in failures)
    # One message in the log for the whole outage, one when it is back.
    assert len(_down_messages(caplog)) == 1
    assert any("database is back" in r.getMessage() for r in caplog.records)
    # Served again, with the data that was there before.
    assert recovery < 2.0
    assert results[-1][0] is True
    assert await store.missing_blobs_for_known_stream(s.sd_hash) == []
    assert not await store.wants(s.hashes[0])


async def test_frozen_database_times_out_instead_of_hanging(
    private_mariadb: PrivateMariaDB, private_database: MysqlParams
) -> None:
    db = MysqlDatabase(private_database, query_timeout=QUERY_TIMEOUT, connect_timeout=1.0, retry_interval=1.0)
    store = DBBackedStore(MemoryStore(), db)
    h = random_hash()
    try:
        await store.put(h, b"data")
        assert await store.has(h)
        private_mariadb.pause()  # the TCP connection stays open, nothing answers
        try:
            result, took = await _timed_has(store, h)
            assert isinstance(result, DatabaseStoreError)
            assert isinstance(result.__cause__, DatabaseTimeout)
            assert f"did not answer within {QUERY_TIMEOUT:g}s" in str(result)
            assert QUERY_TIMEOUT - 0.1 <= took < QUERY_TIMEOUT + 1.0
            # Meanwhile other requests do not queue up behind it: they fail at once...
            result, took = await _timed_has(store, h)
            assert isinstance(result, DatabaseStoreError) and took < 0.2
            assert "did not answer" in str(result)
            # ...except one per retry interval, which probes (and times out again).
            await asyncio.sleep(1.0)
            result, took = await _timed_has(store, h)
            assert (
                isinstance(result, DatabaseStoreError) and QUERY_TIMEOUT - 0.1 <= took < QUERY_TIMEOUT + 1.0
            )
        finally:
            private_mariadb.resume()
        assert await _wait_until_served(store, h) < QUERY_TIMEOUT + 2.0
    finally:
        await db.close()


async def test_database_down_at_start(
    private_mariadb: PrivateMariaDB, private_database: MysqlParams, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="prism.db")
    await asyncio.to_thread(private_mariadb.stop)
    db = MysqlDatabase(private_database, query_timeout=QUERY_TIMEOUT, retry_interval=RETRY_INTERVAL)
    try:
        started = time.monotonic()
        assert await db.start() is False
        assert time.monotonic() - started < 1.0
        assert not db.available
        [message] = _down_messages(caplog)
        assert f"127.0.0.1:{private_database.port}" in message and "unreachable" in message
        with pytest.raises(DatabaseUnavailable, match="unreachable"):
            await db.start(require=True)
        store = DBBackedStore(MemoryStore(), db)
        result, took = await _timed_has(store, random_hash())
        assert isinstance(result, DatabaseStoreError) and took < 0.5
        await asyncio.to_thread(private_mariadb.start)
        h = random_hash()
        await _put_once_back(store, h, b"late", "no recovery after the database started")
        assert await store.has(h)
        assert db.available
        assert len(_down_messages(caplog)) == 1
    finally:
        await db.close()


async def test_login_refused_then_granted(
    private_mariadb: PrivateMariaDB, private_database: MysqlParams, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="prism.db")
    user = f"u{random_hash()[:10]}"
    params = MysqlParams(user, "s3cret", private_database.database, "127.0.0.1", private_database.port)
    db = MysqlDatabase(params, query_timeout=QUERY_TIMEOUT, retry_interval=RETRY_INTERVAL)
    try:
        assert await db.start() is False
        [message] = _down_messages(caplog)
        assert "refused the login" in message and "Access denied" in message and user in message
        assert "s3cret" not in message
        store = DBBackedStore(MemoryStore(), db)
        for _ in range(3):
            result, took = await _timed_has(store, random_hash())
            assert isinstance(result, DatabaseStoreError) and "refused the login" in str(result)
            assert took < 0.5
        # The administrator fixes the account: the running store notices by itself.
        private_mariadb.admin(
            f"CREATE USER '{user}'@'%' IDENTIFIED BY 's3cret'",
            f"GRANT ALL ON `{private_database.database}`.* TO '{user}'@'%'",
        )
        h = random_hash()
        await _put_once_back(store, h, b"ok", "no recovery after the login was granted")
        assert await store.has(h)
    finally:
        await db.close()
        private_mariadb.admin(f"DROP USER IF EXISTS '{user}'@'%'")


async def test_missing_database_says_how_to_create_it(private_mariadb: PrivateMariaDB) -> None:
    params = MysqlParams("root", "", "no_such_database", "127.0.0.1", private_mariadb.port)
    db = MysqlDatabase(params, query_timeout=QUERY_TIMEOUT)
    try:
        with pytest.raises(DatabaseUnavailable, match=r"no database 'no_such_database'.*make db"):
            await db.start(require=True)
    finally:
        await db.close()
