"""The asyncio shell of `SlicePlan`: follows a serf agent's member events and reports assignments."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from prism.cluster.client import SerfClient, SerfError
from prism.cluster.codec import Member
from prism.cluster.slicing import Assignment, SlicePlan

log = logging.getLogger("prism.cluster")

RECONNECT_DELAY = 1.0


class Membership:
    """A Supervisor component: connects to the agent at `rpc`, joins `seeds` (host:port, may be empty),
    then calls `on_assignment` with each new assignment of `plan` until stopped. A lost agent connection
    is retried every second; on reconnecting, the members known before are joined again (a restarted
    agent starts alone)."""

    def __init__(
        self,
        rpc: Callable[[], tuple[str, int]],
        plan: SlicePlan,
        on_assignment: Callable[[Assignment], None],
        seeds: list[str] | None = None,
    ) -> None:
        self.rpc = rpc
        self.plan = plan
        self.on_assignment = on_assignment
        self.seeds = list(seeds or [])
        self.members: list[Member] = []
        self.changes = 0
        self._client: SerfClient | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def alive(self) -> list[Member]:
        return [m for m in self.members if m.status == "alive"]

    async def start(self) -> None:
        client = await SerfClient.open(*self.rpc())
        try:
            if not self.plan.me:  # an agent run by the operator: its name is ours
                self.plan.me = await client.agent_name()
            if self.seeds:
                try:
                    await client.join(self.seeds)
                except SerfError as e:
                    raise SerfError(f"cannot join the cluster at {', '.join(self.seeds)}: {e}") from None
            await self._refresh(client)
        except BaseException:
            await client.close()
            raise
        self._client = client
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, grace: float) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.close()

    async def _refresh(self, client: SerfClient) -> None:
        self.members = await client.members()
        self.changes += 1
        self.plan.membership(asyncio.get_running_loop().time(), [m.name for m in self.alive])
        self._wake.set()

    async def _follow(self, client: SerfClient) -> None:
        """Refresh the member list on each member event until the connection closes."""
        await self._refresh(client)
        async for _ in client.stream():
            await self._refresh(client)

    async def _run(self) -> None:
        timer = asyncio.get_running_loop().create_task(self._timer())
        try:
            while True:
                client = self._client
                if client is not None:
                    try:
                        await self._follow(client)
                    except SerfError as e:
                        log.warning("%s", e)
                    await client.close()
                    self._client = None
                await asyncio.sleep(RECONNECT_DELAY)
                self._client = await self._reconnect()
        finally:
            timer.cancel()

    async def _reconnect(self) -> SerfClient | None:
        try:
            client = await SerfClient.open(*self.rpc())
        except SerfError:
            return None
        known = [f"{m.addr}:{m.port}" for m in self.alive if m.name != self.plan.me] or self.seeds
        if known:
            with contextlib.suppress(SerfError):
                await client.join(known)
        log.info("reconnected to the serf agent at %s", client.where)
        return client

    async def _timer(self) -> None:
        """Apply the plan's assignment when due."""
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            due = self.plan.due()
            if due is not None and due <= loop.time():
                assignment = self.plan.take(loop.time())
                if assignment is not None:
                    self.on_assignment(assignment)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(due):
                    await self._wake.wait()
