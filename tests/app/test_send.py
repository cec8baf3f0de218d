"""`send_file` in one pass: each content blob is encrypted once, spooled, and the spool removed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prism.app.send import SendError, send_file
from prism.reflector.receiver import ReflectorReceiver
from prism.stream import SdBlob
from prism.stream.crypto import BlobCipher
from tests.helpers import CountingStore


async def test_each_blob_is_encrypted_once_and_the_spool_is_removed(tmp_path: Path, monkeypatch) -> None:
    data = os.urandom(5 * 1024 * 1024 + 17)  # 3 content blobs
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    calls = []
    encrypt = BlobCipher.encrypt_padded

    def counting(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return encrypt(self, *args, **kwargs)

    monkeypatch.setattr(BlobCipher, "encrypt_padded", counting)
    store = CountingStore()
    receiver = ReflectorReceiver(store, host="127.0.0.1", port=0, timeout=30)
    await receiver.start()
    cache = tmp_path / "cache"
    try:
        stream, _source, result = await send_file(
            f"127.0.0.1:{receiver.port}", str(path), sd_cache=str(cache)
        )
    finally:
        await receiver.stop()
    hashes = SdBlob.parse(store.blobs[stream.sd_hash]).content_hashes
    assert len(hashes) == 3 and len(calls) == 3
    assert result.sent == 4  # the sd blob, then the three content blobs
    assert all(h in store.blobs for h in hashes)
    assert sorted(os.listdir(cache)) == ["f.bin.sdblob"]


async def test_a_missing_file_is_a_send_error(tmp_path: Path) -> None:
    with pytest.raises(SendError, match="not a readable file"):
        await send_file("127.0.0.1:1", str(tmp_path / "nope"), sd_cache=str(tmp_path / "cache"))
