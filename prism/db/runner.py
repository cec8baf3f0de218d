"""Runs statements on an aiomysql pool: the asyncio shell around `prism.db.policy`.

Every call is bounded by `query_timeout` (waiting for a connection included). Lock-wait timeouts
and deadlocks are retried; a pooled connection the server dropped is replaced once. When the
server is unreachable or refuses the login, the first failure is logged once and later calls
fail at once with `DatabaseUnavailable`; one call per `retry_interval` probes the server, so
service resumes by itself as soon as the database is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypedDict, TypeVar

import aiomysql
import pymysql

from prism.config import MysqlParams
from prism.db.errors import DatabaseError
from prism.db.policy import AttemptPolicy, Breaker, error_code, error_text, unavailable_error

log = logging.getLogger("prism.db")

T = TypeVar("T")
Row = tuple[Any, ...]


class Cursor(Protocol):
    """The part of an aiomysql cursor prism uses."""

    lastrowid: int | None

    async def execute(self, query: str, args: Sequence[Any] = ()) -> int: ...

    async def fetchall(self) -> Sequence[Row]: ...


class Connection(Protocol):
    """The part of an aiomysql connection prism uses."""

    def cursor(self) -> AbstractAsyncContextManager[Cursor]: ...

    async def begin(self) -> None: ...

    async def commit(self) -> None: ...

    def close(self) -> None: ...


class Pool(Protocol):
    """The part of an aiomysql pool prism uses."""

    def acquire(self) -> Awaitable[Connection]: ...

    def release(self, conn: Connection) -> object: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...

    def terminate(self) -> None: ...


class RunnerOptions(TypedDict, total=False):
    """The keyword options of `QueryRunner`, for wrappers that pass them through."""

    query_timeout: float
    connect_timeout: float
    lock_wait_timeout: int
    max_connections: int
    retry_interval: float
    log_queries: bool
    clock: Callable[[], float]


class QueryRunner:
    """A lazily opened pool plus the timeout, retry and fail-fast rules for each call."""

    def __init__(
        self,
        params: MysqlParams,
        *,
        query_timeout: float = 5.0,
        connect_timeout: float = 3.0,
        lock_wait_timeout: int = 2,
        max_connections: int = 16,
        retry_interval: float = 1.0,
        log_queries: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.params = params
        self.query_timeout = query_timeout
        self.connect_timeout = connect_timeout
        self.lock_wait_timeout = max(1, int(lock_wait_timeout))
        self.max_connections = max_connections
        self.log_queries = log_queries
        self.breaker = Breaker(retry_interval)
        self._clock = clock
        self._pool: Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._closed = False
        # Connections whose session settings are made; a dropped one is garbage, so weak.
        self._ready: weakref.WeakSet[Connection] = weakref.WeakSet()

    @property
    def where(self) -> str:
        """Where the database is, for messages (never the password)."""
        p = self.params
        place = f"unix:{p.unix_socket}" if p.unix_socket else f"{p.host}:{p.port}"
        return f"MySQL {p.user}@{place}/{p.database}"

    @property
    def available(self) -> bool:
        """False while the last attempt to reach the server failed."""
        return self.breaker.available

    async def pool(self) -> Pool:
        """The pool, created on first use (creating it never connects, so it cannot fail or hang)."""
        if self._pool is None:
            async with self._pool_lock:
                if self._closed:
                    raise DatabaseError(f"database {self.where} is closed")
                if self._pool is None:
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

    def admit(self) -> None:
        """Raise DatabaseUnavailable at once while the database is down, except for the probe."""
        error = self.breaker.admit(self._clock())
        if error is not None:
            raise error

    async def run(
        self,
        what: str,
        fn: Callable[[Connection], Awaitable[T]],
        *,
        transaction: bool = False,
        fail_fast: bool = True,
    ) -> T:
        """Run `fn` on a pooled connection (in one transaction if asked) under the rules above."""
        if fail_fast:
            self.admit()
        policy = AttemptPolicy()
        while True:
            try:
                result = await self._attempt(fn, transaction, policy)
            except (pymysql.MySQLError, OSError, TimeoutError) as e:
                await self._after_failure(what, e, policy)
                continue
            if self.breaker.succeeded():
                log.warning("database is back: %s", self.where)
            return result

    async def _after_failure(self, what: str, exc: BaseException, policy: AttemptPolicy) -> None:
        """Return to try again; raise the error the caller gets otherwise."""
        retry = policy.lock_retry(error_code(exc))
        if retry is not None:
            log.warning("%s: %s; retry %d of %d", what, error_text(exc), retry.number, retry.limit)
            if retry.pause:
                await asyncio.sleep(retry.pause)
            return
        unavailable = unavailable_error(exc, self.where, self.params.database, self.query_timeout)
        if unavailable is None:
            raise DatabaseError(f"{what} failed: {error_text(exc)}") from exc
        if policy.reconnect(timed_out=isinstance(exc, TimeoutError)):
            return
        if self.breaker.failed(unavailable, self._clock()):
            log.error(
                "%s; requests fail until it is back (probing every %.1fs)",
                unavailable,
                self.breaker.retry_interval,
            )
        raise type(unavailable)(f"{what}: {unavailable}") from exc

    async def _attempt(
        self, fn: Callable[[Connection], Awaitable[T]], transaction: bool, policy: AttemptPolicy
    ) -> T:
        async with asyncio.timeout(self.query_timeout):
            pool = await self.pool()
            conn = await pool.acquire()
            ok = False
            try:
                policy.connection_reused = conn in self._ready
                if not policy.connection_reused:
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

    async def _setup(self, conn: Connection) -> None:
        async with conn.cursor() as cur:
            await cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            await cur.execute("SET SESSION innodb_lock_wait_timeout = %s", (self.lock_wait_timeout,))
        self._ready.add(conn)

    async def query(self, conn: Connection, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        """Rows of one parameterised statement."""
        if self.log_queries:
            log.debug("query: %s %r", sql, list(args)[:8])
        async with conn.cursor() as cur:
            await cur.execute(sql, tuple(args))
            return list(await cur.fetchall())

    async def execute(self, conn: Connection, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one parameterised statement; returns the last insert id (0 if none)."""
        if self.log_queries:
            log.debug("exec: %s %r", sql, list(args)[:8])
        async with conn.cursor() as cur:
            await cur.execute(sql, tuple(args))
            return int(cur.lastrowid or 0)
