"""The localdb cache index: which blobs a disk cache holds, their sizes and last access times.

Two backends with the same table shape (`blob_`: hash, is_stored, length, last_accessed_at):

- `SqliteLocalDB`: an embedded SQLite file inside the cache directory (the default, so a
  blob cache needs no database server). SQLite calls run on one dedicated thread.
- `MysqlLocalDB`: the `blob_` table of schema.sql through aiomysql, as reflector.go's
  localdb does (soft delete: an evicted blob keeps its row with `is_stored = 0`).

`LocalDBIndex` puts either behind the disk cache's `AccessIndex` protocol: hits, adds and
deletes are only noted in a dict; a flusher task writes them in batches about once a
second, never one write per hit.

MySQL calls go through `prism.db.runner.QueryRunner` (timeouts, lock-wait retries, fail-fast
while the server is down), as the tracking database's do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from prism.config import MysqlParams
from prism.db.errors import DatabaseError
from prism.db.runner import Connection, QueryRunner

log = logging.getLogger("prism.db.localdb")

T = TypeVar("T")

SQLITE_NAME = "localdb.sqlite3"
"""File name of the embedded index inside a cache directory."""

BATCH = 1000
MYSQL_QUERY_TIMEOUT = 120.0
"""Per statement: generous, since `known()` reads every row of a large cache's index at start."""
MYSQL_LOCK_WAIT_TIMEOUT = 50
"""The server's default innodb_lock_wait_timeout, which this index always ran with."""
_MIN_TS = 1.0  # MySQL TIMESTAMP cannot hold 0


class LocalDBError(Exception):
    """The localdb index could not be opened, read or written."""


class LocalDB(ABC):
    """Access to one `blob_` table. All methods are coroutines; writes are batched by callers."""

    kind: str
    statements = 0  # write statements executed (tests check batching with it)

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def load_stored(self) -> list[tuple[str, int, float]]:
        """(hash, length, last access unix time) of every row with is_stored = 1."""

    @abstractmethod
    async def known(self) -> dict[str, tuple[bool, int]]:
        """hash -> (is_stored, length) of every row."""

    @abstractmethod
    async def upsert(self, rows: Sequence[tuple[str, int, float]]) -> None:
        """Mark (hash, length, accessed_at) rows stored, setting length and access time."""

    @abstractmethod
    async def set_stored(self, rows: Sequence[tuple[str, int]]) -> None:
        """Mark (hash, length) rows stored with that length, keeping their access time."""

    @abstractmethod
    async def touch(self, hashes: Sequence[str], accessed_at: float) -> None: ...

    @abstractmethod
    async def mark_deleted(self, hashes: Sequence[str]) -> None:
        """Soft delete: is_stored = 0."""


def _chunks(seq: Sequence[Any], n: int = BATCH) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


