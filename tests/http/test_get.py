"""The GET routine HTTP/1.1 and HTTP/3 share, driven without sockets: outcomes and counters."""

from __future__ import annotations

import asyncio

from prism.http.get import BlobGetter, Failed, Found, GetOutcome, Missing, Refused
from prism.http.negcache import NegativeCache
from prism.http.queue import RequestQueue
from prism.stats import ServerStats
from prism.store.base import BlobRef
from tests.helpers import CountingStore, FailingStore
from tests.http.helpers import stored_blob

MISSING = "ef" * 48


def getter(store, *, protected=None, negative_cache=None, queue=None) -> BlobGetter:
    return BlobGetter(store, queue or RequestQueue(1), ServerStats("http"), protected, negative_cache, "http")


async def outcome_of(g: BlobGetter, blob_hash: str, **kw) -> GetOutcome:
    seen: list[GetOutcome] = []

    async def respond(outcome: GetOutcome) -> None:
        if isinstance(outcome, Found):
            assert outcome.ref.read()  # the ref is open while the responder runs
        seen.append(outcome)

    await g.get(blob_hash, respond, **kw)
    assert len(seen) == 1
    return seen[0]


async def test_found_then_missing_is_remembered():
    store = CountingStore()
    h, _ = await stored_blob(store, 100)
    g = getter(store, negative_cache=NegativeCache())
    found = await outcome_of(g, h)
    assert isinstance(found, Found) and found.ref.hash == h
    for _ in range(2):
        missing = await outcome_of(g, MISSING)
        assert isinstance(missing, Missing) and missing.trace.stacks[0].origin_name == "http"
    assert store.gets == 2  # the second miss came from the negative cache


async def test_protected_unless_told_otherwise():
    store = CountingStore()
    h, _ = await stored_blob(store, 100)

    async def protected(blob_hash: str) -> bool:
        return True

    g = getter(store, protected=protected)
    assert await outcome_of(g, h) is Refused.PROTECTED
    assert isinstance(await outcome_of(g, h, may_be_protected=False), Found)
    assert g.stats.errors == {"protected_blob": 1}


async def test_store_failure_is_failed_and_counted():
    g = getter(FailingStore())
    failed = await outcome_of(g, MISSING)
    assert isinstance(failed, Failed) and str(failed.error) == "disk on fire"
    assert g.stats.errors == {"other": 1}


class GatedStore(CountingStore):
    """`get` waits until `release` is set; `entered` tells that one is waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def get(self, blob_hash: str) -> BlobRef:
        self.entered.set()
        await self.release.wait()
        return await super().get(blob_hash)


async def test_full_queue_is_busy():
    store = GatedStore()
    h, _ = await stored_blob(store, 100)
    g = getter(store, queue=RequestQueue(1, max_waiting=0))
    first = asyncio.create_task(outcome_of(g, h))
    await store.entered.wait()
    assert await outcome_of(g, h) is Refused.BUSY
    store.release.set()
    assert isinstance(await first, Found)
