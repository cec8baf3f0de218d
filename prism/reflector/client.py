"""The reflector client: uploads streams and single blobs to a reflector (prism, reflector.go, lbry-sdk).

Version 1 (the default) offers the sd blob first and then the content blobs the server asks
for. Version 0 offers content blobs first and the sd blob last, as reflector.go's `send`
does; if a server answers a version-0 handshake with 1 (lbry-sdk's server always does), the
upload goes on as version 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from prism.reflector.protocol import (
    ClientConnection,
    NeedData,
    OfferAnswer,
    ReceivedAnswer,
    ReflectorProtocolError,
    VersionAnswer,
)
from prism.stream.sd import SdBlob

log = logging.getLogger("prism.reflector")

DEFAULT_TIMEOUT = 180.0
HANDSHAKE_TIMEOUT = 5.0
"""Connecting and the version handshake: a reflector answers at once, and anything else listening
on the port (an HTTP server, say) never does, so waiting the full I/O timeout only hides the mistake."""
_READ_SIZE = 65536

BlobSource = Callable[[str], Awaitable[bytes | memoryview]]
"""Gives the bytes of a content blob by hash (e.g. re-encrypting one chunk of a file, or a view
of a spool), valid until the next call."""


class ReflectorError(Exception):
    """An upload failed: connection, protocol or a blob the server did not take."""


class BlobRefusedError(ReflectorError):
    """The server answered `received_*: false`: the blob did not land."""

    def __init__(self, blob_hash: str, result: UploadResult) -> None:
        super().__init__(f"server did not accept blob {blob_hash}")
        self.blob_hash = blob_hash
        self.result = result


@dataclass(slots=True)
class UploadResult:
    """What happened to each offered blob (sd blob included)."""

    needed: int = 0  # content blobs the server asked for (all of them after it took the sd blob)
    sent: int = 0  # blobs sent and acknowledged
    refused: int = 0  # blobs sent but answered received: false
    already_present: int = 0  # offers answered send: false
    bytes_sent: int = 0
    content_bytes_sent: int = 0
    sd_sent: bool = False
    sent_hashes: list[str] = field(default_factory=list)


class ReflectorClient:
    """One connection to a reflector. Use as `async with ReflectorClient(host, port) as c:`.

    `on_progress(blobs, nbytes)` is called as blobs are done (sent or found present).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        version: int = 1,
        timeout: float = DEFAULT_TIMEOUT,
        on_progress: Callable[[int, int], None] | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self.host = host
        self.port = port
        self.requested_version = version
        self.timeout = timeout
        self.handshake_timeout = min(timeout, handshake_timeout)
        self.on_progress = on_progress
        self.version: int | None = None
        self._codec = ClientConnection()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> ReflectorClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the connection and do the handshake."""
        try:
            async with asyncio.timeout(self.handshake_timeout):
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        except (OSError, TimeoutError) as e:
            reason = str(e) or f"no connection within {self.handshake_timeout:g} s"
            raise ReflectorError(f"cannot connect to reflector {self.host}:{self.port}: {reason}") from e
        await self._send(self._codec.send_handshake(self.requested_version))
        try:
            answer = await self._answer(self.handshake_timeout)
        except ReflectorError as e:
            await self.close()
            raise ReflectorError(
                f"{self.host}:{self.port} did not answer the reflector handshake ({e}): "
                "is it a reflector's receiver port (5566)?"
            ) from e
        assert isinstance(answer, VersionAnswer)
        if answer.version != self.requested_version:
            if self.requested_version == 0 and answer.version == 1:
                log.info(
                    "reflector %s:%d answered version 1 to version 0: going on as version 1",
                    self.host,
                    self.port,
                )
            else:
                await self.close()
                raise ReflectorError(
                    f"handshake version mismatch: offered {self.requested_version}, got {answer.version}"
                )
        self.version = answer.version

    async def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # -- wire ------------------------------------------------------------------------

    async def _send(self, *parts: bytes | memoryview) -> None:
        if self._writer is None:
            raise ReflectorError("not connected")
        try:
            for part in parts:
                self._writer.write(part)
            async with asyncio.timeout(self.timeout):
                await self._writer.drain()
        except (OSError, TimeoutError) as e:
            raise ReflectorError(f"sending to reflector failed: {e or type(e).__name__}") from e

    async def _answer(self, seconds: float | None = None) -> VersionAnswer | OfferAnswer | ReceivedAnswer:
        assert self._reader is not None
        timeout = self.timeout if seconds is None else seconds
        try:
            while True:
                event = self._codec.next_event()
                if not isinstance(event, NeedData):
                    return event
                async with asyncio.timeout(timeout):
                    data = await self._reader.read(_READ_SIZE)
                if not data:
                    raise ReflectorError("reflector closed the connection")
                self._codec.receive_data(data)
        except ReflectorProtocolError as e:
            raise ReflectorError(f"bad answer from reflector: {e.reason}") from e
        except TimeoutError:
            raise ReflectorError(f"no answer from reflector within {timeout:g} s") from None
        except OSError as e:
            raise ReflectorError(f"reading from reflector failed: {e}") from e

    async def _offer(self, blob_hash: str, size: int, is_sd: bool) -> OfferAnswer:
        await self._send(self._codec.send_offer(blob_hash, size, is_sd=is_sd))
        answer = await self._answer()
        assert isinstance(answer, OfferAnswer)
        return answer

    async def _send_body(
        self, blob_hash: str, data: bytes | memoryview, is_sd: bool, result: UploadResult
    ) -> None:
        await self._send(data)
        self._codec.body_sent()
        answer = await self._answer()
        assert isinstance(answer, ReceivedAnswer)
        if not answer.received:
            result.refused += 1
            raise BlobRefusedError(blob_hash, result)
        result.sent += 1
        result.bytes_sent += len(data)
        result.sent_hashes.append(blob_hash)
        if is_sd:
            result.sd_sent = True
        else:
            result.content_bytes_sent += len(data)
        if self.on_progress is not None:
            self.on_progress(1, len(data))

    # -- uploads -----------------------------------------------------------------------

    async def send_blob(
        self,
        blob_hash: str,
        data: bytes | memoryview,
        *,
        is_sd: bool = False,
        result: UploadResult | None = None,
    ) -> UploadResult:
        """Offer one blob and send it if wanted. `already_present` counts a `send: false` answer."""
        result = result if result is not None else UploadResult()
        answer = await self._offer(blob_hash, len(data), is_sd)
        if not answer.send:
            result.already_present += 1
            if self.on_progress is not None:
                self.on_progress(1, 0)
            return result
        await self._send_body(blob_hash, data, is_sd, result)
        return result

    async def still_needed(self, sd_hash: str, sd_bytes: bytes) -> list[str]:
        """Offer the sd blob again after an upload: what the server still lacks (empty: all there).

        lbry-sdk confirms an upload this way. A server that asks for the sd blob itself gets it,
        and the answer is then every content blob, since it had not kept the stream.
        """
        answer = await self._offer(sd_hash, len(sd_bytes), True)
        if answer.send:
            await self._send_body(sd_hash, sd_bytes, True, UploadResult())
            return [sd_hash, *SdBlob.parse(sd_bytes).content_hashes]
        return list(answer.needed_blobs)

    async def upload_stream(
        self,
        sd_hash: str,
        sd_bytes: bytes,
        get_blob: BlobSource,
        content_hashes: Sequence[str] | None = None,
    ) -> UploadResult:
        """Upload a stream: what the server still needs, nothing it has.

        Without `content_hashes` they are read from `sd_bytes` (an invalid sd blob raises SdBlobError).
        """
        hashes = list(content_hashes) if content_hashes is not None else SdBlob.parse(sd_bytes).content_hashes
        result = UploadResult()
        if self.version == 0:
            result.needed = len(hashes)
            for h in hashes:
                await self.send_blob(h, await get_blob(h), result=result)
            await self.send_blob(sd_hash, sd_bytes, is_sd=True, result=result)
            return result
        answer = await self._offer(sd_hash, len(sd_bytes), True)
        if answer.send:
            await self._send_body(sd_hash, sd_bytes, True, result)
            todo = hashes
        else:
            result.already_present += 1
            todo = list(answer.needed_blobs)
            unknown = set(todo) - set(hashes)
            if unknown:
                raise ReflectorError(f"server asked for {len(unknown)} blobs this stream does not have")
            if self.on_progress is not None:
                # The sd blob and every blob the server already has are done.
                self.on_progress(1 + len(hashes) - len(todo), 0)
        result.needed = len(todo)
        for h in todo:
            await self.send_blob(h, await get_blob(h), result=result)
        return result
