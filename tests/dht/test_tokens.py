"""Tokens both ways, with a fake clock: issued/checked (TokenManager), received (TokenCache), store retry."""

from __future__ import annotations

import os

from prism.dht import messages as m
from prism.dht.tokens import (
    TOKEN_LENGTH,
    StoreAttempts,
    TokenCache,
    TokenManager,
    is_invalid_token_error,
)

NODE = os.urandom(48)
OTHER = os.urandom(48)
KEY = os.urandom(48)


def counting_random():
    n = 0

    def rnd(size: int) -> bytes:
        nonlocal n
        n += 1
        return n.to_bytes(size, "big")

    return rnd


def test_issued_token_is_bound_to_requester_and_valid_for_one_more_period():
    tm = TokenManager(0.0, rotate_every=300.0, random_bytes=counting_random())
    token = tm.issue(NODE, "10.0.0.1", 4444, 1.0)
    assert len(token) == TOKEN_LENGTH
    assert tm.verify(token, NODE, "10.0.0.1", 4444, 2.0)
    assert not tm.verify(token, OTHER, "10.0.0.1", 4444, 2.0)
    assert not tm.verify(token, NODE, "10.0.0.2", 4444, 2.0)
    assert not tm.verify(token, NODE, "10.0.0.1", 4445, 2.0)
    assert not tm.verify(token[:32], NODE, "10.0.0.1", 4444, 2.0)
    assert tm.verify(token, NODE, "10.0.0.1", 4444, 350.0)  # previous secret still accepted
    assert not tm.verify(token, NODE, "10.0.0.1", 4444, 650.0)  # two rotations later: refused


def test_idle_for_several_periods_refuses_old_tokens():
    tm = TokenManager(0.0, rotate_every=300.0, random_bytes=counting_random())
    token = tm.issue(NODE, "10.0.0.1", 4444, 0.0)
    assert not tm.verify(token, NODE, "10.0.0.1", 4444, 5000.0)
    fresh = tm.issue(NODE, "10.0.0.1", 4444, 5000.0)
    assert tm.verify(fresh, NODE, "10.0.0.1", 4444, 5299.0)


def test_token_cache_expiry_and_bound():
    cache = TokenCache(ttl=300.0, size=3)
    cache.put(NODE, b"t" * 48, 1, now=0.0)
    got = cache.get(NODE, 300.0)
    assert got is not None and got.token == b"t" * 48 and not got.legacy
    assert cache.get(NODE, 300.5) is None and cache.latest(NODE) is got  # expired, still remembered
    cache.put(OTHER, b"g" * 32, None, now=0.0)
    assert cache.get(OTHER, 1.0).legacy
    cache.drop(OTHER)
    assert cache.get(OTHER, 1.0) is None and len(cache) == 1
    # full: expired entries go first; if all are fresh, the cache starts over
    ids = [os.urandom(48) for _ in range(3)]
    cache.put(ids[0], b"a", 1, now=400.0)
    cache.put(ids[1], b"b", 1, now=400.0)
    cache.put(ids[2], b"c", 1, now=400.0)  # NODE (expired) is dropped to make room
    assert cache.latest(NODE) is None and len(cache) == 3
    cache.put(NODE, b"d", 1, now=401.0)  # all fresh: cleared
    assert len(cache) == 1 and cache.get(NODE, 401.0).token == b"d"


def test_store_args_follow_the_layout_the_node_reads():
    cache = TokenCache(ttl=300.0)
    cache.put(NODE, b"t" * 48, 1, 0.0)
    cache.put(OTHER, b"g" * 32, None, 0.0)
    flat = cache.get(NODE, 0.0).store_args(KEY, 3333, os.urandom(48))
    assert flat[:3] == [KEY, b"t" * 48, 3333]
    legacy = cache.get(OTHER, 0.0).store_args(KEY, 3333, NODE)
    assert isinstance(legacy[1], dict) and legacy[1][b"token"] == b"g" * 32
    assert m.parse_store_args(legacy).legacy and not m.parse_store_args(flat).legacy


def test_invalid_token_errors_of_both_implementations():
    assert is_invalid_token_error(m.VALUE_ERROR, m.INVALID_TOKEN)
    assert is_invalid_token_error(b"invalid-token", b"")
    assert not is_invalid_token_error(m.VALUE_ERROR, b"peer store is full")


def test_store_attempts_fetch_when_missing_and_retry_once_after_invalid_token():
    cache = TokenCache(ttl=300.0)
    attempts = StoreAttempts(cache, NODE)
    assert attempts.next_try()
    assert attempts.cached_token(0.0) is None  # none yet: ask for one (findValue)
    cache.put(NODE, b"old", 1, 0.0)
    assert attempts.fetched_token().token == b"old"
    assert attempts.should_retry(m.VALUE_ERROR, m.INVALID_TOKEN)  # refused: dropped, one more try
    assert cache.latest(NODE) is None
    assert attempts.next_try()
    cache.put(NODE, b"cached-again", 1, 0.0)
    assert attempts.cached_token(0.0) is None  # a retry always fetches a fresh token
    assert not attempts.should_retry(m.VALUE_ERROR, m.INVALID_TOKEN)  # no tries left
    assert not attempts.next_try()


def test_store_attempts_use_a_fresh_cached_token_and_give_up_on_other_errors():
    cache = TokenCache(ttl=300.0)
    cache.put(NODE, b"tok", 1, 0.0)
    attempts = StoreAttempts(cache, NODE)
    assert attempts.next_try() and attempts.cached_token(10.0).token == b"tok"
    assert attempts.cached_token(301.0) is None  # expired: fetch again
    assert not attempts.should_retry(m.VALUE_ERROR, b"peer store is full")
    assert cache.latest(NODE) is not None
