"""Manual interop check against lbry-sdk itself (not collected by pytest: lbry-sdk is not installable).

    python tests/peer/lbry_sdk_check.py --sdk-src /path/to/lbry-sdk

imports lbry-sdk's own blob-exchange client and server from a checkout of lbryio/lbry-sdk
(its `lbry/utils.py` pulls in the whole wallet stack, so a stand-in module providing the two
helpers those modules use is put in front of it), then on 127.0.0.1:

1. lbry-sdk's `request_blob` downloads a stream's sd blob and content blobs from prism's
   PeerServer over one kept-alive connection and verifies them;
2. prism's PeerClient downloads the same blobs from lbry-sdk's `BlobServer`, and gets
   PeerBlobNotFound for a blob that server lacks.

Exits non-zero on any mismatch.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_UTILS_STAND_IN = """
import hashlib


def get_lbry_hash_obj():
    return hashlib.sha384()


def cache_concurrent(f):
    return f
"""


def _prepare(sdk_src: str, work: str) -> None:
    """A package dir with lbry-sdk's blob modules and the stand-in utils module."""
    pkg = os.path.join(work, "lbry")
    os.makedirs(pkg)
    for name in ("__init__.py", "blob", "blob_exchange", "error", "connection_manager.py"):
        src = os.path.join(sdk_src, "lbry", name)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(pkg, name))
        else:
            shutil.copy(src, os.path.join(pkg, name))
    with open(os.path.join(pkg, "utils.py"), "w") as f:
        f.write(_UTILS_STAND_IN)
    sys.path[:0] = [work, REPO]


async def _check(tmp: str) -> None:
    from lbry.blob.blob_file import BlobFile
    from lbry.blob_exchange.client import request_blob
    from lbry.blob_exchange.server import BlobServer
    from lbry.connection_manager import ConnectionManager

    from prism.blob import sha384_hex
    from prism.peer.client import PeerBlobNotFound, PeerClient
    from prism.peer.server import PeerServer
    from prism.store.disk import DiskStore
    from prism.stream import encode_bytes

    loop = asyncio.get_running_loop()
    blobs, enc = encode_bytes(os.urandom(5_000_000), "check.bin")
    store = DiskStore(os.path.join(tmp, "prism"))
    for h, b in blobs:
        store.write_blob(h, b)
    store.write_blob(enc.sd_hash, enc.sd_bytes)
    items = [(enc.sd_hash, None), *((h, len(b)) for h, b in blobs)]
    missing = sha384_hex(b"missing")

    server = PeerServer(store, "127.0.0.1", 0)
    await server.start()
    sdk_dir = os.path.join(tmp, "sdk")
    os.makedirs(sdk_dir)
    proto = None
    for h, length in items:
        blob = BlobFile(loop, h, length, blob_directory=sdk_dir)
        received, proto = await request_blob(
            loop, blob, "127.0.0.1", server.port, 3, 30, connected_protocol=proto
        )
        if not blob.get_is_verified() or proto is None:
            raise SystemExit(f"lbry-sdk's client failed on {h[:8]} from prism")
        print(f"lbry-sdk client <- prism: {h[:8]} ({received} bytes) verified")
    if server.stats.accepted != 1:
        raise SystemExit("lbry-sdk's client did not keep the connection alive")

    class _BlobManager:  # the part of lbry-sdk's BlobManager its BlobServerProtocol uses
        def __init__(self) -> None:
            self.connection_manager = ConnectionManager(loop)
            self.completed_blob_hashes = {h for h, _ in items}

        def get_blob(self, blob_hash: str, length: int | None = None) -> BlobFile:
            return BlobFile(loop, blob_hash, length, blob_directory=sdk_dir)

    sdk_server = BlobServer(loop, _BlobManager(), "bQEaw42GXsgCAGio1nxFncJSyRmnztSCjP")
    # BlobServer does not expose its port: find a free one first.
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    sdk_server.start_server(port, "127.0.0.1")
    await sdk_server.started_listening.wait()
    async with PeerClient("127.0.0.1", port, timeout=10) as client:
        for h, length in items:
            data = await client.get(h, length)
            print(f"prism client <- lbry-sdk: {h[:8]} ({len(data)} bytes) verified")
        if not await client.has(blobs[0][0]) or await client.has(missing):
            raise SystemExit("availability answers from lbry-sdk's server were misread")
        try:
            await client.get(missing)
        except PeerBlobNotFound as e:
            print(f"prism client <- lbry-sdk, missing blob: {e}")
        else:
            raise SystemExit("expected PeerBlobNotFound")
    sdk_server.stop_server()
    await server.stop()
    print("lbry-sdk interop: OK")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sdk-src", required=True, help="a checkout of lbryio/lbry-sdk (tested with e7666f489)")
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="prism-sdk-check-")
    try:
        _prepare(args.sdk_src, os.path.join(tmp, "shim"))
        asyncio.run(_check(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
