"""The protected-content list (reflector.md §7.2): sd hashes only served with the edge token.

Fetched from a configurable URL (config key `protected_list_url`) and cached for two
minutes. Requests never wait on a refresh once a first answer exists: a stale list is used
while a new one is fetched in the background. A failed fetch means "not protected" (until
the next successful one). Only changes are logged: the first failure, and the first success
after failures, so a blobcache without network says it once, not every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import aiohttp

log = logging.getLogger("prism.app")

CACHE_SECONDS = 120.0
RETRY_SECONDS = 10.0


class ProtectedList:
    """`await is_protected(hash)`. An empty URL (or `none`) disables the list."""

    def __init__(
        self,
        url: str,
        ttl: float = CACHE_SECONDS,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = "" if url in ("", "none") else url
        self.clock = clock
        self.ttl = ttl
        self.timeout = timeout
        self.hashes: frozenset[str] = frozenset()
        self.fetched_at: float | None = None
        self.next_fetch = 0.0
        self.fetches = 0
        self.failures = 0
        self.failing = False
        """The last fetch failed (what the log said last)."""
        self._task: asyncio.Task[None] | None = None

    async def is_protected(self, blob_hash: str) -> bool:
        if not self.url:
            return False
        if self.clock() >= self.next_fetch:
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(self._refresh())
            if self.fetched_at is None and self.failures == 0:
                # Nothing known yet: wait for the first answer (bounded by the timeout).
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._task)
        return blob_hash in self.hashes

    async def wait_for_refresh(self) -> None:
        """Wait until a fetch in progress has finished (successfully or not)."""
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._task)

    async def _refresh(self) -> None:
        self.fetches += 1
        try:
            hashes = await self._fetch()
        except Exception as e:
            self.failures += 1
            self.next_fetch = self.clock() + RETRY_SECONDS
            if not self.failing:
                log.info(
                    "protected list %s: fetch failed (%s); serving every blob as not protected until it "
                    "answers (--protected-list-url '' turns the list off)",
                    self.url,
                    e or type(e).__name__,
                )
            self.failing = True
            return
        if self.failing:
            log.info("protected list %s: fetched again (%d hashes)", self.url, len(hashes))
        self.failing = False
        self.hashes = hashes
        self.fetched_at = self.clock()
        self.next_fetch = self.fetched_at + self.ttl
        log.debug("protected list: %d hashes", len(hashes))

    async def _fetch(self) -> frozenset[str]:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(self.url) as r:
            if r.status != 200:
                raise RuntimeError(f"status {r.status}")
            body = await r.json(content_type=None)
        if not isinstance(body, dict) or not body.get("success"):
            err = body.get("error") if isinstance(body, dict) else "not a JSON object"
            raise RuntimeError(f"API error: {err}")
        data = body.get("data") or []
        if not isinstance(data, list):
            raise RuntimeError("'data' is not a list")
        return frozenset(
            str(item["sd_hash"]) for item in data if isinstance(item, dict) and item.get("sd_hash")
        )

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
