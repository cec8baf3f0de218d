"""reflector.go's MySQL tracking database (reflector.md §5) over an aiomysql pool.

Every query is parameterised and bounded by `query_timeout` (waiting for a connection included).
Lock-wait timeouts (1205) and deadlocks (1213) are retried up to three more times. When the
server is unreachable or refuses the login, the first failure is logged once and later calls
fail at once with `DatabaseUnavailable`; one call per `retry_interval` probes the server, so the
store serves again by itself as soon as the database is back.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import aiomysql
import pymysql

from prism.blob import validate_hash, validate_size
from prism.config import ConfigError, MysqlParams, parse_mysql_dsn
from prism.db.base import StreamBlob, TrackAccess, stream_blobs
from prism.db.errors import DatabaseError, DatabaseTimeout, DatabaseUnavailable
from prism.stream.sd import SdBlob

log = logging.getLogger("prism.db")

T = TypeVar("T")
Conn = aiomysql.Connection

HAS_BATCH = 10000
"""Hashes per `IN (...)` list, as reflector.go."""
INSERT_BATCH = 1000
"""Rows per multi-row insert of a stream's content blobs."""
LOCK_RETRIES = 3
"""Extra attempts after a lock-wait timeout (1205), as reflector.go."""
DEADLOCK_RETRIES = 5
"""Extra attempts after a deadlock (1213): concurrent uploads of streams sharing blobs can meet."""
TOUCH_AFTER = "6 HOUR"
"""A row's last_accessed_at is refreshed only when older than this (reflector.go: 6 h)."""

_LOCK_ERRORS = {1205, 1213}  # lock wait timeout, deadlock
# Errors that say "the server is not there for us", not "this query is wrong".
_LOGIN_ERRORS = {1044, 1045, 1049, 1129, 1130, 1698}
_CONNECTION_ERRORS = {
    1040,  # too many connections
    1053,  # server shutdown in progress
    1152,
    1158,
    1159,
    1160,
    1161,  # aborted connection / network read/write errors
    1927,  # connection killed
    2002,
    2003,
    2005,
    2006,
    2012,
    2013,
    2026,
    2055,
    4031,  # MySQL 8: disconnected for inactivity
}


def _go_duration(text: str) -> float:
    """Seconds of a Go duration such as `5s`, `500ms`, `1m30s`."""
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ConfigError(f"invalid duration {text!r} in MySQL DSN (want e.g. 5s or 500ms)")
    return sum(float(n) * units[u] for n, u in parts)


def _placeholders(n: int) -> str:
    return ",".join(["%s"] * n)


