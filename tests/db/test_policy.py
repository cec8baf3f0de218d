"""The runner's decisions and the `has` coalescer, with a fake clock and no database."""

from __future__ import annotations

import asyncio

import pymysql
import pytest

from prism.db.coalesce import HasCoalescer, TakeHashes
from prism.db.errors import DatabaseTimeout, DatabaseUnavailable
from prism.db.policy import AttemptPolicy, Breaker, LockRetry, error_text, unavailable_error

WHERE = "MySQL u@127.0.0.1:3306/reflector"


def test_breaker_fails_fast_while_down_and_lets_one_probe_per_interval() -> None:
    breaker = Breaker(retry_interval=1.0)
    assert breaker.available and breaker.admit(0.0) is None
    assert breaker.failed(DatabaseUnavailable("gone"), now=10.0) is True  # first failure: log it
    assert breaker.failed(DatabaseUnavailable("still gone"), now=10.1) is False  # not again
    assert not breaker.available
    error = breaker.admit(10.5)
    assert isinstance(error, DatabaseUnavailable) and str(error) == "still gone"
    assert breaker.admit(11.1) is None  # the probe
    assert isinstance(breaker.admit(11.2), DatabaseUnavailable)  # only one per interval
    assert breaker.admit(12.1) is None
    assert breaker.succeeded() is True  # back: log it
    assert breaker.succeeded() is False
    assert breaker.available and breaker.admit(12.2) is None


def test_breaker_failed_probe_waits_a_full_interval_again() -> None:
    breaker = Breaker(retry_interval=0.2)
    breaker.failed(DatabaseTimeout("did not answer"), now=0.0)
    assert breaker.admit(0.3) is None
    breaker.failed(DatabaseTimeout("did not answer"), now=2.3)  # the probe timed out
    assert isinstance(breaker.admit(2.4), DatabaseUnavailable)
    assert breaker.admit(2.5) is None


def test_lock_wait_timeouts_are_retried_three_times_without_pause() -> None:
    policy = AttemptPolicy(rand=lambda: 0.5)
    assert [policy.lock_retry(1205) for _ in range(4)] == [
        LockRetry(1, 3, 0.0),
        LockRetry(2, 3, 0.0),
        LockRetry(3, 3, 0.0),
        None,
    ]


def test_deadlocks_are_retried_five_times_after_a_growing_random_pause() -> None:
    policy = AttemptPolicy(rand=lambda: 0.5)
    retries = [policy.lock_retry(1213) for _ in range(6)]
    assert [r.number if r else None for r in retries] == [1, 2, 3, 4, 5, None]
    assert [r.pause if r else None for r in retries] == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05, None])


def test_lock_errors_share_one_retry_count_and_other_errors_are_not_retried() -> None:
    policy = AttemptPolicy(rand=lambda: 0.0)
    assert policy.lock_retry(1062) is None and policy.lock_retry(None) is None
    assert policy.lock_retry(1213) == LockRetry(1, 5, 0.0)
    assert policy.lock_retry(1213) == LockRetry(2, 5, 0.0)
    assert policy.lock_retry(1205) == LockRetry(3, 3, 0.0)
    assert policy.lock_retry(1205) is None


def test_a_dropped_pooled_connection_is_replaced_once() -> None:
    fresh = AttemptPolicy()
    assert not fresh.reconnect(timed_out=False)  # a new connection failed: the server is gone
    policy = AttemptPolicy()
    policy.connection_reused = True
    assert not policy.reconnect(timed_out=True)  # a frozen server: no second wait
    assert policy.reconnect(timed_out=False)
    assert not policy.reconnect(timed_out=False)


@pytest.mark.parametrize(
    ("exc", "kind", "text"),
    [
        (TimeoutError(), DatabaseTimeout, f"database {WHERE} did not answer within 2.5s"),
        (
            pymysql.err.OperationalError(1045, "Access denied for user 'u'"),
            DatabaseUnavailable,
            f"database {WHERE} refused the login: Access denied for user 'u' (MySQL error 1045)",
        ),
        (
            pymysql.err.OperationalError(1049, "Unknown database"),
            DatabaseUnavailable,
            "no database 'reflector'",
        ),
        (pymysql.err.OperationalError(2003, "Can't connect"), DatabaseUnavailable, "is unreachable: Can't"),
        (pymysql.err.InternalError(1927, "Connection was killed"), DatabaseUnavailable, "is unreachable"),
        (ConnectionResetError("reset by peer"), DatabaseUnavailable, "is unreachable: reset by peer"),
        (pymysql.err.ProgrammingError(1064, "syntax"), None, ""),
        (pymysql.err.IntegrityError(1062, "Duplicate entry"), None, ""),
    ],
)
def test_which_errors_mean_the_database_is_unavailable(
    exc: BaseException, kind: type[Exception] | None, text: str
) -> None:
    error = unavailable_error(exc, WHERE, "reflector", 2.5)
    if kind is None:
        assert error is None
    else:
        assert type(error) is kind and text in str(error)


