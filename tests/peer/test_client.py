"""PeerClient against test servers that answer byte for byte as reflector.go and lbry-sdk do."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from prism.blob import sha384_hex
from prism.peer.client import (
    PeerBlobNotFound,
    PeerClient,
    PeerConnectError,
    PeerHashMismatchError,
    PeerResponseError,
    PeerShortReadError,
    PeerTimeoutError,
)
from tests.peer.vectors import (
    BLOB0,
    BLOB0_HASH,
    SD_BYTES,
    SD_HASH,
    go_found_header,
    go_missing_header,
    sdk_found_header,
    sdk_missing_header,
    sdk_request,
)

MISSING = sha384_hex(b"missing")
BLOBS = {SD_HASH: SD_BYTES, BLOB0_HASH: BLOB0}

Answer = Callable[[dict, asyncio.StreamWriter], Awaitable[None]]


class ScriptedServer:
    """Reads whole JSON requests (by re-parsing at each '}', as the real servers do) and answers."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        buf = b""
        try:
            while chunk := await reader.read(65536):
                buf += chunk
                while b"}" in buf:
                    for end in range(1, len(buf) + 1):
                        if buf[end - 1 : end] != b"}":
                            continue
                        try:
                            request = json.loads(buf[:end])
                        except ValueError:
                            continue
                        self.requests.append(buf[:end])
                        buf = buf[end:]
                        await self.answer(request, writer)
                        await writer.drain()
                        break
                    else:
                        break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def scripted(answer: Answer) -> AsyncIterator[ScriptedServer]:
    s = ScriptedServer(answer)
    s.server = await asyncio.start_server(s._handle, "127.0.0.1", 0)
    s.port = s.server.sockets[0].getsockname()[1]
    try:
        yield s
    finally:
        s.server.close()
        await s.server.wait_closed()


def peer_server(
    found: Callable[[str, int], bytes],
    missing: Callable[[], bytes],
    availability: Callable[[list[str]], bytes],
) -> Answer:
    """A server answering lbry-sdk's requests with the given byte layouts."""

    async def answer(request: dict, writer: asyncio.StreamWriter) -> None:
        h = request.get("requested_blob")
        if h in BLOBS:
            writer.write(found(h, len(BLOBS[h])) + BLOBS[h])
        elif h:
            writer.write(missing())
        else:
            writer.write(availability([x for x in request.get("requested_blobs", []) if x in BLOBS]))

    return answer


# reflector.md §4.2 byte layout for lbry-sdk's four-key request.
reflector_go = peer_server(
    go_found_header,
    go_missing_header,
    lambda present: (
        b'{"lbrycrd_address":"bJxKvpD96kaJLriqVajZ7SaQTsWWyrGQct","available_blobs":[%s]}'
        % ",".join(f'"{x}"' for x in present).encode()
    ),
)
# lbry-wire.md §3.2 / §6.4 byte layout.
lbry_sdk = peer_server(
    sdk_found_header,
    sdk_missing_header,
    lambda present: json.dumps(
        {"available_blobs": present, "lbrycrd_address": "bQEaw42GXsgCAGio1nxFncJSyRmnztSCjP"}
    ).encode(),
)


@pytest.mark.parametrize("answer", [reflector_go, lbry_sdk], ids=["reflector.go", "lbry-sdk"])
async def test_downloads_from_both_server_forms_on_one_connection(answer: Answer) -> None:
    async with scripted(answer) as server, PeerClient("127.0.0.1", server.port) as client:
        assert await client.get(SD_HASH) == SD_BYTES
        assert await client.get(BLOB0_HASH, expected_length=16) == BLOB0
        with pytest.raises(PeerBlobNotFound) as e:
            await client.get(MISSING)
        assert "blob not found" in str(e.value)
        assert await client.has(SD_HASH) is True
        assert await client.has(MISSING) is False
        assert await client.get(SD_HASH) == SD_BYTES
        assert server.connections == 1  # reused throughout, also after "not found"
        # the client always speaks lbry-sdk's request, byte for byte
        assert server.requests[0] == sdk_request(SD_HASH) and len(server.requests[0]) == 295
        assert server.requests[2] == sdk_request(MISSING)
        assert (
            server.requests[3]
            == b'{"requested_blobs": ["' + SD_HASH.encode() + b'"], "lbrycrd_address": true}'
        )


async def test_answers_split_into_tiny_writes() -> None:
    async def dribble(request: dict, writer: asyncio.StreamWriter) -> None:
        wire = go_found_header(SD_HASH, 536) + SD_BYTES
        for i in range(0, len(wire), 7):
            writer.write(wire[i : i + 7])
            await writer.drain()
            await asyncio.sleep(0)

    async with scripted(dribble) as server, PeerClient("127.0.0.1", server.port) as client:
        assert await client.get(SD_HASH) == SD_BYTES


async def test_hash_mismatch() -> None:
    async def liar(request: dict, writer: asyncio.StreamWriter) -> None:
        writer.write(go_found_header(BLOB0_HASH, 16) + b"\x00" * 16)

    async with scripted(liar) as server, PeerClient("127.0.0.1", server.port) as client:
        with pytest.raises(PeerHashMismatchError, match="hash"):
            await client.get(BLOB0_HASH)