def _batches(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _error_code(exc: BaseException) -> int | None:
    if isinstance(exc, pymysql.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, pymysql.MySQLError) and len(exc.args) >= 2:
        return f"{exc.args[1]} (MySQL error {exc.args[0]})"
    text = str(exc) or type(exc).__name__
    return text


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


class _HasBatch:
    """`has_blob` calls waiting for one shared query."""

    __slots__ = ("hashes", "task")

    def __init__(self) -> None:
        self.hashes: set[str] = set()
        self.task: asyncio.Future[set[str]] | None = None


class MysqlDatabase:
    """A connection pool plus every query of reflector.md §5.

    `track_access` picks which `last_accessed_at` reads refresh (none, streams or blobs);
    `soft_delete` makes `delete` only clear `is_stored` (the localdb cache mode).
    """

    def __init__(
        self,
        params: MysqlParams,
        *,
        track_access: TrackAccess | str | int = TrackAccess.NONE,
        soft_delete: bool = False,
        query_timeout: float = 5.0,
        connect_timeout: float = 3.0,
        lock_wait_timeout: int = 2,
        max_connections: int = 16,
        retry_interval: float = 1.0,
        log_queries: bool = False,
        coalesce_has: bool = True,
    ) -> None:
        self.params = params
        self.track_access = TrackAccess.parse(track_access)
        self.soft_delete = soft_delete
        self.query_timeout = query_timeout
        self.connect_timeout = connect_timeout
        self.lock_wait_timeout = max(1, int(lock_wait_timeout))
        self.max_connections = max_connections
        self.retry_interval = retry_interval
        self.log_queries = log_queries
        self.coalesce_has = coalesce_has
        self._pool: aiomysql.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._down_error: DatabaseUnavailable | None = None
        self._next_probe = 0.0
        self._closed = False
        self._has_batch_open: _HasBatch | None = None
        self.has_queries = 0
        """Queries sent by `has_blob` (without touch) and how many hashes they asked about."""
        self.has_queries_hashes = 0

    @classmethod
    def from_dsn(cls, dsn: str, **options: Any) -> MysqlDatabase:
        """From a Go-style DSN. Its `timeout` / `readTimeout` options set the connect / query timeouts."""
        params = parse_mysql_dsn(dsn)
        opts = dict(params.options)
        if "timeout" in opts:
            options.setdefault("connect_timeout", _go_duration(opts["timeout"]))
        if "readTimeout" in opts:
            options.setdefault("query_timeout", _go_duration(opts["readTimeout"]))
        return cls(params, **options)

    @property
    def where(self) -> str:
        """Where the database is, for messages (never the password)."""
        p = self.params
        place = f"unix:{p.unix_socket}" if p.unix_socket else f"{p.host}:{p.port}"
        return f"MySQL {p.user}@{place}/{p.database}"

    @property
    def available(self) -> bool:
        """False while the last attempt to reach the server failed."""
        return self._down_error is None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, *, require: bool = False) -> bool:
        """Open the pool and check the server once.

        A server that is down or refuses the login is logged once, clearly; then this returns
        False (requests fail fast until it comes back), or raises DatabaseUnavailable if `require`.
        """
        try:
            await self.ping()
        except DatabaseUnavailable:
            if require:
                raise
            return False
        log.info("database ready: %s (access tracking %s)", self.where, self.track_access.name.lower())
        return True

    async def close(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
            try:
                async with asyncio.timeout(self.query_timeout):
                    await pool.wait_closed()
            except TimeoutError:
                pool.terminate()

    async def _get_pool(self) -> aiomysql.Pool:
        if self._pool is None:
            async with self._pool_lock:
                if self._closed:
                    raise DatabaseError(f"database {self.where} is closed")
                if self._pool is None:
                    # minsize=0: creating the pool never connects, so it cannot fail or hang.
                    self._pool = await aiomysql.create_pool(
                        minsize=0,
                        maxsize=self.max_connections,
                        autocommit=True,
                        charset="utf8mb4",
                        connect_timeout=self.connect_timeout,
                        pool_recycle=3600,
                        **self.params.kwargs(),
                    )
        return self._pool

    # -- running queries ------------------------------------------------------------------

    def _fail_fast(self) -> None:
        if self._down_error is None:
            return
        now = time.monotonic()
        if now < self._next_probe:
            raise DatabaseUnavailable(str(self._down_error))
        self._next_probe = now + self.retry_interval  # this call is the probe

    def _mark_down(self, error: DatabaseUnavailable) -> None:
        if self._down_error is None:
            log.error("%s; requests fail until it is back (probing every %.1fs)", error, self.retry_interval)
        self._down_error = error
        self._next_probe = time.monotonic() + self.retry_interval

    def _mark_up(self) -> None:
        if self._down_error is not None:
            log.warning("database is back: %s", self.where)
            self._down_error = None

    def _unavailable(self, exc: BaseException) -> DatabaseUnavailable | None:
        """The DatabaseUnavailable that `exc` means, or None if it is an ordinary query error."""
        code = _error_code(exc)
        if isinstance(exc, TimeoutError):
            return DatabaseTimeout(f"database {self.where} did not answer within {self.query_timeout:g}s")
        if code == 1049:
            return DatabaseUnavailable(
                f"database {self.where}: the server has no database {self.params.database!r} "
                "(create it and load schema.sql, e.g. with `make db`)"
            )
        if code in _LOGIN_ERRORS:
            return DatabaseUnavailable(f"database {self.where} refused the login: {_error_text(exc)}")
        if (
            code in _CONNECTION_ERRORS
            or isinstance(exc, pymysql.err.InterfaceError | ConnectionError | OSError)
            or (isinstance(exc, pymysql.err.OperationalError) and code is not None and code >= 2000)
        ):
            return DatabaseUnavailable(f"database {self.where} is unreachable: {_error_text(exc)}")
        return None

    async def _setup(self, conn: Conn) -> None:
        async with conn.cursor() as cur:
            await cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            await cur.execute("SET SESSION innodb_lock_wait_timeout = %s", (self.lock_wait_timeout,))
        conn._prism_ready = True  # type: ignore[attr-defined]

    async def _attempt(
        self, fn: Callable[[Conn], Awaitable[T]], transaction: bool, state: dict[str, bool]
    ) -> T:
        async with asyncio.timeout(self.query_timeout):
            pool = await self._get_pool()
            conn = await pool.acquire()
            ok = False
            try:
                state["reused"] = getattr(conn, "_prism_ready", False)
                if not state["reused"]:
                    await self._setup(conn)
                if transaction:
                    await conn.begin()
                result = await fn(conn)
                if transaction:
                    await conn.commit()
                ok = True
                return result
            finally:
                if not ok:
                    # Never hand a connection in an unknown state (mid-query, mid-transaction) back.
                    conn.close()
                pool.release(conn)

    async def _run(
        self,
        what: str,
        fn: Callable[[Conn], Awaitable[T]],
        *,
        transaction: bool = False,
        fail_fast: bool = True,
    ) -> T:
        """Run `fn` on a pooled connection with the timeout, retries and fail-fast rules."""
        if fail_fast:
            self._fail_fast()
        lock_retries = 0
        reconnected = False
        while True:
            state = {"reused": False}
            try:
                result = await self._attempt(fn, transaction, state)
            except (pymysql.MySQLError, OSError, TimeoutError) as e:
                code = _error_code(e)
                limit = LOCK_RETRIES if code == 1205 else DEADLOCK_RETRIES
                if code in _LOCK_ERRORS and lock_retries < limit:
                    lock_retries += 1
                    log.warning("%s: %s; retry %d of %d", what, _error_text(e), lock_retries, limit)
                    if code == 1213:  # both sides retry: a random pause keeps them from meeting again
                        await asyncio.sleep(random.uniform(0.0, 0.02 * lock_retries))
                    continue
                unavailable = self._unavailable(e)
                if unavailable is None:
                    raise DatabaseError(f"{what} failed: {_error_text(e)}") from e
                if state["reused"] and not reconnected and not isinstance(e, TimeoutError):
                    # A pooled connection the server dropped (restart, idle kill): try a fresh one once.
                    reconnected = True
                    continue
                self._mark_down(unavailable)
                raise type(unavailable)(f"{what}: {unavailable}") from e
            self._mark_up()
            return result

    async def _query(self, conn: Conn, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.log_queries:
            log.debug("query: %s %r", sql, list(args)[:8])
        async with conn.cursor() as cur:
            await cur.execute(sql, tuple(args))
            return list(await cur.fetchall())

    async def _exec(self, conn: Conn, sql: str, args: Sequence[Any] = ()) -> int:
        """Run a statement; returns the last insert id."""
        if self.log_queries:
            log.debug("exec: %s %r", sql, list(args)[:8])
        async with conn.cursor() as cur:
            await cur.execute(sql, tuple(args))
            return int(cur.lastrowid or 0)

    # -- queries of reflector.md §5 -------------------------------------------------------

    async def ping(self) -> None:
        """One bare `SELECT 1` round trip."""

        async def run(conn: Conn) -> None:
            await self._query(conn, "SELECT 1")

        await self._run("ping", run)

    async def has_blob(self, blob_hash: str, touch: bool = False) -> bool:
        """True if the blob is stored (is_stored=1); `touch` refreshes access times per the mode.

        Concurrent calls without `touch` share queries: calls arriving while an earlier one waits
        for a free connection join its `IN (...)` list, which is sent once it has the connection.
        An answer is therefore never older than the call, and under load one round trip answers
        many callers (a lone caller still gets its own query at once).
        """
        if touch and self.track_access is not TrackAccess.NONE:
            return blob_hash in await self.has_blobs([blob_hash], touch=True)
        if not isinstance(blob_hash, str) or len(blob_hash) != 96:
            return False
        batch = self._has_batch_open
        if batch is None or len(batch.hashes) >= HAS_BATCH or not self.coalesce_has:
            self._fail_fast()  # don't even start a batch while the database is known down
            batch = self._has_batch_open = _HasBatch()
            batch.task = asyncio.ensure_future(self._send_has_batch(batch))
            batch.task.add_done_callback(_retrieve)  # no "exception never retrieved" if all callers left
        batch.hashes.add(blob_hash)
        # shield: a cancelled caller must not cancel the query the other callers wait for.
        found = await asyncio.shield(batch.task)  # type: ignore[arg-type]
        return blob_hash in found

    async def _send_has_batch(self, batch: _HasBatch) -> set[str]:
        hashes: list[str] = []

        async def run(conn: Conn) -> set[str]:
            if not hashes:  # we have a connection: close the batch (no one joins any more), send it
                if self._has_batch_open is batch:
                    self._has_batch_open = None
                hashes.extend(sorted(batch.hashes))
            self.has_queries += 1
            self.has_queries_hashes += len(hashes)
            if len(hashes) == 1:
                rows = await self._query(
                    conn, "SELECT hash FROM blob_ WHERE hash = %s AND is_stored = 1", (hashes[0],)
                )
            else:
                marks = _placeholders(len(hashes))
                sql = f"SELECT hash FROM blob_ WHERE is_stored = 1 AND hash IN ({marks})"
                rows = await self._query(conn, sql, hashes)
            return {r[0] for r in rows}

        try:
            return await self._run("has blob", run, fail_fast=False)
        finally:
            if self._has_batch_open is batch:
                self._has_batch_open = None

    async def has_blobs(self, hashes: Iterable[str], touch: bool = False) -> set[str]:
        """The subset of `hashes` that is stored, in one query per 10000 hashes.

        Unlike reflector.go in streams mode, a stored blob that belongs to no stream counts as
        stored (reflector.md §11 item 14); only which rows get touched depends on the mode.
        """
        wanted = sorted({h for h in hashes if isinstance(h, str) and len(h) == 96})
        if not wanted:
            return set()
        mode = self.track_access if touch else TrackAccess.NONE

        async def run(conn: Conn) -> set[str]:
            found: set[str] = set()
            for batch in _batches(wanted, HAS_BATCH):
                found |= await self._has_batch(conn, batch, mode)
            return found

        return await self._run("has blobs", run)

    async def _has_batch(self, conn: Conn, batch: Sequence[str], mode: TrackAccess) -> set[str]:
        marks = _placeholders(len(batch))
        stale = f"(%s IS NULL OR %s < NOW() - INTERVAL {TOUCH_AFTER})"
        if mode is TrackAccess.NONE:
            sql = f"SELECT hash FROM blob_ WHERE is_stored = 1 AND hash IN ({marks})"
            rows = await self._query(conn, sql, batch)
            return {r[0] for r in rows}
        if mode is TrackAccess.BLOBS:
            rows = await self._query(
                conn,
                f"SELECT hash, id, {stale % ('last_accessed_at', 'last_accessed_at')} FROM blob_ "
                f"WHERE is_stored = 1 AND hash IN ({marks})",
                batch,
            )
            to_touch = sorted({r[1] for r in rows if r[2]})
            table = "blob_"
        else:
            # Streams: the streams a blob is content of, and the stream it is the sd blob of.
            rows = await self._query(
                conn,
                f"SELECT b.hash, s1.id, {stale % ('s1.last_accessed_at', 's1.last_accessed_at')}, "
                f"s2.id, {stale % ('s2.last_accessed_at', 's2.last_accessed_at')} "
                "FROM blob_ b LEFT JOIN stream_blob sb ON sb.blob_id = b.id "
                "LEFT JOIN stream s1 ON s1.id = sb.stream_id LEFT JOIN stream s2 ON s2.sd_blob_id = b.id "
                f"WHERE b.is_stored = 1 AND b.hash IN ({marks})",
                batch,
            )
            as_content = {r[1] for r in rows if r[1] is not None and r[2]}
            as_sd = {r[3] for r in rows if r[3] is not None and r[4]}
            to_touch = sorted(as_content | as_sd)
            table = "stream"
        if to_touch:
            await self._exec(
                conn,
                f"UPDATE {table} SET last_accessed_at = NOW() WHERE id IN ({_placeholders(len(to_touch))})",
                to_touch,
            )
        return {r[0] for r in rows}

    def _blob_insert_sql(self, rows: int) -> str:
        if self.track_access is TrackAccess.BLOBS:
            values = ",".join(["(%s,%s,%s,NOW())"] * rows)
            return (
                f"INSERT INTO blob_ (hash, is_stored, length, last_accessed_at) VALUES {values} "
                "ON DUPLICATE KEY UPDATE id = LAST_INSERT_ID(id), "
                "is_stored = (is_stored OR VALUES(is_stored)), last_accessed_at = VALUES(last_accessed_at)"
            )
        values = ",".join(["(%s,%s,%s)"] * rows)
        return (
            f"INSERT INTO blob_ (hash, is_stored, length) VALUES {values} "
            "ON DUPLICATE KEY UPDATE id = LAST_INSERT_ID(id), is_stored = (is_stored OR VALUES(is_stored))"
        )

    async def _insert_blob(self, conn: Conn, blob_hash: str, length: int, stored: bool) -> int:
        blob_id = await self._exec(conn, self._blob_insert_sql(1), (blob_hash, int(stored), length))
        if blob_id == 0:
            rows = await self._query(conn, "SELECT id FROM blob_ WHERE hash = %s", (blob_hash,))
            if not rows:
                raise DatabaseError(f"blob {blob_hash} vanished right after it was inserted")
            blob_id = int(rows[0][0])
        return blob_id

    async def _insert_stream(self, conn: Conn, stream_hash: str, sd_blob_id: int) -> int:
        if self.track_access is TrackAccess.STREAMS:
            sql = (
                "INSERT INTO stream (hash, sd_blob_id, last_accessed_at) VALUES (%s,%s,NOW()) "
                "ON DUPLICATE KEY UPDATE id = LAST_INSERT_ID(id), last_accessed_at = NOW()"
            )
        else:
            sql = (
                "INSERT INTO stream (hash, sd_blob_id) VALUES (%s,%s) "
                "ON DUPLICATE KEY UPDATE id = LAST_INSERT_ID(id)"
            )
        stream_id = await self._exec(conn, sql, (stream_hash, sd_blob_id))
        if stream_id == 0:
            rows = await self._query(conn, "SELECT id FROM stream WHERE hash = %s", (stream_hash,))
            if not rows:
                raise DatabaseError(f"stream {stream_hash} vanished right after it was inserted")
            stream_id = int(rows[0][0])
        return stream_id

    async def add_blob(self, blob_hash: str, length: int, stored: bool = True) -> int:
        """Record a blob (stored or only known); an already stored blob stays stored. Returns its id."""
        validate_hash(blob_hash)
        validate_size(length)

        async def run(conn: Conn) -> int:
            return await self._insert_blob(conn, blob_hash, length, stored)

        return await self._run("add blob", run)

    async def add_stream(
        self, sd_hash: str, sd_length: int, stream_hash: str, blobs: Iterable[StreamBlob]
    ) -> int:
        """Record a stored sd blob, its stream, and its content blobs as known but not stored.

        All in one transaction, so a stream is never half recorded. Returns the stream id.
        """
        validate_hash(sd_hash)
        validate_size(sd_length)
        if not isinstance(stream_hash, str) or not stream_hash:
            raise DatabaseError("sd blob is missing stream hash")
        if len(stream_hash) > 96:
            raise DatabaseError(f"stream hash {stream_hash[:100]!r} is longer than 96 characters")
        content = sorted({b.hash: b for b in blobs}.values(), key=lambda b: b.hash)
        for b in content:
            validate_hash(b.hash)
            validate_size(b.length)

        async def run(conn: Conn) -> int:
            sd_id = await self._insert_blob(conn, sd_hash, sd_length, True)
            stream_id = await self._insert_stream(conn, stream_hash, sd_id)
            for batch in _batches(content, INSERT_BATCH):
                args: list[Any] = []
                for b in batch:
                    args += (b.hash, 0, b.length)
                await self._exec(conn, self._blob_insert_sql(len(batch)), args)
                rows = await self._query(
                    conn,
                    f"SELECT hash, id FROM blob_ WHERE hash IN ({_placeholders(len(batch))})",
                    [b.hash for b in batch],
                )
                ids = {r[0]: int(r[1]) for r in rows}
                links: list[Any] = []
                for b in batch:
                    links += (stream_id, ids[b.hash], b.num)
                # reflector.go's INSERT IGNORE, minus the warnings (each costs a SHOW WARNINGS round trip).
                await self._exec(
                    conn,
                    "INSERT INTO stream_blob (stream_id, blob_id, num) VALUES "
                    + ",".join(["(%s,%s,%s)"] * len(batch))
                    + " ON DUPLICATE KEY UPDATE num = num",
                    links,
                )
            return stream_id

        return await self._run("add sd blob", run, transaction=True)

    async def add_sd_blob(self, sd_hash: str, data: bytes) -> int:
        """Parse sd blob bytes and record the stream (see `add_stream`). Returns the stream id."""
        sd = SdBlob.parse(data)
        return await self.add_stream(sd_hash, len(data), sd.stream_hash, stream_blobs(sd))

    async def missing_blobs_for_known_stream(self, sd_hash: str) -> list[str]:
        """Content blobs of the stream of `sd_hash` not stored yet, in stream order.

        An unknown stream gives an empty list (it looks complete), as in reflector.go.
        """

        async def run(conn: Conn) -> list[str]:
            rows = await self._query(
                conn,
                "SELECT b.hash FROM blob_ b INNER JOIN stream_blob sb ON b.id = sb.blob_id "
                "INNER JOIN stream s ON s.id = sb.stream_id "
                "INNER JOIN blob_ sdb ON sdb.id = s.sd_blob_id AND sdb.hash = %s "
                "WHERE b.is_stored = 0 ORDER BY sb.num",
                (sd_hash,),
            )
            return [r[0] for r in rows]

        return await self._run("missing blobs for known stream", run)

    async def mark_deleted(self, blob_hash: str) -> None:
        """Soft delete: keep the row, clear is_stored."""

        async def run(conn: Conn) -> None:
            await self._exec(conn, "UPDATE blob_ SET is_stored = 0 WHERE hash = %s", (blob_hash,))

        await self._run("mark blob deleted", run)

    async def purge(self, blob_hash: str) -> None:
        """Hard delete: the blob's row, its links, and the stream it is the sd blob of."""

        async def run(conn: Conn) -> None:
            sql = "DELETE FROM stream WHERE sd_blob_id = (SELECT id FROM blob_ WHERE hash = %s)"
            await self._exec(conn, sql, (blob_hash,))
            await self._exec(conn, "DELETE FROM blob_ WHERE hash = %s", (blob_hash,))

        await self._run("delete blob", run, transaction=True)

    async def delete(self, blob_hash: str) -> None:
        """`mark_deleted` with soft delete on, else `purge`."""
        if self.soft_delete:
            await self.mark_deleted(blob_hash)
        else:
            await self.purge(blob_hash)

    async def least_recently_accessed(self, n: int) -> list[str]:
        """The `n` stored blobs accessed longest ago (blobs access tracking only)."""
        if self.track_access is not TrackAccess.BLOBS:
            raise DatabaseError("least recently accessed blobs need access tracking mode 'blobs'")

        async def run(conn: Conn) -> list[str]:
            rows = await self._query(
                conn,
                "SELECT hash FROM blob_ WHERE is_stored = 1 ORDER BY last_accessed_at LIMIT %s",
                (int(n),),
            )
            return [r[0] for r in rows]

        return await self._run("least recently accessed", run)

    async def count_stored(self) -> int:
        """How many blobs are stored."""

        async def run(conn: Conn) -> int:
            rows = await self._query(conn, "SELECT COUNT(id) FROM blob_ WHERE is_stored = 1")
            return int(rows[0][0])

        return await self._run("count stored blobs", run)

    async def block(self, blob_hash: str) -> None:
        """Record a blocked hash (idempotent)."""
        validate_hash(blob_hash)

        async def run(conn: Conn) -> None:
            await self._exec(
                conn,
                "INSERT INTO blocked (hash) VALUES (%s) ON DUPLICATE KEY UPDATE hash = hash",
                (blob_hash,),
            )

        await self._run("block hash", run)

    async def blocked_hashes(self) -> set[str]:
        """Every blocked hash."""

        async def run(conn: Conn) -> set[str]:
            return {r[0] for r in await self._query(conn, "SELECT hash FROM blocked")}

        return await self._run("list blocked hashes", run)

    async def hash_range(self) -> tuple[str, str] | None:
        """Smallest and largest hash in `blob_` (None when empty)."""

        async def run(conn: Conn) -> tuple[str, str] | None:
            rows = await self._query(conn, "SELECT MIN(hash), MAX(hash) FROM blob_")
            return None if not rows or rows[0][0] is None else (rows[0][0], rows[0][1])

        return await self._run("hash range", run)

    async def stored_hashes_in_range(self, start: str, end: str) -> list[str]:
        """Stored hashes h with start <= h <= end."""

        async def run(conn: Conn) -> list[str]:
            rows = await self._query(
                conn,
                "SELECT hash FROM blob_ WHERE hash >= %s AND hash <= %s AND is_stored = 1 ORDER BY hash",
                (start, end),
            )
            return [r[0] for r in rows]

        return await self._run("stored hashes in range", run)
