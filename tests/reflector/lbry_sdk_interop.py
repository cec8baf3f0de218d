"""Interop check against lbry-sdk's own reflector classes (run by hand; not collected by pytest).

Usage: python tests/reflector/lbry_sdk_interop.py /path/to/lbry-sdk

lbry-sdk is not installable here (it is not on PyPI and pulls in a wallet stack), so this loads
only its two protocol files, `lbry/stream/reflector/client.py` and `server.py`, from a checkout,
and gives them a minimal in-memory blob manager (the plumbing they call: get_blob, writers,
`verified` events, StreamDescriptor.from_stream_descriptor_blob). The protocol logic that runs
is lbry-sdk's, unchanged:

1. lbry-sdk's StreamReflectorClient uploads a stream to prism's ReflectorReceiver, the way
   `ManagedStream.upload_to_reflector` drives it; then again (must be "already reflected");
   then after prism lost a content blob (must send only that blob).
2. prism's ReflectorClient uploads a stream to lbry-sdk's ReflectorServer; then again.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import sys
import types
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from prism.reflector.client import ReflectorClient
from prism.reflector.receiver import ReflectorReceiver
from prism.store.memory import MemoryStore
from prism.stream import SdBlob, encode_bytes

# -- the plumbing lbry-sdk's protocol classes call ------------------------------------------


class Blob:
    def __init__(self, manager: BlobManager, blob_hash: str, length: int | None) -> None:
        self.manager = manager
        self.blob_hash = blob_hash
        self.length = length
        self.verified = asyncio.Event()
        if blob_hash in manager.blobs:
            self.length = len(manager.blobs[blob_hash])
            self.verified.set()

    def get_is_verified(self) -> bool:
        return self.blob_hash in self.manager.blobs

    def get_blob_writer(self, peer: object) -> Writer:
        return Writer(self)

    async def sendfile(self, protocol: asyncio.Protocol) -> int:
        data = self.manager.blobs[self.blob_hash]
        protocol.transport.write(data)  # type: ignore[attr-defined]
        return len(data)


class Writer:
    def __init__(self, blob: Blob) -> None:
        self.blob = blob
        self.buf = b""

    def write(self, data: bytes) -> None:
        self.buf += data
        if self.blob.length is not None and len(self.buf) >= self.blob.length:
            data = self.buf[: self.blob.length]
            if hashlib.sha384(data).hexdigest() == self.blob.blob_hash:
                self.blob.manager.blobs[self.blob.blob_hash] = data
                self.blob.verified.set()

    def close_handle(self) -> None:
        pass


class BlobManager:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.blob_dir = None
        self._open: dict[str, Blob] = {}

    def get_blob(self, blob_hash: str, length: int | None = None) -> Blob:
        if blob_hash not in self._open or self._open[blob_hash].get_is_verified():
            self._open[blob_hash] = Blob(self, blob_hash, length)
        return self._open[blob_hash]

    def is_blob_verified(self, blob_hash: str, length: int | None = None) -> bool:
        return blob_hash in self.blobs

    @property
    def completed_blob_hashes(self) -> set[str]:
        return set(self.blobs)


@dataclass
class Descriptor:
    sd_hash: str
    blobs: list

    @classmethod
    async def from_stream_descriptor_blob(cls, loop: object, blob_dir: object, sd_blob: Blob) -> Descriptor:
        sd = SdBlob.parse(sd_blob.manager.blobs[sd_blob.blob_hash])
        return cls(sd_blob.blob_hash, list(sd.blobs))


def load_lbry_sdk(root: str) -> tuple[types.ModuleType, types.ModuleType]:
    descriptor_module = types.ModuleType("lbry.stream.descriptor")
    descriptor_module.StreamDescriptor = Descriptor  # type: ignore[attr-defined]
    for name in ("lbry", "lbry.stream"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["lbry.stream.descriptor"] = descriptor_module
    mods = []
    for name in ("client", "server"):
        path = os.path.join(root, "lbry", "stream", "reflector", f"{name}.py")
        spec = importlib.util.spec_from_file_location(f"lbry_sdk_reflector_{name}", path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mods.append(mod)
    return mods[0], mods[1]


# -- the checks ----------------------------------------------------------------------------------


async def sdk_client_upload(client_mod: types.ModuleType, manager: BlobManager, sd_hash: str, port: int):
    """What ManagedStream.upload_to_reflector does, with lbry-sdk's StreamReflectorClient."""
    sd = SdBlob.parse(manager.blobs[sd_hash])
    protocol = client_mod.StreamReflectorClient(manager, Descriptor(sd_hash, list(sd.blobs)))
    loop = asyncio.get_running_loop()
    await loop.create_connection(lambda: protocol, "127.0.0.1", port)
    sent = []
    try:
        await protocol.send_handshake()
        sent_sd, needed = await protocol.send_descriptor()
        if sent_sd:
            sent.append(sd_hash)
        for blob_hash in needed:
            await protocol.send_blob(blob_hash)
            sent.append(blob_hash)
    finally:
        if protocol.transport:
            protocol.transport.close()
    return sent, protocol.reflected_blobs