async def test_short_read() -> None:
    async def quitter(request: dict, writer: asyncio.StreamWriter) -> None:
        writer.write(go_found_header(SD_HASH, 536) + SD_BYTES[:100])
        await writer.drain()
        writer.close()

    async with scripted(quitter) as server, PeerClient("127.0.0.1", server.port) as client:
        with pytest.raises(PeerShortReadError, match="100 of 536"):
            await client.get(SD_HASH)
        # the next operation opens a fresh connection
        with pytest.raises(PeerShortReadError):
            await client.get(SD_HASH)
        assert server.connections == 2


async def test_timeout() -> None:
    async def silent(request: dict, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    async with scripted(silent) as server, PeerClient("127.0.0.1", server.port, timeout=0.3) as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(PeerTimeoutError, match=r"did not answer within 0\.3 s"):
            await client.get(SD_HASH)
        assert loop.time() - started < 2


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        (
            go_found_header(BLOB0_HASH, 16).replace(b"RATE_ACCEPTED", b"RATE_TOO_LOW"),
            "refused the payment rate",
        ),
        (go_found_header(BLOB0_HASH, 16).replace(BLOB0_HASH.encode(), SD_HASH.encode()), "offered blob"),
        (go_found_header(BLOB0_HASH, 16), None),  # control: the same answer, unaltered
        (
            b'{"lbrycrd_address":"x","incoming_blob":{"error":"server busy","blob_hash":"","length":0}}',
            "server busy",
        ),
        (b'{"lbrycrd_address":5}', "not a string"),
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "must start with"),
    ],
)
async def test_refusals_and_malformed_answers(wire: bytes, match: str | None) -> None:
    async def answer(request: dict, writer: asyncio.StreamWriter) -> None:
        writer.write(wire + BLOB0)

    async with scripted(answer) as server, PeerClient("127.0.0.1", server.port) as client:
        if match is None:
            assert await client.get(BLOB0_HASH) == BLOB0
        else:
            with pytest.raises(PeerResponseError, match=match):
                await client.get(BLOB0_HASH)


async def test_expected_length_is_enforced() -> None:
    async with scripted(reflector_go) as server, PeerClient("127.0.0.1", server.port) as client:
        with pytest.raises(PeerResponseError, match="announced 16 bytes"):
            await client.get(BLOB0_HASH, expected_length=32)


async def test_connection_refused() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with PeerClient("127.0.0.1", port) as client:
        with pytest.raises(PeerConnectError, match="could not connect"):
            await client.get(SD_HASH)


async def test_several_downloads_in_flight_share_a_small_pool() -> None:
    async with (
        scripted(reflector_go) as server,
        PeerClient("127.0.0.1", server.port, max_connections=3) as client,
    ):
        got = await asyncio.gather(*(client.get(h) for h in [SD_HASH, BLOB0_HASH] * 6))
        assert got == [SD_BYTES, BLOB0] * 6
        assert server.connections <= 3


async def test_invalid_hash_is_refused_before_sending() -> None:
    async with scripted(reflector_go) as server, PeerClient("127.0.0.1", server.port) as client:
        with pytest.raises(ValueError, match="invalid blob hash"):
            await client.get("../etc/passwd")
        assert server.connections == 0


async def test_body_timeout_counts_silence_not_total_time() -> None:
    async def slow_but_steady(request: dict, writer: asyncio.StreamWriter) -> None:
        writer.write(go_found_header(SD_HASH, 536))
        for i in range(0, len(SD_BYTES), 60):  # ~0.9 s for the body, never silent for 0.3 s
            writer.write(SD_BYTES[i : i + 60])
            await writer.drain()
            await asyncio.sleep(0.1)

    async def stalls(request: dict, writer: asyncio.StreamWriter) -> None:
        writer.write(go_found_header(SD_HASH, 536) + SD_BYTES[:200])
        await writer.drain()
        await asyncio.sleep(10)

    async with scripted(slow_but_steady) as server, PeerClient("127.0.0.1", server.port, timeout=0.3) as c:
        assert await c.get(SD_HASH) == SD_BYTES
    async with scripted(stalls) as server, PeerClient("127.0.0.1", server.port, timeout=0.3) as c:
        with pytest.raises(PeerTimeoutError, match="200 of 536 blob bytes"):
            await c.get(SD_HASH)


async def test_blob_body_in_an_availability_answer_is_never_left_on_a_reused_connection() -> None:
    async def always_sends_the_blob(request: dict, writer: asyncio.StreamWriter) -> None:
        h = request.get("requested_blob") or request["requested_blobs"][0]
        writer.write(go_found_header(h, len(BLOBS[h])) + BLOBS[h])

    async with (
        scripted(always_sends_the_blob) as server,
        PeerClient("127.0.0.1", server.port, timeout=2, max_connections=1) as client,
    ):
        assert await client.has(SD_HASH)
        assert await client.get(SD_HASH) == BLOBS[SD_HASH]
        assert server.connections == 2  # the first one still had a blob body to read
