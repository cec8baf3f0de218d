"""A test server that behaves as lbry-sdk's ReflectorServer does (lbry-wire.md §4).

Not lbry-sdk itself (it cannot be installed here): it reproduces the documented behaviour.
Answers `{"version": 1}` to any version, requires an sd offer before any blob offer (else closes),
answers in lbry-sdk's spaced JSON form, validates the sd blob before `received_sd_blob`, answers
`send_blob: false` for hashes not listed in the sd blob, and decodes every read on its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json

from prism.stream import SdBlob


class SdkLikeReflectorServer:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.server: asyncio.Server | None = None
        self.requests: list[bytes] = []

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def send(obj: dict) -> None:
            writer.write(json.dumps(obj).encode())

        try:
            async with asyncio.timeout(10):
                data = await reader.read(65536)
                self.requests.append(data)
                if "version" not in json.loads(data):
                    return
                send({"version": 1})
                data = await reader.read(65536)
                self.requests.append(data)
                offer = json.loads(data)
                if "sd_blob_hash" not in offer or "sd_blob_size" not in offer:
                    return  # refuses blob offers without a prior sd blob
                sd_hash, size = offer["sd_blob_hash"], offer["sd_blob_size"]
                if sd_hash in self.blobs:
                    sd = SdBlob.parse(self.blobs[sd_hash])
                    needed = [b.blob_hash for b in sd.content_blobs if b.blob_hash not in self.blobs]
                    send({"send_sd_blob": False, "needed_blobs": needed})
                else:
                    send({"send_sd_blob": True})
                    body = await reader.readexactly(size)
                    if hashlib.sha384(body).hexdigest() != sd_hash:
                        send({"received_sd_blob": False})
                        return
                    sd = SdBlob.parse(body)  # an invalid descriptor gets no answer
                    self.blobs[sd_hash] = body
                    send({"received_sd_blob": True})
                listed = {b.blob_hash for b in sd.content_blobs}
                while True:
                    data = await reader.read(65536)
                    if not data:
                        return
                    self.requests.append(data)
                    offer = json.loads(data)  # one request per read, as lbry-sdk requires
                    h, size = offer["blob_hash"], offer["blob_size"]
                    if h not in listed or h in self.blobs:
                        send({"send_blob": False})
                        continue
                    send({"send_blob": True})
                    body = await reader.readexactly(size)
                    ok = hashlib.sha384(body).hexdigest() == h
                    if ok:
                        self.blobs[h] = body
                    send({"received_blob": ok})
        except (ValueError, KeyError, TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
