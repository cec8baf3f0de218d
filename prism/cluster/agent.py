"""A serf agent run as prism's child process: started, restarted if it dies, stopped on exit."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import secrets
import shutil
import signal
import socket
import string
from collections.abc import Callable

from prism.cluster.client import SerfClient, SerfError

log = logging.getLogger("prism.cluster")

SERF_BINARY = "serf"
MISSING_SERF = (
    "the serf agent is not installed: install the Debian package serf (apt-get install serf), "
    "or attach to a running agent with --serf-rpc HOST:PORT"
)
READY_TIMEOUT = 10.0
RESTART_DELAY = 1.0
NAME_ALPHABET = string.ascii_letters


class AgentError(Exception):
    """The agent cannot run; the message is one sentence for the operator."""


def random_node_name(length: int = 12) -> str:
    """A node name as reflector.go's: random letters."""
    return "".join(secrets.choice(NAME_ALPHABET) for _ in range(length))


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 now (for the agent's private RPC listener)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_port_free(host: str, port: int) -> None:
    """Raise AgentError when host:port is taken for TCP or UDP (serf's gossip uses both)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(family, kind) as s:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as e:
                raise AgentError(
                    f"--cluster-port: cannot use {host}:{port} for the cluster: {e.strerror}"
                ) from None


def bracketed(host: str) -> str:
    """An IPv6 address in brackets, as serf's -bind wants it."""
    return f"[{host}]" if ":" in host else host


def _die_with_parent() -> None:
    """In the child: get SIGKILL when prism dies, even by SIGKILL, so no orphan agent stays a member."""
    PR_SET_PDEATHSIG = 1
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class SerfAgent:
    """The child agent (a Supervisor component). `rpc` is its RPC address once started;
    `on_restart` is called after the agent was restarted (membership is rejoined by the caller)."""

    def __init__(self, host: str, port: int, name: str | None = None, binary: str = SERF_BINARY) -> None:
        self.host = host
        self.port = port
        self.name = name or random_node_name()
        self.binary = binary
        self.rpc_port = 0
        self.restarts = 0
        self.on_restart: Callable[[], None] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        """The running agent's process id (None when it is not running)."""
        proc = self._proc
        return None if proc is None or proc.returncode is not None else proc.pid

    @property
    def rpc(self) -> tuple[str, int]:
        return ("127.0.0.1", self.rpc_port)

    def check_installed(self) -> str:
        """The agent binary's path (AgentError naming the Debian package if it is missing)."""
        path = shutil.which(self.binary)
        if path is None:
            raise AgentError(MISSING_SERF)
        return path

    async def start(self) -> None:
        path = self.check_installed()
        check_port_free(self.host, self.port)
        await self._spawn(path)
        self._task = asyncio.get_running_loop().create_task(self._supervise(path))

    def _argv(self, path: str) -> list[str]:
        return [
            path,
            "agent",
            f"-node={self.name}",
            f"-bind={bracketed(self.host)}:{self.port}",
            f"-rpc-addr=127.0.0.1:{self.rpc_port}",
            "-log-level=warn",
        ]

    async def _spawn(self, path: str) -> None:
        self.rpc_port = free_loopback_port()
        proc = await asyncio.create_subprocess_exec(
            *self._argv(path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            start_new_session=True,  # a Ctrl-C at the terminal reaches prism, which stops the agent in order
        )
        self._proc = proc
        lines: list[str] = []
        drain = asyncio.get_running_loop().create_task(self._drain(proc, lines))
        try:
            await self._wait_rpc(proc, lines)
        except BaseException:
            await self._kill(proc)
            drain.cancel()
            raise
        log.info("serf agent %s on %s:%d (rpc 127.0.0.1:%d)", self.name, self.host, self.port, self.rpc_port)

    async def _drain(self, proc: asyncio.subprocess.Process, lines: list[str]) -> None:
        """The agent's output, kept for a startup error and logged at debug level."""
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            text = line.decode(errors="replace").strip()
            if text:
                lines.append(text)
                del lines[:-20]
                log.debug("serf: %s", text)

    async def _wait_rpc(self, proc: asyncio.subprocess.Process, lines: list[str]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        while loop.time() < deadline:
            if proc.returncode is not None:
                said = next((ln for ln in reversed(lines) if "rror" in ln), lines[-1] if lines else "")
                raise AgentError(f"the serf agent exited at start: {said.lstrip('=> ')}")
            try:
                client = await SerfClient.open(*self.rpc)
            except SerfError:
                await asyncio.sleep(0.05)
                continue
            await client.close()
            return
        raise AgentError(f"the serf agent did not open its RPC port within {READY_TIMEOUT:.0f} s")

    async def _supervise(self, path: str) -> None:
        while not self._stopping:
            proc = self._proc
            assert proc is not None
            code = await proc.wait()
            if self._stopping:
                return
            log.warning("the serf agent exited (code %s); restarting it", code)
            await asyncio.sleep(RESTART_DELAY)
            try:
                await self._spawn(path)
            except AgentError as e:
                log.warning("%s", e)
                continue
            self.restarts += 1
            if self.on_restart is not None:
                self.on_restart()

    async def _kill(self, proc: asyncio.subprocess.Process, grace: float = 0.0) -> None:
        if proc.returncode is None and grace > 0:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)  # serf leaves the cluster gracefully on SIGINT
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), grace)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def stop(self, grace: float) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._proc is not None:
            await self._kill(self._proc, grace=min(grace, 5.0))
