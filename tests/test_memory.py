"""The bounded receive-buffer pool."""

from __future__ import annotations

from prism.memory import MALLOC_TRIM, BufferPool


def test_pool_respects_its_budget_and_reuses_buffers() -> None:
    pool = BufferPool(1024, budget=3 * 1024, keep=2, keep_idle=1)
    bufs = [pool.take() for _ in range(3)]
    assert all(b is not None for b in bufs)
    assert pool.take() is None  # the budget is out
    first = bufs[0]
    assert first is not None
    assert pool.give(first) is False
    assert pool.take() is first  # reused, not reallocated


def test_pool_shrinks_when_the_burst_is_over() -> None:
    pool = BufferPool(1024, budget=10 * 1024, keep=2, keep_idle=1)
    bufs = [pool.take() for _ in range(5)]
    dropped = [pool.give(b) for b in bufs]
    assert dropped == [False, False, True, True, True]  # above `keep`, then down to `keep_idle`
    assert pool.pooled == 1 and pool.in_use == 0


def test_a_lost_buffer_frees_its_budget() -> None:
    pool = BufferPool(1024, budget=1024)
    assert pool.take() is not None
    assert pool.give(None) is True  # lost to a store thread: memory to give back once it is done
    assert pool.take() is not None


def test_malloc_trim_is_available_on_glibc() -> None:
    assert MALLOC_TRIM is not None
    MALLOC_TRIM()
