"""PeerStore: a read-only store over the peer client, against a real PeerServer on 127.0.0.1."""

import pytest

from prism.blob import sha384_hex
from prism.peer.server import PeerServer
from prism.store.base import BlobNotFound, BlobStore, ReadOnlyStoreError, StoreError
from prism.store.memory import MemoryStore
from prism.store.peer import PeerStore, PeerStoreError, parse_address

DATA = b"a blob served over the peer protocol"
HASH = sha384_hex(DATA)


@pytest.fixture
async def server():
    origin = MemoryStore()
    await origin.put(HASH, DATA)
    srv = PeerServer(origin, "127.0.0.1", 0)
    await srv.start()
    yield srv
    await srv.stop(1)


async def test_has_get_and_not_found(server) -> None:
    store = PeerStore(f"127.0.0.1:{server.port}", timeout=2)
    assert isinstance(store, BlobStore) and store.name == "peer"
    assert await store.has(HASH)
    ref = await store.get(HASH)
    assert ref.read() == DATA and ref.size == len(DATA)
    assert ref.trace.stacks[0].origin_name == "peer"
    missing = sha384_hex(b"nope")
    assert not await store.has(missing)
    with pytest.raises(BlobNotFound):
        await store.get(missing)
    with pytest.raises(ValueError):
        await store.get("../../x")
    for call in (store.put(HASH, DATA), store.put_sd(HASH, DATA), store.delete(HASH)):
        with pytest.raises(ReadOnlyStoreError):
            await call
    await store.close()
    assert server.stats.accepted == 1  # one reused connection


async def test_unreachable_peer_is_a_store_error(server) -> None:
    port = server.port
    await server.stop(0)
    store = PeerStore(f"127.0.0.1:{port}", timeout=1)
    with pytest.raises(PeerStoreError, match="could not connect") as e:
        await store.get(HASH)
    assert isinstance(e.value, StoreError) and not isinstance(e.value, BlobNotFound)
    await store.close()


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:5567") == ("127.0.0.1", 5567)
    assert parse_address("[::1]:3333") == ("::1", 3333)
    assert parse_address("reflector.example:5567") == ("reflector.example", 5567)
    for bad in ("nohost", ":80", "host:", "host:0", "host:99999", "host:x"):
        with pytest.raises(ValueError):
            parse_address(bad)
