"""`send` hashes each blob once: the encoding pass builds the sd blob, the upload re-encrypts
only what the reflector asks for and checks the file's identity instead of hashing again."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from prism.app.send import BlobProducer, SendError, prepare_stream, send_file
from prism.reflector.receiver import ReflectorReceiver
from prism.stream import SdBlob, SourceChangedError
from tests.helpers import CountingStore


def _file(tmp_path: Path, size: int = 5 * 1024 * 1024 + 17) -> Path:
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(size))  # 3 content blobs
    return path


def test_the_upload_pass_does_not_hash_again(tmp_path: Path, monkeypatch) -> None:
    path = _file(tmp_path)
    stream = prepare_stream(str(path))
    hashed: list[int] = []
    real = hashlib.sha384
    monkeypatch.setattr(hashlib, "sha384", lambda *a: (hashed.append(1), real(*a))[1])
    producer = BlobProducer(str(path), stream.sd, stream.source_stat)
    try:
        blobs = [producer.blob(h) for h in stream.sd.content_hashes]
    finally:
        producer.close()
    assert hashed == []
    assert [real(b).hexdigest() for b in blobs] == stream.sd.content_hashes


def test_a_file_changed_after_the_pass_is_an_error(tmp_path: Path) -> None:
    path = _file(tmp_path)
    stream = prepare_stream(str(path))
    with open(path, "r+b") as f:
        f.write(b"changed")
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # coarse clocks: make it differ
    producer = BlobProducer(str(path), stream.sd, stream.source_stat)
    try:
        with pytest.raises(SourceChangedError, match="the file changed"):
            producer.blob(stream.sd.content_hashes[0])
    finally:
        producer.close()


async def test_send_uploads_the_sd_blob_then_every_content_blob(tmp_path: Path) -> None:
    path = _file(tmp_path)
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
    assert len(hashes) == 3 and result.sent == 4  # the sd blob, then the three content blobs
    assert all(h in store.blobs for h in hashes)
    assert sorted(os.listdir(cache)) == ["f.bin.sdblob"]


async def test_a_missing_file_is_a_send_error(tmp_path: Path) -> None:
    with pytest.raises(SendError, match="not a readable file"):
        await send_file("127.0.0.1:1", str(tmp_path / "nope"), sd_cache=str(tmp_path / "cache"))
