"""The announce and maintenance schedules, driven with a fake clock and no sockets."""

from __future__ import annotations

import itertools
import os
import random

import pytest

from prism.dht.config import DhtConfig
from prism.dht.routing import Contact, RoutingTable
from prism.dht.schedule import (
    AnnounceSchedule,
    Maintenance,
    MaintenanceSchedule,
    RateLimiter,
    StoreBackOff,
)


def test_rate_limiter_bursts_then_paces():
    rl = RateLimiter(10.0, now=0.0)
    assert sum(rl.try_take(0.0) for _ in range(15)) == 10  # a burst of `rate`
    assert rl.ready_at(0.0) == pytest.approx(0.1)
    assert not rl.try_take(0.05)
    assert rl.try_take(0.1)
    assert rl.ready_at(100.0) == 100.0
    assert sum(rl.try_take(100.0) for _ in range(15)) == 10  # refilled, but never above the burst
    with pytest.raises(ValueError):
        RateLimiter(0.0, now=0.0)


def test_new_hashes_are_due_at_once_and_rate_limited():
    s = AnnounceSchedule(rate=10.0, interval=600.0, now=0.0)
    assert s.due(0.0) is None and s.take_ready(0.0) == []
    keys = [os.urandom(48) for _ in range(15)]
    s.add(keys, now=0.0)
    assert len(s) == 15 and keys[0] in s
    assert s.due(0.0) == 0.0
    first = s.take_ready(0.0)
    assert first == keys[:10]  # in the order added, a burst of 10
    assert s.due(0.0) == pytest.approx(0.1)  # the rest wait for the rate
    t, taken = 0.0, list(first)
    while len(taken) < 15:
        t = s.due(t)
        taken += s.take_ready(t)
    assert taken == keys and t == pytest.approx(0.5)
    assert s.due(t) == pytest.approx(600.0)  # next: the first re-announcement


def test_every_hash_is_reannounced_each_interval():
    s = AnnounceSchedule(rate=100.0, interval=43200.0, now=0.0)
    keys = [os.urandom(48) for _ in range(3)]
    s.add(keys, now=0.0)
    times: dict[bytes, list[float]] = {k: [] for k in keys}
    t = 0.0
    while t <= 2 * 86400.0:
        for k in s.take_ready(t):
            times[k].append(t)
        t = s.due(t)
    for ts in times.values():
        assert ts[0] == 0.0 and len(ts) == 5  # at 0, 12 h, 24 h, 36 h and 48 h
        # stored peers expire after 24 h: every hash is renewed well before that
        assert max(b - a for a, b in itertools.pairwise(ts)) == pytest.approx(43200.0)


def test_remove_and_readd():
    s = AnnounceSchedule(rate=10.0, interval=60.0, now=0.0)
    a, b = os.urandom(48), os.urandom(48)
    s.add([a, b], now=0.0)
    s.remove([a])
    assert a not in s and s.take_ready(0.0) == [b]
    assert s.due(1.0) == 60.0
    s.add([b], now=5.0)  # added again: due at once
    assert s.due(5.0) == 5.0 and s.take_ready(5.0) == [b]
    s.remove([b])
    assert len(s) == 0 and s.due(100.0) is None and s.take_ready(100.0) == []


def test_take_ready_limit_and_capacity():
    s = AnnounceSchedule(rate=10.0, interval=100.0, now=0.0)
    keys = [os.urandom(48) for _ in range(5)]
    s.add(keys, now=0.0)
    assert s.take_ready(0.0, limit=2) == keys[:2]
    assert s.take_ready(0.0, limit=0) == []
    assert s.take_ready(0.0) == keys[2:]
    assert s.capacity == 1000.0


def test_maintenance_join_top_up_and_refresh():
    cfg = DhtConfig(k=8, join_retry=5.0, refresh_interval=720.0)
    ms = MaintenanceSchedule(cfg, can_join=True)
    assert ms.join_retry == 5.0
    assert ms.delay(0) == 5.0 and ms.action(0) is Maintenance.JOIN
    assert ms.delay(3) == 5.0 and ms.action(3) is Maintenance.TOP_UP
    assert ms.delay(8) == 720.0 and ms.action(8) is Maintenance.REFRESH
    assert ms.delay(3) == 5.0 and ms.action(20) is Maintenance.TOP_UP  # the round was planned as a top-up
    assert ms.delay(20) == 720.0 and ms.action(0) is Maintenance.JOIN  # the table emptied meanwhile
    lonely = MaintenanceSchedule(cfg, can_join=False)  # no seeds, nothing saved: nobody to join through
    assert lonely.delay(0) == 5.0 and lonely.action(0) is Maintenance.TOP_UP