def test_error_text() -> None:
    assert error_text(pymysql.err.OperationalError(1205, "Lock wait")) == "Lock wait (MySQL error 1205)"
    assert error_text(TimeoutError()) == "TimeoutError"


class FakeLookup:
    """Stands in for the query: records each batch, answers once `connected` is set."""

    def __init__(self, stored: set[str]) -> None:
        self.stored = stored
        self.batches: list[list[str]] = []
        self.connected = asyncio.Event()
        self.connected.set()
        self.sent = asyncio.Event()

    async def __call__(self, take: TakeHashes) -> set[str]:
        await self.connected.wait()  # waiting for a free pooled connection
        hashes = take()
        assert take() is hashes  # a retried attempt sends the same list
        self.batches.append(hashes)
        self.sent.set()
        return self.stored & set(hashes)


async def test_callers_waiting_for_a_connection_share_one_query() -> None:
    lookup = FakeLookup({"a", "c"})
    coalescer = HasCoalescer(lookup)
    assert await coalescer.has("a") and lookup.batches == [["a"]]  # a lone caller: its own query at once
    lookup.connected.clear()
    callers = [asyncio.ensure_future(coalescer.has(h)) for h in "dcba"]
    await asyncio.sleep(0)
    lookup.connected.set()
    assert await asyncio.gather(*callers) == [False, True, False, True]
    assert lookup.batches == [["a"], ["a", "b", "c", "d"]]


async def test_a_batch_closes_when_sent() -> None:
    lookup = FakeLookup({"b"})
    coalescer = HasCoalescer(lookup)
    first = asyncio.ensure_future(coalescer.has("a"))
    await lookup.sent.wait()  # the first batch has its connection and is sent
    second = asyncio.ensure_future(coalescer.has("b"))
    assert await asyncio.gather(first, second) == [False, True]
    assert lookup.batches == [["a"], ["b"]]


async def test_batch_limit_and_disabled_coalescing() -> None:
    lookup = FakeLookup({"a"})
    lookup.connected.clear()
    limited = HasCoalescer(lookup, limit=2)
    callers = [asyncio.ensure_future(limited.has(h)) for h in "abc"]
    await asyncio.sleep(0)
    lookup.connected.set()
    assert await asyncio.gather(*callers) == [True, False, False]
    assert lookup.batches == [["a", "b"], ["c"]]
    lookup.batches.clear()
    lookup.connected.clear()
    single = HasCoalescer(lookup, enabled=False)
    callers = [asyncio.ensure_future(single.has(h)) for h in "ab"]
    await asyncio.sleep(0)
    lookup.connected.set()
    assert await asyncio.gather(*callers) == [True, False]
    assert lookup.batches == [["a"], ["b"]]


async def test_admit_is_asked_only_before_a_new_batch() -> None:
    lookup = FakeLookup({"a"})
    lookup.connected.clear()
    refusals: list[str] = []

    def admit() -> None:
        if refusals:
            raise DatabaseUnavailable(refusals[0])

    coalescer = HasCoalescer(lookup, admit=admit)
    first = asyncio.ensure_future(coalescer.has("a"))
    await asyncio.sleep(0)
    refusals.append("down")
    joined = asyncio.ensure_future(coalescer.has("b"))  # joins the open batch: no admit
    await asyncio.sleep(0)
    lookup.connected.set()
    assert await asyncio.gather(first, joined) == [True, False]
    with pytest.raises(DatabaseUnavailable, match="down"):
        await coalescer.has("a")
    assert lookup.batches == [["a", "b"]]


async def test_a_cancelled_caller_does_not_cancel_the_shared_query() -> None:
    lookup = FakeLookup({"a"})
    lookup.connected.clear()
    coalescer = HasCoalescer(lookup)
    first = asyncio.ensure_future(coalescer.has("a"))
    second = asyncio.ensure_future(coalescer.has("a"))
    await asyncio.sleep(0)
    first.cancel()
    lookup.connected.set()
    assert await second is True
    with pytest.raises(asyncio.CancelledError):
        await first
