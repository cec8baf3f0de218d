"""Raw-socket helpers for reflector tests (real TCP on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json

# The stream of lbry-wire.md §6.1 (sd blob in the sorted layout).
SD_HASH = "ee87f57509159a2a8b52ef539e0d96da41f1f740cf18ea88b43a8ba5cc4d989b05babfdf960fee390dafcd5d5e08daac"
BLOB0 = "96f9722a1d2ccf0430419ef33da0ba6bff03ec8623b6e0ce602030810d8b85476110072eb64180bfd90ea09c80049524"
BLOB0_BYTES = bytes.fromhex("235c2aa210dec94688a29859b71049d7")
SD_BYTES = (
    b'{"blobs": [{"blob_hash": "'
    + BLOB0.encode()
    + b'", "blob_num": 0, "iv": "101112131415161718191a1b1c1d1e1f", '
    b'"length": 16}, {"blob_num": 1, "iv": "202122232425262728292a2b2c2d2e2f", "length": 0}], '
    b'"key": "000102030405060708090a0b0c0d0e0f", "stream_hash": '
    b'"061e2279be99dcd1abe197714661d74e270ca907a2d24a31f5ce1104ad233b22cfa9cbded98f9def24dec3a3a6be1d42", '
    b'"stream_name": "68656c6c6f2e747874", "stream_type": "lbryfile", "suggested_file_name": "68656c6c6f2e747874"}'
)
assert len(SD_BYTES) == 536


class RawClient:
    """Writes exactly the bytes it is given, one write per call, and reads JSON answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.received = b""
        self._pending = b""

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, wait: float = 5.0) -> bytes:
        """Bytes of the next JSON object from the server (buffering until it parses)."""
        async with asyncio.timeout(wait):
            while True:
                if self._pending:
                    try:
                        _obj, end = json.JSONDecoder().raw_decode(self._pending.decode("latin-1"))
                    except ValueError:
                        pass
                    else:
                        out, self._pending = self._pending[:end], self._pending[end:]
                        self.received += out
                        return out
                chunk = await self.reader.read(65536)
                if not chunk:
                    raise EOFError(f"closed after {self._pending!r}")
                self._pending += chunk

    async def closed(self, wait: float = 5.0) -> bool:
        async with asyncio.timeout(wait):
            rest = await self.reader.read()
        return rest == b""

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


def sdk(obj: dict) -> bytes:
    """lbry-sdk's client serialisation."""
    return json.dumps(obj, sort_keys=True).encode()
