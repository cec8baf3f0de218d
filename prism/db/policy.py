"""When to fail fast, probe, retry or give up: sans-IO decisions of the query runner.

Nothing here touches a socket or a clock: callers pass `now` and the outcome of each attempt,
so tests drive every rule with a fake clock and no database.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import pymysql

from prism.db.errors import DatabaseTimeout, DatabaseUnavailable

LOCK_WAIT_TIMEOUT = 1205
DEADLOCK = 1213
LOCK_RETRIES = 3
"""Extra attempts after a lock-wait timeout (1205), as reflector.go."""
DEADLOCK_RETRIES = 5
"""Extra attempts after a deadlock (1213): concurrent uploads of streams sharing blobs can meet."""
DEADLOCK_PAUSE = 0.02
"""Upper bound of the random pause before deadlock retry n, times n."""

# Errors that say "the server is not there for us", not "this query is wrong".
_NO_DATABASE = 1049
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


def error_code(exc: BaseException) -> int | None:
    """The MySQL error number of `exc`, if it has one."""
    if isinstance(exc, pymysql.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None


def error_text(exc: BaseException) -> str:
    """`message (MySQL error N)` for server errors, else the exception's text."""
    if isinstance(exc, pymysql.MySQLError) and len(exc.args) >= 2:
        return f"{exc.args[1]} (MySQL error {exc.args[0]})"
    return str(exc) or type(exc).__name__


def unavailable_error(
    exc: BaseException, where: str, database: str, query_timeout: float
) -> DatabaseUnavailable | None:
    """The DatabaseUnavailable that `exc` means, or None if it is an ordinary query error."""
    code = error_code(exc)
    if isinstance(exc, TimeoutError):
        return DatabaseTimeout(f"database {where} did not answer within {query_timeout:g}s")
    if code == _NO_DATABASE:
        return DatabaseUnavailable(
            f"database {where}: the server has no database {database!r} "
            "(create it and load schema.sql, e.g. with `make db`)"
        )
    if code in _LOGIN_ERRORS:
        return DatabaseUnavailable(f"database {where} refused the login: {error_text(exc)}")
    if (
        code in _CONNECTION_ERRORS
        or isinstance(exc, pymysql.err.InterfaceError | ConnectionError | OSError)
        or (isinstance(exc, pymysql.err.OperationalError) and code is not None and code >= 2000)
    ):
        return DatabaseUnavailable(f"database {where} is unreachable: {error_text(exc)}")
    return None


class Breaker:
    """Fail fast while the database is down, letting one call per `retry_interval` probe it."""

    def __init__(self, retry_interval: float) -> None:
        self.retry_interval = retry_interval
        self.down: DatabaseUnavailable | None = None
        """Why the last attempt to reach the server failed; None while it is up."""
        self._next_probe = 0.0

    @property
    def available(self) -> bool:
        return self.down is None

    def admit(self, now: float) -> DatabaseUnavailable | None:
        """None if a call may go to the server (while down: this call is the probe), else its error."""
        if self.down is None:
            return None
        if now < self._next_probe:
            return DatabaseUnavailable(str(self.down))
        self._next_probe = now + self.retry_interval
        return None

    def failed(self, error: DatabaseUnavailable, now: float) -> bool:
        """The server could not be reached. True if it was up until now (worth one log line)."""
        was_up = self.down is None
        self.down = error
        self._next_probe = now + self.retry_interval
        return was_up

    def succeeded(self) -> bool:
        """A call got through. True if the database was down until now."""
        was_down = self.down is not None
        self.down = None
        return was_down


@dataclass(frozen=True, slots=True)
class LockRetry:
    """Try again after `pause` seconds: retry `number` of `limit`."""

    number: int
    limit: int
    pause: float


class AttemptPolicy:
    """Which failed attempts of one call are made again.

    Lock-wait timeouts and deadlocks share one retry count (limit by the latest error, as
    reflector.go); a deadlock retry waits a random pause so both sides do not meet again. A
    failure on a reused pooled connection (the server dropped it) gets one fresh connection.
    """

    def __init__(self, rand: Callable[[], float] = random.random) -> None:
        self._rand = rand
        self.lock_retries = 0
        self.reconnected = False
        self.connection_reused = False
        """Set by the runner for each attempt: did it run on a connection used before?"""

    def lock_retry(self, code: int | None) -> LockRetry | None:
        """The retry after MySQL error `code`, or None if it is no lock error or retries are used up."""
        if code not in (LOCK_WAIT_TIMEOUT, DEADLOCK):
            return None
        limit = LOCK_RETRIES if code == LOCK_WAIT_TIMEOUT else DEADLOCK_RETRIES
        if self.lock_retries >= limit:
            return None
        self.lock_retries += 1
        pause = self._rand() * DEADLOCK_PAUSE * self.lock_retries if code == DEADLOCK else 0.0
        return LockRetry(self.lock_retries, limit, pause)

    def reconnect(self, timed_out: bool) -> bool:
        """After the server seems gone: True to try once more on a fresh connection."""
        if self.connection_reused and not self.reconnected and not timed_out:
            self.reconnected = True
            return True
        return False