async def main(root: str) -> None:
    client_mod, server_mod = load_lbry_sdk(root)
    blobs, enc = encode_bytes(os.urandom(5_000_000), "interop.bin")
    sd_hash = enc.sd_hash
    content = [h for h, _ in blobs]

    # 1. lbry-sdk's client -> prism's receiver
    sdk_side = BlobManager()
    sdk_side.blobs = {sd_hash: enc.sd_bytes, **dict(blobs)}
    store = MemoryStore()
    receiver = ReflectorReceiver(store, host="127.0.0.1", port=0, timeout=10)
    await receiver.start()
    try:
        sent, reflected = await sdk_client_upload(client_mod, sdk_side, sd_hash, receiver.port)
        assert sent == [sd_hash, *content] and reflected == sent, (sent, reflected)
        assert store.blobs == sdk_side.blobs
        print(f"lbry-sdk client -> prism receiver: sent {len(sent)} blobs, all stored: OK")
        sent, _ = await sdk_client_upload(client_mod, sdk_side, sd_hash, receiver.port)
        assert sent == [], sent
        print("lbry-sdk client -> prism receiver, again: nothing sent (already reflected): OK")
        del store.blobs[content[1]]
        sent, _ = await sdk_client_upload(client_mod, sdk_side, sd_hash, receiver.port)
        assert sent == [content[1]], sent
        assert store.blobs == sdk_side.blobs
        print("lbry-sdk client -> prism receiver missing one blob: sent only that blob: OK")
    finally:
        await receiver.stop()

    # 2. prism's client -> lbry-sdk's server
    server_side = BlobManager()
    server = server_mod.ReflectorServer(server_side)
    free = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = free.sockets[0].getsockname()[1]
    free.close()
    await free.wait_closed()
    server.start_server(port, "127.0.0.1")
    await server.started_listening.wait()
    all_blobs = dict(blobs)

    async def get(h: str) -> bytes:
        return all_blobs[h]

    try:
        for version in (1, 0):
            async with ReflectorClient("127.0.0.1", port, version=version, timeout=10) as c:
                result = await c.upload_stream(sd_hash, enc.sd_bytes, get)
            if version == 1:
                assert result.sent == 1 + len(content) and server_side.blobs == {
                    sd_hash: enc.sd_bytes,
                    **all_blobs,
                }
                print(f"prism client (v1) -> lbry-sdk server: sent {result.sent} blobs, all stored: OK")
            else:
                assert c.version == 1 and result.sent == 0 and result.already_present == 1, result
                print("prism client (v0 offered, answered 1) -> lbry-sdk server, again: nothing sent: OK")
    finally:
        server.stop_server()
        await asyncio.sleep(0.1)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1]))
