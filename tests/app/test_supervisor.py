"""Start in order, stop in reverse, name the flag when a port is taken."""

from __future__ import annotations

import asyncio
import socket

import pytest

from prism.app.supervisor import StartupError, Supervisor
from prism.http.server import HttpBlobServer
from tests.helpers import CountingStore, until


class Recorder:
    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail

    async def start(self) -> None:
        if self.fail:
            raise RuntimeError("boom")
        self.log.append(f"start {self.name}")

    async def stop(self, grace: float) -> None:
        self.log.append(f"stop {self.name}")


async def test_reverse_order_and_stop_on_request():
    log: list[str] = []
    sup = Supervisor(grace=1)
    for n in "abc":
        sup.add(n, Recorder(n, log))
    task = asyncio.create_task(sup.run())
    await until(lambda: len(sup.started) == 3)
    sup.request_stop()
    await task
    assert log == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]


async def test_failed_start_stops_the_started_ones():
    log: list[str] = []
    sup = Supervisor()
    sup.add("a", Recorder("a", log))
    sup.add("b", Recorder("b", log, fail=True), "--b-flag")
    with pytest.raises(StartupError, match="--b-flag: cannot start b: boom"):
        await sup.start()
    assert log == ["start a", "stop a"]


async def test_port_in_use_names_the_flag():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    sup = Supervisor()
    sup.add(
        "HTTP server",
        HttpBlobServer(CountingStore(), "127.0.0.1", taken.getsockname()[1]),
        "--http-peer-port",
    )
    try:
        with pytest.raises(StartupError, match=r"--http-peer-port: .*already in use"):
            await sup.start()
    finally:
        taken.close()
