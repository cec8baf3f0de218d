"""The asyncio shell of `SerfCodec`: one TCP connection to a serf agent's RPC address."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from prism.cluster.codec import MEMBER_EVENTS, RPC_VERSION, Member, Response, SerfCodec, StreamEvent

CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 10.0


class SerfError(Exception):
    """The agent refused a request, or the connection to it failed; the message says which."""


class SerfClient:
    """Requests to one agent; `open` connects and shakes hands."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: str) -> None:
        self.where = where
        self._reader = reader
        self._writer = writer
        self._codec = SerfCodec()
        self._waiting: dict[int, asyncio.Future[Response]] = {}
        self._streams: dict[int, asyncio.Queue[StreamEvent | None]] = {}
        self._task = asyncio.get_running_loop().create_task(self._read())
        self.closed = asyncio.Event()

    @classmethod
    async def open(cls, host: str, port: int) -> SerfClient:
        where = f"{host}:{port}"
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as e:
            raise SerfError(f"cannot reach the serf agent's RPC at {where}: {e or 'timed out'}") from None
        client = cls(reader, writer, where)
        try:
            await client.call("handshake", {"Version": RPC_VERSION})
        except BaseException:
            await client.close()
            raise
        return client

    async def call(self, command: str, body: dict[str, Any] | None = None) -> Response:
        """Send one request and wait for its response (SerfError on an error reply)."""
        response = await self._send(command, body)
        if response.error:
            said = " ".join(response.error.split())  # serf's multi-error text spans lines
            raise SerfError(f"serf agent at {self.where}: {command}: {said}")
        return response

    async def _send(self, command: str, body: dict[str, Any] | None) -> Response:
        if self.closed.is_set():
            raise SerfError(f"the connection to the serf agent at {self.where} is closed")
        seq, data = self._codec.request(command, body)
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiting[seq] = future
        if command == "stream":
            self._streams[seq] = asyncio.Queue()
        self._writer.write(data)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                return await future
        except TimeoutError:
            raise SerfError(f"serf agent at {self.where}: no answer to {command}") from None
        finally:
            self._waiting.pop(seq, None)

    async def members(self) -> list[Member]:
        """Every member the agent knows, whatever its status."""
        body = (await self.call("members")).body or {}
        return [Member.from_wire(m) for m in body.get("Members") or []]

    async def join(self, addresses: list[str]) -> int:
        """Join the cluster through these `host:port` addresses (old events not replayed)."""
        response = await self.call("join", {"Existing": addresses, "Replay": False})
        return int((response.body or {}).get("Num", 0))

    async def agent_name(self) -> str:
        """The node name of the agent (from `stats`)."""
        body = (await self.call("stats")).body or {}
        return str((body.get("agent") or {}).get("name", ""))

    async def leave(self) -> None:
        await self.call("leave")

    async def stream(self, types: str = MEMBER_EVENTS) -> AsyncIterator[StreamEvent]:
        """The agent's events of these types until the connection closes (stopped on exit)."""
        response = await self._send("stream", {"Type": types})
        queue = self._streams[response.seq]
        if response.error:
            self._streams.pop(response.seq, None)
            raise SerfError(f"serf agent at {self.where}: stream: {response.error}")
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._streams.pop(response.seq, None)
            if not self.closed.is_set():
                with contextlib.suppress(SerfError):
                    await self.call("stop", {"Stop": response.seq})

    async def _read(self) -> None:
        try:
            while data := await self._reader.read(65536):
                for event in self._codec.receive(data):
                    if isinstance(event, StreamEvent):
                        queue = self._streams.get(event.seq)
                        if queue is not None:
                            queue.put_nowait(event)
                    else:
                        future = self._waiting.get(event.seq)
                        if future is not None and not future.done():
                            future.set_result(event)
        except Exception as e:  # a broken codec or socket ends this connection
            error = SerfError(f"serf agent at {self.where}: {e}")
        else:
            error = SerfError(f"the serf agent at {self.where} closed the connection")
        self.closed.set()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(error)
        for queue in self._streams.values():
            queue.put_nowait(None)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.closed.set()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(
                    SerfError(f"the connection to the serf agent at {self.where} was closed")
                )
        for queue in self._streams.values():
            queue.put_nowait(None)
