"""A blob whose bytes are still arriving: what a cache miss can hand on before the last byte is in.

`BlobArrival` is sans-IO: the receiving side reports how many bytes are in (`arrived`), then
`verified` (every byte in and its SHA-384 checked) or `failed`; whoever hands the bytes on reads
`sendable` and listens for changes. Until the blob is verified its last byte is held back, so a
client can never hold a complete copy of bytes that turn out wrong: the sender aborts instead.
`until_changed` and `until_verified` are the asyncio waits over it, and `sendable_pieces` the one
walk every server sends an arriving blob by.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

Listener = Callable[[], None]


class BlobArrival:
    """The bytes of one blob arriving into `buffer`, which has the blob's final size."""

    __slots__ = ("_listeners", "buffer", "error", "is_verified", "received")

    def __init__(self, buffer: bytearray) -> None:
        self.buffer = buffer
        self.received = 0
        """Bytes in `buffer[:received]`."""
        self.is_verified = False
        self.error: Exception | None = None
        self._listeners: list[Listener] = []

    @property
    def size(self) -> int:
        return len(self.buffer)

    @property
    def done(self) -> bool:
        """Verified or failed: nothing changes any more."""
        return self.is_verified or self.error is not None

    @property
    def sendable(self) -> int:
        """How many bytes from the start may be handed on now: all once verified, else not the last."""
        return self.received if self.is_verified else min(self.received, len(self.buffer) - 1)

    def listen(self, listener: Listener) -> None:
        """Call `listener()` after every change (bytes in, verified, failed) until `unlisten` or
        the last change (a done arrival keeps no listeners; one added then is never called)."""
        self._listeners.append(listener)

    def unlisten(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def arrived(self, received: int) -> None:
        """`buffer[:received]` holds the blob's first bytes now."""
        if self.done or received <= self.received:
            return
        if received > len(self.buffer):
            raise ValueError(f"{received} bytes arrived into a buffer of {len(self.buffer)}")
        self.received = received
        self._changed()

    def verified(self) -> None:
        """Every byte is in and hashes to the blob's name."""
        if self.done:
            return
        if self.received != len(self.buffer):
            raise ValueError(f"verified with {self.received} of {len(self.buffer)} bytes in")
        self.is_verified = True
        self._changed()

    def failed(self, error: Exception) -> None:
        """The blob will not arrive whole, or did not hash to its name."""
        if self.done:
            return
        self.error = error
        self._changed()

    def _changed(self) -> None:
        listeners = self._listeners
        if self.done:  # the last change: listeners are dropped, and any cycle through them
            self._listeners = []
        for listener in list(listeners):
            listener()


async def until_changed(arrival: BlobArrival) -> None:
    """Wait for the next change of `arrival` (returns at once when it is done)."""
    if arrival.done:
        return
    changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake() -> None:
        if not changed.done():
            changed.set_result(None)

    arrival.listen(wake)
    try:
        await changed
    finally:
        arrival.unlisten(wake)


async def until_verified(arrival: BlobArrival) -> None:
    """Wait until every byte is in and verified; raises the arrival's error if it fails."""
    while not arrival.done:
        await until_changed(arrival)
    if arrival.error is not None:
        raise arrival.error


async def sendable_pieces(arrival: BlobArrival) -> AsyncIterator[tuple[int, int]]:
    """The byte ranges of `arrival` that may be handed on, in order, as each becomes sendable: the
    last one ends at the blob's size once it is verified. Raises the arrival's error if it fails."""
    sent, size = 0, arrival.size
    while sent < size:
        end = arrival.sendable
        if end > sent:
            yield sent, end
            sent = end
        elif arrival.error is not None:
            raise arrival.error
        else:
            await until_changed(arrival)
