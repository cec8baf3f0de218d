"""reflector.go's MySQL tracking database (reflector.md §5): the blob, stream and blocked tables.

Every query is parameterised and runs through a `QueryRunner` (pool, timeouts, lock retries,
fail-fast while the database is down); concurrent `has_blob` calls share queries through a
`HasCoalescer`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from prism.blob import validate_hash, validate_size
from prism.config import ConfigError, MysqlParams, parse_mysql_dsn
from prism.db.base import StreamBlob, TrackAccess, stream_blobs
from prism.db.coalesce import HAS_BATCH, HasCoalescer, TakeHashes
from prism.db.errors import DatabaseError, DatabaseUnavailable
from prism.db.runner import Connection, QueryRunner, RunnerOptions
from prism.stream.sd import SdBlob

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = logging.getLogger("prism.db")

T = TypeVar("T")

INSERT_BATCH = 1000
"""Rows per multi-row insert of a stream's content blobs."""
TOUCH_AFTER = "6 HOUR"
"""A row's last_accessed_at is refreshed only when older than this (reflector.go: 6 h)."""


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


class MysqlDatabase:
    """Every query of reflector.md §5 over a `QueryRunner`.

    `track_access` picks which `last_accessed_at` reads refresh (none, streams or blobs);
    `soft_delete` makes `delete` only clear `is_stored` (the localdb cache mode). The other
    options configure the runner (see `QueryRunner`); `coalesce_has=False` gives every
    `has_blob` call its own query.
    """

    def __init__(
        self,
        params: MysqlParams,
        *,
        track_access: TrackAccess | str | int = TrackAccess.NONE,
        soft_delete: bool = False,
        coalesce_has: bool = True,
        **runner_options: Unpack[RunnerOptions],
    ) -> None:
        self.params = params
        self.track_access = TrackAccess.parse(track_access)
        self.soft_delete = soft_delete
        self.runner = QueryRunner(params, **runner_options)
        self._has = HasCoalescer(self._lookup_has, admit=self.runner.admit, enabled=coalesce_has)
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
        return self.runner.where

    @property
    def available(self) -> bool:
        """False while the last attempt to reach the server failed."""
        return self.runner.available

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, *, require: bool = False) -> bool:
        """Check the server once.

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
        await self.runner.close()

    # -- queries of reflector.md §5 -------------------------------------------------------

    async def ping(self) -> None:
        """One bare `SELECT 1` round trip."""

        async def run(conn: Connection) -> None:
            await self.runner.query(conn, "SELECT 1")

        await self.runner.run("ping", run)

    async def has_blob(self, blob_hash: str, touch: bool = False) -> bool:
        """True if the blob is stored (is_stored=1); `touch` refreshes access times per the mode.

        Concurrent calls without `touch` share queries (see `HasCoalescer`): an answer is never
        older than the call, and under load one round trip answers many callers.
        """
        if touch and self.track_access is not TrackAccess.NONE:
            return blob_hash in await self.has_blobs([blob_hash], touch=True)
        if not isinstance(blob_hash, str) or len(blob_hash) != 96:
            return False
        return await self._has.has(blob_hash)

    async def _lookup_has(self, take: TakeHashes) -> set[str]:
        async def run(conn: Connection) -> set[str]:
            hashes = take()  # we have a connection: close the batch, send it
            self.has_queries += 1
            self.has_queries_hashes += len(hashes)
            if len(hashes) == 1:
                sql, args = "SELECT hash FROM blob_ WHERE hash = %s AND is_stored = 1", hashes
            else:
                sql = f"SELECT hash FROM blob_ WHERE is_stored = 1 AND hash IN ({_placeholders(len(hashes))})"
                args = hashes
            return {r[0] for r in await self.runner.query(conn, sql, args)}

        return await self.runner.run("has blob", run, fail_fast=False)

    async def has_blobs(self, hashes: Iterable[str], touch: bool = False) -> set[str]:
        """The subset of `hashes` that is stored, in one query per 10000 hashes.

        Unlike reflector.go in streams mode, a stored blob that belongs to no stream counts as
        stored (reflector.md §11 item 14); only which rows get touched depends on the mode.
        """
        wanted = sorted({h for h in hashes if isinstance(h, str) and len(h) == 96})
        if not wanted:
            return set()
        mode = self.track_access if touch else TrackAccess.NONE

        async def run(conn: Connection) -> set[str]:
            found: set[str] = set()
            for batch in _batches(wanted, HAS_BATCH):
                found |= await self._has_batch(conn, batch, mode)
            return found

        return await self.runner.run("has blobs", run)

    async def _has_batch(self, conn: Connection, batch: Sequence[str], mode: TrackAccess) -> set[str]:
        marks = _placeholders(len(batch))
        stale = f"(%s IS NULL OR %s < NOW() - INTERVAL {TOUCH_AFTER})"
        if mode is TrackAccess.NONE:
            sql = f"SELECT hash FROM blob_ WHERE is_stored = 1 AND hash IN ({marks})"
            return {r[0] for r in await self.runner.query(conn, sql, batch)}
        if mode is TrackAccess.BLOBS:
            rows = await self.runner.query(
                conn,
                f"SELECT hash, id, {stale % ('last_accessed_at', 'last_accessed_at')} FROM blob_ "
                f"WHERE is_stored = 1 AND hash IN ({marks})",
                batch,
            )
            to_touch = sorted({r[1] for r in rows if r[2]})
            table = "blob_"
        else:
            # Streams: the streams a blob is content of, and the stream it is the sd blob of.
            rows = await self.runner.query(
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
            await self.runner.execute(
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

    async def _upsert_row(
        self, conn: Connection, sql: str, args: Sequence[Any], table: str, hash_: str
    ) -> int:
        """Run an `id = LAST_INSERT_ID(id)` upsert; the row's id (looked up if the server gave none)."""
        row_id = await self.runner.execute(conn, sql, args)
        if row_id == 0:
            rows = await self.runner.query(conn, f"SELECT id FROM {table} WHERE hash = %s", (hash_,))
            if not rows:
                what = "blob" if table == "blob_" else table
                raise DatabaseError(f"{what} {hash_} vanished right after it was inserted")
            row_id = int(rows[0][0])
        return row_id

    async def _insert_blob(self, conn: Connection, blob_hash: str, length: int, stored: bool) -> int:
        sql = self._blob_insert_sql(1)
        return await self._upsert_row(conn, sql, (blob_hash, int(stored), length), "blob_", blob_hash)

    async def _insert_stream(self, conn: Connection, stream_hash: str, sd_blob_id: int) -> int:
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
        return await self._upsert_row(conn, sql, (stream_hash, sd_blob_id), "stream", stream_hash)

    async def add_blob(self, blob_hash: str, length: int, stored: bool = True) -> int:
        """Record a blob (stored or only known); an already stored blob stays stored. Returns its id."""
        validate_hash(blob_hash)
        validate_size(length)

        async def run(conn: Connection) -> int:
            return await self._insert_blob(conn, blob_hash, length, stored)

        return await self.runner.run("add blob", run)

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

        async def run(conn: Connection) -> int:
            sd_id = await self._insert_blob(conn, sd_hash, sd_length, True)
            stream_id = await self._insert_stream(conn, stream_hash, sd_id)
            for batch in _batches(content, INSERT_BATCH):
                await self._insert_content(conn, stream_id, batch)
            return stream_id

        return await self.runner.run("add sd blob", run, transaction=True)

    async def _insert_content(self, conn: Connection, stream_id: int, batch: Sequence[StreamBlob]) -> None:
        """Content blobs (known, not stored) and their links to the stream."""
        await self.runner.execute(
            conn, self._blob_insert_sql(len(batch)), [a for b in batch for a in (b.hash, 0, b.length)]
        )
        # A locking read: it sees the rows the INSERT above just locked in their latest version,
        # where a plain (consistent) read can miss a row another transaction's rollback re-created.
        rows = await self.runner.query(
            conn,
            f"SELECT hash, id FROM blob_ WHERE hash IN ({_placeholders(len(batch))}) FOR UPDATE",
            [b.hash for b in batch],
        )
        ids = {r[0]: int(r[1]) for r in rows}
        missing = [b.hash for b in batch if b.hash not in ids]
        if missing:
            raise DatabaseError(f"content blob {missing[0]} vanished while recording its stream")
        # reflector.go's INSERT IGNORE, minus the warnings (each costs a SHOW WARNINGS round trip).
        await self.runner.execute(
            conn,
            "INSERT INTO stream_blob (stream_id, blob_id, num) VALUES "
            + ",".join(["(%s,%s,%s)"] * len(batch))
            + " ON DUPLICATE KEY UPDATE num = num",
            [a for b in batch for a in (stream_id, ids[b.hash], b.num)],
        )

    async def add_sd_blob(self, sd_hash: str, data: bytes) -> int:
        """Parse sd blob bytes and record the stream (see `add_stream`). Returns the stream id."""
        sd = SdBlob.parse(data)
        return await self.add_stream(sd_hash, len(data), sd.stream_hash, stream_blobs(sd))

    async def _column(self, what: str, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """The first column of a one-statement query's rows."""

        async def run(conn: Connection) -> list[Any]:
            return [r[0] for r in await self.runner.query(conn, sql, args)]

        return await self.runner.run(what, run)

    async def _statements(self, what: str, *statements: tuple[str, Sequence[Any]]) -> None:
        """Run statements in order; more than one run in one transaction."""

        async def run(conn: Connection) -> None:
            for sql, args in statements:
                await self.runner.execute(conn, sql, args)

        await self.runner.run(what, run, transaction=len(statements) > 1)

    async def missing_blobs_for_known_stream(self, sd_hash: str) -> list[str]:
        """Content blobs of the stream of `sd_hash` not stored yet, in stream order.

        An unknown stream gives an empty list (it looks complete), as in reflector.go.
        """
        return await self._column(
            "missing blobs for known stream",
            "SELECT b.hash FROM blob_ b INNER JOIN stream_blob sb ON b.id = sb.blob_id "
            "INNER JOIN stream s ON s.id = sb.stream_id "
            "INNER JOIN blob_ sdb ON sdb.id = s.sd_blob_id AND sdb.hash = %s "
            "WHERE b.is_stored = 0 ORDER BY sb.num",
            (sd_hash,),
        )

    async def mark_deleted(self, blob_hash: str) -> None:
        """Soft delete: keep the row, clear is_stored."""
        await self._statements(
            "mark blob deleted", ("UPDATE blob_ SET is_stored = 0 WHERE hash = %s", (blob_hash,))
        )

    async def purge(self, blob_hash: str) -> None:
        """Hard delete: the blob's row, its links, and the stream it is the sd blob of."""
        await self._statements(
            "delete blob",
            ("DELETE FROM stream WHERE sd_blob_id = (SELECT id FROM blob_ WHERE hash = %s)", (blob_hash,)),
            ("DELETE FROM blob_ WHERE hash = %s", (blob_hash,)),
        )

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
        return await self._column(
            "least recently accessed",
            "SELECT hash FROM blob_ WHERE is_stored = 1 ORDER BY last_accessed_at LIMIT %s",
            (int(n),),
        )

    async def count_stored(self) -> int:
        """How many blobs are stored."""
        [count] = await self._column("count stored blobs", "SELECT COUNT(id) FROM blob_ WHERE is_stored = 1")
        return int(count)

    async def block(self, blob_hash: str) -> None:
        """Record a blocked hash (idempotent)."""
        validate_hash(blob_hash)
        await self._statements(
            "block hash",
            ("INSERT INTO blocked (hash) VALUES (%s) ON DUPLICATE KEY UPDATE hash = hash", (blob_hash,)),
        )

    async def blocked_hashes(self) -> set[str]:
        """Every blocked hash."""
        return set(await self._column("list blocked hashes", "SELECT hash FROM blocked"))

    async def hash_range(self) -> tuple[str, str] | None:
        """Smallest and largest hash in `blob_` (None when empty)."""

        async def run(conn: Connection) -> tuple[str, str] | None:
            rows = await self.runner.query(conn, "SELECT MIN(hash), MAX(hash) FROM blob_")
            return None if not rows or rows[0][0] is None else (rows[0][0], rows[0][1])

        return await self.runner.run("hash range", run)

    async def stored_hashes_in_range(self, start: str, end: str) -> list[str]:
        """Stored hashes h with start <= h <= end."""
        return await self._column(
            "stored hashes in range",
            "SELECT hash FROM blob_ WHERE hash >= %s AND hash <= %s AND is_stored = 1 ORDER BY hash",
            (start, end),
        )

    async def stored_hashes_page(
        self, start: str, end: str, limit: int, *, after: str | None = None, sd_head: bool = False
    ) -> list[str]:
        """Up to `limit` stored hashes h with start <= h <= end (and h > after), in order: a keyset page,
        so a range is read in batches without holding it all. `sd_head`: only sd blobs and the first
        content blob of each stream."""
        low, op = (after, ">") if after is not None and after >= start else (start, ">=")
        heads = (
            " AND (EXISTS (SELECT 1 FROM stream s WHERE s.sd_blob_id = b.id)"
            " OR EXISTS (SELECT 1 FROM stream_blob sb WHERE sb.blob_id = b.id AND sb.num = 0))"
            if sd_head
            else ""
        )
        return await self._column(
            "stored hashes page",
            f"SELECT b.hash FROM blob_ b WHERE b.hash {op} %s AND b.hash <= %s AND b.is_stored = 1{heads} "
            "ORDER BY b.hash LIMIT %s",
            (low, end, int(limit)),
        )