class SqliteLocalDB(LocalDB):
    """The index as an SQLite file (WAL journal), used from a single worker thread."""

    kind = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.statements = 0

    @classmethod
    def in_cache_dir(cls, cache_dir: str) -> SqliteLocalDB:
        return cls(os.path.join(cache_dir, SQLITE_NAME))

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise LocalDBError(f"localdb {self.path} is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as e:
            raise LocalDBError(f"localdb {self.path}: {e}") from e

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="localdb-sqlite")
        await self._run(self._open_blocking)

    def _open_blocking(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS blob_ ("
            " hash TEXT PRIMARY KEY NOT NULL,"
            " is_stored INTEGER NOT NULL DEFAULT 0,"
            " length INTEGER,"
            " last_accessed_at REAL)"
        )
        conn.execute("CREATE INDEX IF NOT EXISTS blob_last_accessed_idx ON blob_ (last_accessed_at)")
        self._conn = conn

    async def close(self) -> None:
        if self._executor is None:
            return
        with contextlib.suppress(LocalDBError):
            await self._run(self._close_blocking)
        self._executor.shutdown(wait=True)
        self._executor = None

    def _close_blocking(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LocalDBError(f"localdb {self.path} is not open")
        return self._conn

    async def load_stored(self) -> list[tuple[str, int, float]]:
        def q() -> list[tuple[str, int, float]]:
            rows = self._db().execute(
                "SELECT hash, COALESCE(length, 0), COALESCE(last_accessed_at, 0) "
                "FROM blob_ WHERE is_stored = 1"
            )
            return [(h, int(n), float(t)) for h, n, t in rows]

        return await self._run(q)

    async def known(self) -> dict[str, tuple[bool, int]]:
        def q() -> dict[str, tuple[bool, int]]:
            rows = self._db().execute("SELECT hash, is_stored, COALESCE(length, 0) FROM blob_")
            return {h: (bool(s), int(n)) for h, s, n in rows}

        return await self._run(q)

    def _write(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        if not args:
            return
        db = self._db()
        db.execute("BEGIN")
        try:
            db.executemany(sql, args)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.statements += 1

    async def upsert(self, rows: Sequence[tuple[str, int, float]]) -> None:
        await self._run(
            self._write,
            "INSERT INTO blob_ (hash, is_stored, length, last_accessed_at) VALUES (?, 1, ?, ?) "
            "ON CONFLICT(hash) DO UPDATE SET is_stored = 1, length = excluded.length, "
            "last_accessed_at = excluded.last_accessed_at",
            list(rows),
        )

    async def set_stored(self, rows: Sequence[tuple[str, int]]) -> None:
        await self._run(
            self._write,
            "UPDATE blob_ SET is_stored = 1, length = ? WHERE hash = ?",
            [(n, h) for h, n in rows],
        )

    async def touch(self, hashes: Sequence[str], accessed_at: float) -> None:
        await self._run(
            self._write,
            "UPDATE blob_ SET last_accessed_at = ? WHERE hash = ?",
            [(accessed_at, h) for h in hashes],
        )

    async def mark_deleted(self, hashes: Sequence[str]) -> None:
        await self._run(self._write, "UPDATE blob_ SET is_stored = 0 WHERE hash = ?", [(h,) for h in hashes])


class MysqlLocalDB(LocalDB):
    """The index in MySQL/MariaDB's `blob_` table (schema.sql), through the `QueryRunner` of prism.db."""

    kind = "mysql"

    def __init__(self, params: MysqlParams) -> None:
        self.params = params
        self._runner: QueryRunner | None = None
        self.statements = 0

    async def open(self) -> None:
        if self._runner is not None:
            return
        runner = QueryRunner(
            self.params,
            max_connections=2,
            connect_timeout=10.0,
            query_timeout=MYSQL_QUERY_TIMEOUT,
            lock_wait_timeout=MYSQL_LOCK_WAIT_TIMEOUT,
        )
        try:
            await runner.run("open localdb", lambda conn: runner.query(conn, "SELECT 1"))
        except DatabaseError as e:
            await runner.close()
            where = self.params.unix_socket or f"{self.params.host}:{self.params.port}"
            raise LocalDBError(
                f"cannot connect to localdb MySQL at {where}/{self.params.database}: {e}"
            ) from e
        self._runner = runner

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.close()

    async def _run(self, what: str, fn: Callable[[QueryRunner, Connection], Awaitable[T]]) -> T:
        runner = self._runner
        if runner is None:
            raise LocalDBError("localdb MySQL is not open")
        try:
            return await runner.run(what, lambda conn: fn(runner, conn))
        except DatabaseError as e:
            raise LocalDBError(f"localdb MySQL: {e}") from e

    async def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await self._run("read localdb", lambda runner, conn: runner.query(conn, sql, args))

    async def _exec(self, sql: str, args: Sequence[Any]) -> None:
        """One write (lock-wait timeouts are retried by the runner, as reflector.go)."""
        await self._run("write localdb", lambda runner, conn: runner.execute(conn, sql, args))
        self.statements += 1

    async def load_stored(self) -> list[tuple[str, int, float]]:
        rows = await self._query(
            "SELECT hash, COALESCE(length, 0), COALESCE(UNIX_TIMESTAMP(last_accessed_at), 0) "
            "FROM blob_ WHERE is_stored = 1"
        )
        return [(h, int(n), float(t)) for h, n, t in rows]

    async def known(self) -> dict[str, tuple[bool, int]]:
        rows = await self._query("SELECT hash, is_stored, COALESCE(length, 0) FROM blob_")
        return {h: (bool(s), int(n)) for h, s, n in rows}

    async def upsert(self, rows: Sequence[tuple[str, int, float]]) -> None:
        for chunk in _chunks(list(rows)):
            values = ",".join(["(%s, 1, %s, FROM_UNIXTIME(%s))"] * len(chunk))
            args = [a for h, n, t in chunk for a in (h, n, max(_MIN_TS, t))]
            await self._exec(
                "INSERT INTO blob_ (hash, is_stored, length, last_accessed_at) VALUES "
                + values
                + " ON DUPLICATE KEY UPDATE is_stored = 1, length = VALUES(length), "
                "last_accessed_at = VALUES(last_accessed_at)",
                args,
            )

    async def set_stored(self, rows: Sequence[tuple[str, int]]) -> None:
        for h, n in rows:
            await self._exec("UPDATE blob_ SET is_stored = 1, length = %s WHERE hash = %s", (n, h))

    async def touch(self, hashes: Sequence[str], accessed_at: float) -> None:
        for chunk in _chunks(list(hashes)):
            marks = ",".join(["%s"] * len(chunk))
            await self._exec(
                f"UPDATE blob_ SET last_accessed_at = FROM_UNIXTIME(%s) WHERE hash IN ({marks})",
                [max(_MIN_TS, accessed_at), *chunk],
            )

    async def mark_deleted(self, hashes: Sequence[str]) -> None:
        for chunk in _chunks(list(hashes)):
            marks = ",".join(["%s"] * len(chunk))
            await self._exec(f"UPDATE blob_ SET is_stored = 0 WHERE hash IN ({marks})", list(chunk))


_TOUCH = ("touch",)
_DEL = ("del",)


class LocalDBIndex:
    """Batches a disk cache's index changes into a `LocalDB` (the `AccessIndex` protocol).

    The `record_*` methods are O(1) dict writes; the flusher task writes everything noted
    since the last flush every `flush_interval` seconds. A failed flush keeps its changes
    for the next one.
    """

    def __init__(
        self,
        db: LocalDB,
        flush_interval: float = 1.0,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.db = db
        self.flush_interval = flush_interval
        self._sleep = sleep  # injectable so tests step the flusher instead of racing it
        self._pending: dict[str, tuple[Any, ...]] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.flushes = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        await self.db.open()
        if self._task is None:
            self._task = asyncio.create_task(self._flush_loop(), name="localdb-flusher")

    async def stop(self, grace: float = 5.0) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await asyncio.wait_for(self.flush(), grace)
        except (TimeoutError, LocalDBError) as e:
            log.warning("localdb: %d index changes not written at shutdown: %s", len(self._pending), e)
        await self.db.close()

    async def load(self) -> list[tuple[str, int, float]]:
        return await self.db.load_stored()

    def record_add(self, blob_hash: str, size: int, accessed_at: float | None = None) -> None:
        self._pending[blob_hash] = ("add", size, accessed_at)

    def record_access(self, blob_hash: str) -> None:
        op = self._pending.get(blob_hash)
        if op is None:
            self._pending[blob_hash] = _TOUCH
        elif op[0] == "add" and op[2] is not None:
            self._pending[blob_hash] = ("add", op[1], None)

    def record_delete(self, blob_hash: str) -> None:
        self._pending[blob_hash] = _DEL

    async def flush(self) -> None:
        async with self._lock:
            if not self._pending:
                return
            batch, self._pending = self._pending, {}
            now = time.time()
            adds = [(h, op[1], now if op[2] is None else op[2]) for h, op in batch.items() if op[0] == "add"]
            touches = [h for h, op in batch.items() if op is _TOUCH]
            deletes = [h for h, op in batch.items() if op is _DEL]
            try:
                if adds:
                    await self.db.upsert(adds)
                if touches:
                    await self.db.touch(touches, now)
                if deletes:
                    await self.db.mark_deleted(deletes)
            except BaseException:
                for h, op in batch.items():  # newer changes win
                    self._pending.setdefault(h, op)
                raise
            self.flushes += 1

    async def _flush_loop(self) -> None:
        while True:
            await self._sleep(self.flush_interval)
            try:
                await self.flush()
            except LocalDBError as e:
                log.warning("localdb flush failed (will retry): %s", e)


@dataclass(slots=True)
class PopulateReport:
    scanned: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0


async def populate(db: LocalDB, blobs: Iterable[tuple[str, int, float]]) -> PopulateReport:
    """Index (hash, size, stamp) blobs found on disk; rows already right are left alone.

    New rows get the file's time as last access; existing rows keep theirs and only get
    `is_stored = 1` and the real length. Running it twice changes nothing.
    """
    existing = await db.known()
    report = PopulateReport()
    new: list[tuple[str, int, float]] = []
    fix: list[tuple[str, int]] = []
    for h, size, stamp in blobs:
        report.scanned += 1
        row = existing.get(h)
        if row is None:
            new.append((h, size, stamp))
        elif row != (True, size):
            fix.append((h, size))
        else:
            report.unchanged += 1
    for chunk in _chunks(new, 10_000):
        await db.upsert(chunk)
    if fix:
        await db.set_stored(fix)
    report.added, report.updated = len(new), len(fix)
    return report