def test_refresh_targets_are_in_stale_buckets_only():
    own = os.urandom(48)
    table = RoutingTable(own, 8, now=0.0)
    for _ in range(40):
        table.add(Contact(os.urandom(48), "10.0.0.1", random.randrange(1, 65535)), now=0.0)
    ms = MaintenanceSchedule(DhtConfig(refresh_age=3600.0), can_join=True, rng=random.Random(1))
    assert ms.refresh_targets(table, now=100.0) == []  # nothing stale yet
    targets = ms.refresh_targets(table, now=4000.0)
    assert len(targets) == len(table.buckets)
    for t in targets:
        assert table.buckets.index(table.bucket_of(t)) == targets.index(t)
    assert ms.refresh_targets(table, now=4001.0) == []  # marked refreshed
    assert len(ms.refresh_targets(table, now=4002.0, max_age=0.0)) == len(table.buckets)


def test_new_hashes_go_before_overdue_reannouncements():
    s = AnnounceSchedule(rate=1.0, interval=10.0, now=0.0)
    old = [os.urandom(48) for _ in range(3)]
    s.add(old, now=0.0)
    for t in (0.0, 1.0, 2.0):  # announce the old ones: 0, 1, 2 s
        assert len(s.take_ready(t)) == 1
    assert s.due(2.0) == pytest.approx(10.0)
    new = os.urandom(48)
    s.add([new], now=30.0)  # the old ones are overdue by now, but the new one goes first
    assert s.backlog(30.0) == 4
    assert s.take_ready(30.0) == [new]
    assert s.take_ready(31.0) == [old[0]]
    assert s.backlog(31.0) == 2


def test_restore_spreads_a_restart_over_the_time_the_rate_needs():
    s = AnnounceSchedule(rate=10.0, interval=43200.0, now=0.0, rng=random.Random(1))
    keys = [os.urandom(48) for _ in range(1000)]
    s.restore(keys, now=0.0)  # 1,000 hashes at 10/s: spread over 100 s
    new = os.urandom(48)
    s.add([new], now=0.0)
    assert s.take_ready(0.0)[0] == new
    per_second: list[int] = []
    t = 0.0
    while t < 120.0:
        per_second.append(len(s.take_ready(t)))
        t += 1.0
    assert sum(per_second) == 1000
    assert max(per_second[1:]) <= 10  # never above the rate after the first burst
    assert sum(per_second[:60]) <= 10 + 60 * 10
    assert sum(per_second[:50]) < 700  # spread: not all due at once, some wait for their time
    s.restore(keys[:5], now=200.0)  # already scheduled: they keep their time
    assert s.backlog(200.0) == 0


def test_retry_reschedules_a_failed_hash():
    s = AnnounceSchedule(rate=10.0, interval=100.0, now=0.0)
    k = os.urandom(48)
    s.add([k], now=0.0)
    assert s.take_ready(0.0) == [k]
    s.retry(k, 7.0)
    assert s.due(1.0) == 7.0 and s.take_ready(7.0) == [k]
    s.remove([k])
    s.retry(k, 8.0)  # removed meanwhile: stays removed
    assert k not in s


def test_store_backoff_pauses_after_failures_and_resumes_on_success():
    b = StoreBackOff(initial=5.0, maximum=20.0, threshold=3)
    b.on_result(0, 0.0)
    b.on_result(0, 0.0)
    assert b.ready_at(0.0) == 0.0  # two unlucky hashes are no pause
    b.on_result(0, 1.0)
    assert b.ready_at(1.0) == 6.0 and b.retry_at(1.0) == 6.0
    for _ in range(10):  # stragglers of the same burst do not lengthen the pause
        b.on_result(0, 2.0)
    assert b.ready_at(2.0) == 6.0
    b.on_result(0, 6.0)
    assert b.ready_at(6.0) == 16.0
    b.on_result(0, 16.0)
    b.on_result(0, 36.0)
    assert b.ready_at(36.0) == 56.0  # capped at maximum
    b.on_result(2, 40.0)
    assert b.ready_at(40.0) == 40.0 and b.failures == 0
    assert b.retry_at(40.0) == 45.0
