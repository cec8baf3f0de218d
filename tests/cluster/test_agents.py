"""Real serf agents on 127.0.0.1 started by prism: RPC client, membership, supervision."""

from __future__ import annotations

import asyncio
import os
import signal
from contextlib import AsyncExitStack

import pytest

from prism.cluster.agent import MISSING_SERF, AgentError, SerfAgent
from prism.cluster.client import SerfClient, SerfError
from prism.cluster.membership import Membership
from prism.cluster.slicing import Assignment, SlicePlan
from tests.cluster.ports import free_cluster_ports
from tests.helpers import eventually, running


async def test_three_agents_agree_and_a_leave_and_a_restart_are_seen() -> None:
    ports = free_cluster_ports(3)
    seen: dict[str, list[Assignment]] = {}
    async with AsyncExitStack() as stack:
        agents = [SerfAgent("127.0.0.1", p) for p in ports]
        members = []
        for i, agent in enumerate(agents):
            await stack.enter_async_context(running(agent))
            got: list[Assignment] = []
            seen[agent.name] = got
            plan = SlicePlan(agent.name, asyncio.get_running_loop().time(), debounce=0.2, settle=0.0)
            seeds = [f"127.0.0.1:{ports[0]}"] if i else []
            m = Membership(lambda a=agent: a.rpc, plan, got.append, seeds)  # type: ignore[misc]
            members.append(await stack.enter_async_context(running(m)))

        def totals(k: int) -> bool:
            return all(got and got[-1].total == k for got in seen.values())

        await eventually(lambda: totals(3), limit=10, what="three members everywhere")
        assert sorted(got[-1].n for got in seen.values()) == [1, 2, 3]
        # the RPC client: members with addresses and ports
        client = await SerfClient.open(*agents[0].rpc)
        listed = await client.members()
        assert sorted(m.port for m in listed) == sorted(ports) and {m.addr for m in listed} == {"127.0.0.1"}
        with pytest.raises(SerfError):
            await client.join(["127.0.0.1:1"])
        await client.close()

        # the child agent of the last node dies: it is restarted and rejoins
        pid = agents[2].pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await eventually(lambda: agents[2].restarts == 1, limit=10, what="agent restarted")
        await eventually(lambda: members[2].changes > 3 and totals(3), limit=15, what="rejoined")

        # a graceful stop of an agent (SIGINT: serf leaves) is seen by the others within seconds
        await members[1].stop(1.0)
        await agents[1].stop(3.0)
        del seen[agents[1].name]
        await eventually(lambda: totals(2), limit=10, what="leave seen")


async def test_agent_errors_are_one_sentence() -> None:
    with pytest.raises(AgentError) as e:
        await SerfAgent("127.0.0.1", free_cluster_ports(1)[0], binary="no-such-serf").start()
    assert str(e.value) == MISSING_SERF and "serf" in MISSING_SERF
    [port] = free_cluster_ports(1)
    async with running(SerfAgent("127.0.0.1", port)):
        with pytest.raises(AgentError, match=r"cannot use 127\.0\.0\.1"):
            await SerfAgent("127.0.0.1", port).start()


async def test_membership_through_an_agent_run_by_the_operator() -> None:
    """`--serf-rpc`: no agent of ours; our name is the agent's (asked with `stats`)."""
    [port] = free_cluster_ports(1)
    async with running(SerfAgent("127.0.0.1", port, name="operators")) as agent:
        got: list[Assignment] = []
        plan = SlicePlan("", asyncio.get_running_loop().time(), debounce=0.1, settle=0.0)
        async with running(Membership(lambda: agent.rpc, plan, got.append)):
            await eventually(lambda: bool(got), what="an assignment")
        assert plan.me == "operators" and got[-1].n == 1 and got[-1].members == ("operators",)
