"""Start a list of components, wait for SIGINT/SIGTERM, stop them in reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("prism.app")


class Component(Protocol):
    async def start(self) -> None: ...

    async def stop(self, grace: float) -> None: ...


class StartupError(Exception):
    """A component could not start; the message names the flag to change."""


@dataclass
class Entry:
    name: str
    component: Component
    flag: str = ""
    """The command-line flag this component's address comes from, for error messages."""


class Call:
    """A component made of two coroutines (e.g. closing a store chain at the end)."""

    def __init__(
        self,
        start: Callable[[], Awaitable[None]] | None = None,
        stop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._start = start
        self._stop = stop

    async def start(self) -> None:
        if self._start is not None:
            await self._start()

    async def stop(self, grace: float) -> None:
        if self._stop is not None:
            await self._stop()


class Supervisor:
    def __init__(self, grace: float = 5.0) -> None:
        self.grace = grace
        self.entries: list[Entry] = []
        self.started: list[Entry] = []
        self.stop_requested = asyncio.Event()

    def add(self, name: str, component: Component, flag: str = "") -> None:
        self.entries.append(Entry(name, component, flag))

    async def start(self) -> None:
        """Start every component in order; on a failure stop those started and raise StartupError."""
        for entry in self.entries:
            try:
                await entry.component.start()
            except Exception as e:
                await self.stop()
                raise StartupError(_explain(entry, e)) from e
            self.started.append(entry)

    async def stop(self) -> None:
        """Stop started components in reverse order, each within the grace period."""
        while self.started:
            entry = self.started.pop()
            try:
                await asyncio.wait_for(entry.component.stop(self.grace), self.grace + 5)
            except Exception as e:
                log.warning("stopping %s: %s", entry.name, e or type(e).__name__)

    def request_stop(self) -> None:
        self.stop_requested.set()

    async def run(self) -> None:
        """start(), wait for SIGINT/SIGTERM (or `request_stop`), stop()."""
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
        try:
            await self.start()
            await self.stop_requested.wait()
        finally:
            await self.stop()
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("%s received: shutting down (grace %.1fs)", sig.name, self.grace)
        self.stop_requested.set()


def _explain(entry: Entry, e: Exception) -> str:
    where = f"{entry.flag}: " if entry.flag else ""
    if isinstance(e, OSError) and e.errno == errno.EADDRINUSE:
        return f"{where}cannot start {entry.name}: the port is already in use"
    if isinstance(e, OSError) and e.errno == errno.EACCES:
        return f"{where}cannot start {entry.name}: permission denied for that port"
    return f"{where}cannot start {entry.name}: {e}"
