"""Reflector receiver + DB-backed disk store, end to end over a real socket (reflector.md §4.3 b-c).

The client side is written out by hand (JSON objects without delimiters) so the exact answers
`send_sd_blob` / `needed_blobs` are checked, not a client's reading of them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from prism.config import MysqlParams
from prism.db import MysqlDatabase, TrackAccess
from prism.reflector.receiver import ReflectorReceiver
from prism.store import DiskStore
from prism.store.db_backed import DBBackedStore
from tests.db.conftest import PrivateMariaDB
from tests.db.streams import make_stream

IO_TIMEOUT = 10.0


class RawReflectorClient:
    """The reflector protocol by hand: bare JSON objects, blob bytes after an accepted offer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buffer = b""

    @classmethod
    async def connect(cls, port: int) -> RawReflectorClient:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), IO_TIMEOUT)
        client = cls(reader, writer)
        assert await client.request({"version": 1}) == {"version": 1}
        return client

    async def request(self, obj: dict[str, Any], body: bytes = b"") -> dict[str, Any]:
        self.writer.write(json.dumps(obj).encode() + body)
        await self.writer.drain()
        return await self.answer()

    async def answer(self) -> dict[str, Any]:
        decoder = json.JSONDecoder()
        while True:
            text = self.buffer.decode()
            if text.strip():
                try:
                    obj, end = decoder.raw_decode(text.lstrip())
                    self.buffer = text.lstrip()[end:].encode()
                    return obj
                except json.JSONDecodeError:
                    pass
            chunk = await asyncio.wait_for(self.reader.read(65536), IO_TIMEOUT)
            if not chunk:
                raise ConnectionError("the receiver closed the connection")
            self.buffer += chunk

    async def offer_sd(self, sd_hash: str, data: bytes) -> dict[str, Any]:
        return await self.request({"sd_blob_hash": sd_hash, "sd_blob_size": len(data)})

    async def upload_sd(self, sd_hash: str, data: bytes) -> None:
        assert (await self.offer_sd(sd_hash, data))["send_sd_blob"] is True
        self.writer.write(data)
        assert await self.answer() == {"received_sd_blob": True}

    async def upload_blob(self, blob_hash: str, data: bytes) -> None:
        assert await self.request({"blob_hash": blob_hash, "blob_size": len(data)}) == {"send_blob": True}
        self.writer.write(data)
        assert await self.answer() == {"received_blob": True}

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


async def _serve(store: DBBackedStore) -> ReflectorReceiver:
    receiver = ReflectorReceiver(store, host="127.0.0.1", port=0, timeout=IO_TIMEOUT)
    await receiver.start()
    return receiver


@pytest.fixture
async def receiver(mysql_database: MysqlParams, tmp_path: Path) -> AsyncIterator[ReflectorReceiver]:
    db = MysqlDatabase(mysql_database, track_access=TrackAccess.STREAMS)
    receiver = await _serve(DBBackedStore(DiskStore(tmp_path / "blobs"), db))
    yield receiver
    await receiver.stop()
    await db.close()


async def test_partly_uploaded_stream_is_completed_with_only_the_missing_blobs(
    receiver: ReflectorReceiver, tmp_path: Path
) -> None:
    s = make_stream(6)
    # The sd blob only.
    client = await RawReflectorClient.connect(receiver.port)
    await client.upload_sd(s.sd_hash, s.sd_bytes)
    await client.close()
    # Offered again: not wanted, every content blob needed.
    client = await RawReflectorClient.connect(receiver.port)
    assert await client.offer_sd(s.sd_hash, s.sd_bytes) == {"send_sd_blob": False, "needed_blobs": s.hashes}
    for h, data in s.blobs[:3]:
        await client.upload_blob(h, data)
    await client.close()
    # Half uploaded: the other half.
    client = await RawReflectorClient.connect(receiver.port)
    assert await client.offer_sd(s.sd_hash, s.sd_bytes) == {
        "send_sd_blob": False,
        "needed_blobs": s.hashes[3:],
    }
    assert await client.request({"blob_hash": s.hashes[0], "blob_size": 1024}) == {"send_blob": False}
    for h, data in s.blobs[3:]:
        await client.upload_blob(h, data)
    # Finished: nothing needed.
    assert await client.offer_sd(s.sd_hash, s.sd_bytes) == {"send_sd_blob": False}
    await client.close()
    # Everything landed on disk.
    disk = DiskStore(tmp_path / "blobs")
    for h, data in [(s.sd_hash, s.sd_bytes), *s.blobs]:
        with await disk.get(h) as ref:
            assert ref.read() == data


async def test_blocked_sd_hash_is_refused(receiver: ReflectorReceiver) -> None:
    s = make_stream(2)
    await receiver.store.block(s.sd_hash)  # type: ignore[attr-defined]
    client = await RawReflectorClient.connect(receiver.port)
    assert await client.offer_sd(s.sd_hash, s.sd_bytes) == {"send_sd_blob": False}
    await client.close()
    assert not await receiver.store.has(s.sd_hash)


async def test_receiver_survives_the_database_going_away(
    private_mariadb: PrivateMariaDB, private_database: MysqlParams, tmp_path: Path
) -> None:
    db = MysqlDatabase(
        private_database, track_access=TrackAccess.STREAMS, query_timeout=2.0, retry_interval=0.2
    )
    receiver = await _serve(DBBackedStore(DiskStore(tmp_path / "blobs"), db))
    try:
        s = make_stream(2)
        client = await RawReflectorClient.connect(receiver.port)
        await client.upload_sd(s.sd_hash, s.sd_bytes)
        await client.close()

        await asyncio.to_thread(private_mariadb.stop)
        for _ in range(3):  # each offer fails fast: the receiver closes that connection, and only it
            start = time.monotonic()
            client = await RawReflectorClient.connect(receiver.port)
            with pytest.raises(ConnectionError):
                await client.offer_sd(s.sd_hash, s.sd_bytes)
            await client.close()
            assert time.monotonic() - start < 1.0

        await asyncio.to_thread(private_mariadb.start)
        deadline = time.monotonic() + 10
        while True:
            client = await RawReflectorClient.connect(receiver.port)
            try:
                answer = await client.offer_sd(s.sd_hash, s.sd_bytes)
                break
            except ConnectionError:
                assert time.monotonic() < deadline, "the receiver did not recover"
                await asyncio.sleep(0.1)
            finally:
                await client.close()
        assert answer == {"send_sd_blob": False, "needed_blobs": s.hashes}
    finally:
        await receiver.stop()
        await db.close()
