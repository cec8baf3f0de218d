"""Clients that behave exactly like lbry-sdk's and reflector.go's download from prism's server.

The two clients here follow the documented behaviour (lbry-wire.md §3.1–§3.2, reflector.md
§4.2) step by step: the request bytes, how each one finds the end of the JSON header, what
each one checks before reading the body. They are written from the spec for these tests.
"""

import asyncio
import json

import pytest

from prism.blob import sha384_hex
from prism.stream import decrypt_blob
from tests.helpers import random_blobs
from tests.peer.helpers import disk_store, running_server
from tests.peer.vectors import BLOB0, BLOB0_HASH, PLAINTEXT, SD_BYTES, SD_HASH, sdk_request

SDK_RESPONSE_KEYS = {"incoming_blob", "blob_data_payment_rate", "available_blobs", "lbrycrd_address"}


class SdkNotAvailable(Exception):
    pass


class LbrySdkStyleClient:
    """lbry-sdk's BlobExchangeClientProtocol, as lbry-wire.md §3.2 describes it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @staticmethod
    def _parse(buf: bytes) -> tuple[dict | None, bytes]:
        # Try each '}' in turn; the first prefix that decodes is the header (or not a response at all).
        pos = 0
        while (close := buf.find(b"}", pos)) != -1:
            pos = close + 1
            try:
                obj = json.loads(buf[:pos])
            except ValueError:
                continue
            if isinstance(obj, dict) and obj and set(obj) <= SDK_RESPONSE_KEYS:
                return obj, buf[pos:]
            return None, buf
        return None, buf

    async def download(self, blob_hash: str, length: int | None = None) -> bytes:
        self.writer.write(sdk_request(blob_hash))
        buf = b""
        async with asyncio.timeout(30):  # blob_download_timeout
            while True:
                buf += await self.reader.read(65536)
                header, rest = self._parse(buf)
                if header is not None:
                    break
            incoming = header.get("incoming_blob")
            available = header.get("available_blobs")
            if (not incoming or "error" in incoming) and not available:
                raise SdkNotAvailable(header)
            if available and available != [blob_hash]:
                raise AssertionError("availability answer does not match the request")
            assert header.get("blob_data_payment_rate") == "RATE_ACCEPTED"
            assert incoming["blob_hash"] == blob_hash
            if length is not None:
                assert incoming["length"] == length
            want = incoming["length"]
            while len(rest) < want:
                rest += await self.reader.read(want - len(rest))
        assert len(rest) == want, "more bytes than announced"
        assert sha384_hex(rest) == blob_hash
        return rest


class ReflectorGoStyleClient:
    """reflector.go's server/peer.Client, as reflector.md §4.2 describes it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.pending = b""

    async def _read_message(self) -> dict:
        # readNextMessage: first byte '{', grow to each '}' until valid JSON, at most 512 bytes.
        buf = self.pending
        while True:
            if buf and buf[:1] != b"{":
                raise AssertionError("Invalid data")
            for i in range(len(buf)):
                if buf[i : i + 1] == b"}":
                    try:
                        msg = json.loads(buf[: i + 1])
                    except ValueError:
                        continue
                    self.pending = buf[i + 1 :]
                    return msg
            if len(buf) > 512:
                raise AssertionError("response is too large")
            chunk = await self.reader.read(1)  # the Go reader reads byte by byte
            assert chunk, "EOF"
            buf += chunk

    async def has_blob(self, blob_hash: str) -> bool:
        self.writer.write(b'{"lbrycrd_address":false,"requested_blobs":["' + blob_hash.encode() + b'"]}')
        msg = await self._read_message()
        return blob_hash in msg["available_blobs"]

    async def get_blob(self, blob_hash: str) -> bytes:
        self.writer.write(b'{"requested_blob":"' + blob_hash.encode() + b'"}')
        msg = await self._read_message()
        incoming = msg["incoming_blob"]
        if incoming.get("error"):
            if "blob not found" in incoming["error"]:
                raise KeyError("not found")
            raise AssertionError(incoming["error"])
        assert incoming["blob_hash"] == blob_hash and incoming["length"] > 0
        data = self.pending
        while len(data) < incoming["length"]:
            data += await self.reader.readexactly(incoming["length"] - len(data))
        self.pending = b""
        return data


@pytest.fixture
def store(tmp_path):
    blobs = {SD_HASH: SD_BYTES, BLOB0_HASH: BLOB0, **random_blobs(2)}
    return disk_store(tmp_path / "blobs", blobs), blobs


async def test_lbry_sdk_style_client_downloads_a_stream_from_prism(store) -> None:
    disk, blobs = store
    async with running_server(disk) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        client = LbrySdkStyleClient(reader, writer)
        sd = json.loads(await client.download(SD_HASH))  # sd blob: length unknown beforehand
        info = sd["blobs"][0]
        blob = await client.download(info["blob_hash"], info["length"])  # keep-alive, length known
        assert decrypt_blob(bytes.fromhex(sd["key"]), bytes.fromhex(info["iv"]), blob) == PLAINTEXT
        for h, data in blobs.items():  # including two full 2 MiB blobs, same connection
            assert await client.download(h, len(data)) == data
        with pytest.raises(SdkNotAvailable):
            await client.download(sha384_hex(b"absent"))
        writer.close()
        assert server.stats.accepted == 1


async def test_reflector_go_style_client_downloads_from_prism(store) -> None:
    disk, blobs = store
    async with running_server(disk) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        client = ReflectorGoStyleClient(reader, writer)
        for h, data in blobs.items():
            assert await client.has_blob(h)
            assert await client.get_blob(h) == data
        absent = sha384_hex(b"absent")
        assert not await client.has_blob(absent)
        with pytest.raises(KeyError):  # recognised as "not found", not as a hash mismatch
            await client.get_blob(absent)
        assert await client.get_blob(BLOB0_HASH) == BLOB0
        writer.close()
