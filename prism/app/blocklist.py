"""The blocklist updater (reflector.md §7.1, claims.md §3): blocked outpoints → sd hashes → `Block`.

At start and every `interval` seconds: fetch the list of blocked `txid:nout` outpoints, find
each one's claim through the wallet servers and block the stream's sd hash in the DB-backed
store, so the receiver answers `send_sd_blob: false` for it. Unlike reflector.go a non-stream
claim is skipped (not blocked as ""), an unreachable hub only means the next is tried, and
when the list cannot be fetched the last list fetched is used again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prism.hub.client import HubClient
    from prism.store.base import Blocklister

log = logging.getLogger("prism.blocklist")

DEFAULT_LIST_URL = "https://api.lbry.com/file/list_blocked"
DEFAULT_HUBS = (
    "a-hub1.odysee.com:50001",
    "b-hub1.odysee.com:50001",
    "c-hub1.odysee.com:50001",
    "s-hub1.odysee.com:50001",
)
"""reflector.go Modern's wallet servers."""
DEFAULT_INTERVAL = 12 * 3600.0
LIST_TIMEOUT = 1.0


class BlocklistError(Exception):
    """The list could not be fetched or read."""


def parse_blocked_list(body: Any) -> list[str]:
    """The outpoints of a `list_blocked` answer: `{"success", "error", "data": {"outpoints": [...]}}`."""
    if not isinstance(body, dict):
        raise BlocklistError("the blocked list is not a JSON object")
    if not body.get("success"):
        raise BlocklistError(f"list_blocked API call: {body.get('error') or 'success is false'}")
    data = body.get("data")
    outpoints = data.get("outpoints") if isinstance(data, dict) else None
    if not isinstance(outpoints, list):
        raise BlocklistError("the blocked list has no data.outpoints list")
    return [str(o) for o in outpoints]


def parse_outpoint(outpoint: str) -> tuple[str, int]:
    """`txid:nout` → (txid, nout); ValueError says what is wrong."""
    parts = outpoint.split(":")
    if len(parts) != 2:
        raise ValueError("invalid outpoint format")
    txid, nout_text = parts
    if len(txid) != 64 or any(c not in "0123456789abcdefABCDEF" for c in txid):
        raise ValueError("invalid txid")
    if not nout_text.isdigit():
        raise ValueError("invalid nout")
    return txid.lower(), int(nout_text)


@dataclass(frozen=True, slots=True)
class BlocklistSnapshot:
    """Counters for metrics: runs by outcome and the outpoints of the last run by outcome."""

    runs: int
    failed_runs: int
    outpoints: int
    blocked: int
    skipped: int
    errors: int


@dataclass
class RunResult:
    outpoints: int = 0
    blocked: int = 0
    skipped: int = 0
    """Claims that are not streams."""
    errors: int = 0


class BlocklistUpdater:
    """A Supervisor component: runs the update at start and then every `interval` seconds."""

    def __init__(
        self,
        store: Blocklister,
        *,
        list_url: str = DEFAULT_LIST_URL,
        hubs: Sequence[str] = DEFAULT_HUBS,
        interval: float = DEFAULT_INTERVAL,
        list_timeout: float = LIST_TIMEOUT,
        shuffle: Callable[[list[str]], None] = random.shuffle,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self.list_url = list_url
        self.hubs = list(hubs)
        self.interval = interval
        self.list_timeout = list_timeout
        self.shuffle = shuffle
        self.sleep = sleep
        self.last_list: list[str] | None = None
        self.last = RunResult()
        self.runs = 0
        self.failed_runs = 0
        self.run_done = asyncio.Event()
        """Set after every run (tests wait on it)."""
        self._task: asyncio.Task[None] | None = None

    def snapshot(self) -> BlocklistSnapshot:
        r = self.last
        return BlocklistSnapshot(self.runs, self.failed_runs, r.outpoints, r.blocked, r.skipped, r.errors)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self, grace: float = 0.0) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as e:  # a run must never end the loop
                log.exception("blocklist update failed: %s", e)
            self.run_done.set()
            await self.sleep(self.interval)

    async def run_once(self) -> RunResult:
        """One update; the counts of what it did (also kept for `snapshot`)."""
        self.runs += 1
        outpoints = await self._outpoints()
        if outpoints is None:
            self.failed_runs += 1
            return self.last
        # Here, not at the top: `prism.cli` imports this module for its defaults, and the hub
        # client (with the claim schema) would add about 0.1 CPU s to every command's start.
        from prism.hub.protocol import HubError

        result = RunResult(outpoints=len(outpoints))
        try:
            await self._block_all(outpoints, result)
        except HubError as e:
            self.failed_runs += 1
            log.error("blocklist: %s", e)
        self.last = result
        log.info(
            "blocklist: %d outpoints, %d sd hashes blocked, %d non-stream claims skipped, %d errors",
            result.outpoints,
            result.blocked,
            result.skipped,
            result.errors,
        )
        return result

    async def _outpoints(self) -> list[str] | None:
        import aiohttp  # here, not at the top: `prism --help` should not load it

        try:
            self.last_list = await self._fetch()
        except (BlocklistError, aiohttp.ClientError, TimeoutError, ValueError) as e:
            if self.last_list is None:
                log.error("blocklist: fetching %s failed (%s); nothing to apply yet", self.list_url, e)
                return None
            log.warning("blocklist: fetching %s failed (%s); using the last list again", self.list_url, e)
        return self.last_list

    async def _fetch(self) -> list[str]:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.list_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(self.list_url) as r:
            if r.status != 200:
                raise BlocklistError(f"HTTP status {r.status}")
            return parse_blocked_list(await r.json(content_type=None))

    async def _block_all(self, outpoints: list[str], result: RunResult) -> None:
        from prism.hub.client import HubClient

        client = HubClient(self.hubs, shuffle=self.shuffle)
        try:
            for outpoint in outpoints:
                try:
                    txid, nout = parse_outpoint(outpoint)
                except ValueError as e:
                    log.warning("blocklist: %s: %s", outpoint, e)
                    result.errors += 1
                    continue
                await self._block_one(client, outpoint, txid, nout, result)
        finally:
            await client.close()

    async def _block_one(
        self, client: HubClient, outpoint: str, txid: str, nout: int, result: RunResult
    ) -> None:
        from prism.hub.protocol import HubError

        if not client.address:
            await client.connect()  # HubError when no hub answers: the run ends
        try:
            claim = await client.claim_in_tx(txid, nout)
        except HubError as e:
            log.warning("blocklist: %s: %s", outpoint, e)
            result.errors += 1
            if not client.connected:
                client.address = ""  # lost the hub: the next outpoint connects again
            return
        if not claim.sd_hash:
            log.info(
                "blocklist: %s is a %s claim, not a stream with an sd hash: skipped", outpoint, claim.kind
            )
            result.skipped += 1
            return
        await self.store.block(claim.sd_hash)
        result.blocked += 1
