"""The bounded receive-buffer pool."""

from __future__ import annotations

from prism.memory import MALLOC_TRIM, BufferPool, RecycledBuffers


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


def test_recycled_buffer_comes_back_only_once_nobody_holds_it() -> None:
    pool = RecycledBuffers(1000, keep=4)
    a = pool.take(1000, 0.0)
    b = pool.take(1000, 0.0)
    assert a is not b and pool.held == 2
    view = memoryview(a)[10:20]  # a view (or a C call's buffer export) holds it too
    del a
    c = pool.take(1000, 0.0)
    assert c is not b and pool.held == 3 and pool.reused == 0
    a_again = view.obj
    del view
    assert pool.take(1000, 0.0) is not a_again  # still held by the name above
    del a_again
    d = pool.take(1000, 0.0)
    assert pool.reused == 1 and pool.held == 4
    del b, c, d


def test_recycled_buffers_resize_in_place_and_small_or_surplus_bodies_get_new_ones() -> None:
    pool = RecycledBuffers(1000, keep=1)
    a = pool.take(600, 0.0)
    assert len(a) == 600 and pool.held == 1
    ident = id(a)
    del a
    a = pool.take(1000, 0.0)
    assert len(a) == 1000 and id(a) == ident and pool.reused == 1
    assert len(pool.take(1000, 0.0)) == 1000 and pool.held == 1  # over `keep`: not pooled
    assert len(pool.take(500, 0.0)) == 500 and pool.held == 1  # too small to shrink in place
    assert len(pool.take(1001, 0.0)) == 1001 and pool.held == 1


def test_recycled_buffers_are_dropped_after_being_idle() -> None:
    pool = RecycledBuffers(1000, keep=4, idle_after=10.0)
    pool.take(1000, 5.0)
    assert not pool.release_idle(14.0) and pool.held == 1
    assert pool.release_idle(15.0) and pool.held == 0
    assert not pool.release_idle(30.0)
