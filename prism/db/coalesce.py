"""Concurrent "is this blob stored?" calls sharing one `IN (...)` query.

A call made while an earlier one is still waiting for a free connection joins its pending list;
the list is closed and sent once that call has a connection. So an answer is never older than
the call, a lone caller gets its own query at once, and under load one round trip answers many.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

HAS_BATCH = 10000
"""Hashes per `IN (...)` list, as reflector.go."""

TakeHashes = Callable[[], list[str]]
"""Closes a batch (no one joins it any more) and returns its hashes, sorted; same list if called again."""
Lookup = Callable[[TakeHashes], Awaitable[set[str]]]
"""Sends one query: calls `take` once it has a connection, returns the stored subset."""


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


class _Batch:
    """Calls waiting for one shared query."""

    __slots__ = ("hashes", "sent", "task")

    task: asyncio.Future[set[str]]

    def __init__(self) -> None:
        self.hashes: set[str] = set()
        self.sent: list[str] | None = None


class HasCoalescer:
    """Answers `has(hash)` through `lookup`, one query per batch of concurrent callers.

    `admit` runs before a new batch starts (the runner's fail-fast check); `enabled=False` sends
    one query per call.
    """

    def __init__(
        self,
        lookup: Lookup,
        *,
        admit: Callable[[], None] = lambda: None,
        enabled: bool = True,
        limit: int = HAS_BATCH,
    ) -> None:
        self._lookup = lookup
        self._admit = admit
        self.enabled = enabled
        self.limit = limit
        self._open: _Batch | None = None

    async def has(self, blob_hash: str) -> bool:
        batch = self._open
        if batch is None or len(batch.hashes) >= self.limit or not self.enabled:
            self._admit()  # don't even start a batch while the database is known down
            batch = self._open = _Batch()
            batch.task = asyncio.ensure_future(self._send(batch))
            batch.task.add_done_callback(_retrieve)  # no "exception never retrieved" if all callers left
        batch.hashes.add(blob_hash)
        # shield: a cancelled caller must not cancel the query the other callers wait for.
        return blob_hash in await asyncio.shield(batch.task)

    async def _send(self, batch: _Batch) -> set[str]:
        def take() -> list[str]:
            if batch.sent is None:
                if self._open is batch:
                    self._open = None
                batch.sent = sorted(batch.hashes)
            return batch.sent

        try:
            return await self._lookup(take)
        finally:
            if self._open is batch:
                self._open = None
