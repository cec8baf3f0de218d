"""Fixtures shared by the reflector tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from prism.reflector.receiver import ReflectorReceiver
from prism.store.memory import MemoryStore


@pytest.fixture
async def memory_receiver() -> AsyncIterator[tuple[ReflectorReceiver, MemoryStore]]:
    """A started receiver on 127.0.0.1 over a MemoryStore: (receiver, store)."""
    store = MemoryStore()
    receiver = ReflectorReceiver(store, host="127.0.0.1", port=0, timeout=5.0)
    await receiver.start()
    yield receiver, store
    await receiver.stop(grace=1.0)
