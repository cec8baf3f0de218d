"""`send` hashes each blob once: the encoding pass builds the sd blob and keeps what fits in its
spool, the upload re-encrypts only the rest of what the reflector asks for and checks the file's
identity instead of hashing again."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from prism.app.send import BlobProducer, BlobSpool, SendError, prepare_stream, send_file
from prism.blob import MAX_CHUNK_SIZE
from prism.reflector.receiver import ReflectorReceiver
from prism.stream import SdBlob, SourceChangedError, StreamEncoder
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
        blobs = [bytes(producer.blob(h)) for h in stream.sd.content_hashes]  # a view until the next call
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


MIB = 1 << 20


def test_the_spool_keeps_the_blobs_that_fit_and_the_rest_are_encrypted_again(tmp_path: Path) -> None:
    path = _file(tmp_path)  # blobs of 2 MiB, 2 MiB and ~1 MiB
    stream = prepare_stream(str(path), spool_bytes=5 * MIB)  # room for two and a half blobs
    assert stream.spool is not None and stream.spool.kept == 2
    producer = BlobProducer(str(path), stream.sd, stream.source_stat, stream.spool)
    try:
        blobs = [producer.blob(h) for h in stream.sd.content_hashes]
        assert [hashlib.sha384(b).hexdigest() for b in blobs] == stream.sd.content_hashes
        # The first two are the spool's own bytes; the third was encrypted again into a buffer.
        assert [b.obj is blobs[0].obj for b in blobs] == [True, True, False]  # type: ignore[union-attr]
    finally:
        producer.close()
        stream.spool.close()


@pytest.mark.parametrize(
    ("budget", "kept"),
    [(0, None), (MIB, 0), (2 * MIB, 1), (5 * MIB, 2), (8 * MIB, 4), (8 * MIB + 111, 4), (8 * MIB + 112, 5)],
)
def test_spool_budgets(tmp_path: Path, budget: int, kept: int | None) -> None:
    path = _file(tmp_path, 4 * MAX_CHUNK_SIZE + 100)  # four 2 MiB blobs and one of 112 bytes
    stream = prepare_stream(str(path), spool_bytes=budget)
    if kept is None:
        assert stream.spool is None
        return
    assert stream.spool is not None
    try:
        assert stream.spool.kept == kept and stream.spool.size <= budget
    finally:
        stream.spool.close()


def test_spooled_blobs_survive_a_change_that_re_encrypted_ones_do_not(tmp_path: Path) -> None:
    path = _file(tmp_path)
    stream = prepare_stream(str(path), spool_bytes=2 * MIB)
    with open(path, "r+b") as f:
        f.write(b"changed")
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    producer = BlobProducer(str(path), stream.sd, stream.source_stat, stream.spool)
    first, second = stream.sd.content_hashes[:2]
    try:
        # The spool holds what the pass hashed, which the reflector will check again anyway.
        assert hashlib.sha384(producer.blob(first)).hexdigest() == first
        with pytest.raises(SourceChangedError, match="the file changed"):
            producer.blob(second)
    finally:
        producer.close()
        assert stream.spool is not None
        stream.spool.close()


async def _send_into(path: Path, cache: Path, spool_mb: int) -> tuple[str, dict[str, bytes], int]:
    store = CountingStore()
    receiver = ReflectorReceiver(store, host="127.0.0.1", port=0, timeout=30)
    await receiver.start()
    try:
        stream, _source, result = await send_file(
            f"127.0.0.1:{receiver.port}", str(path), sd_cache=str(cache), spool_mb=spool_mb
        )
    finally:
        await receiver.stop()
    return stream.sd_hash, dict(store.blobs), result.sent


@pytest.mark.parametrize("spool_mb", [2, 256])
async def test_a_spooled_send_uploads_what_a_re_encrypting_one_does(tmp_path: Path, spool_mb: int) -> None:
    path = _file(tmp_path)
    cache = tmp_path / "cache"  # the same key and IVs for both sends
    plain = await _send_into(path, cache, spool_mb=0)
    spooled = await _send_into(path, cache, spool_mb=spool_mb)
    assert spooled == plain
    assert plain[2] == 4 and len(plain[1]) == 4


def test_encrypting_into_the_spool_gives_the_same_stream(tmp_path: Path) -> None:
    data = os.urandom(3 * MAX_CHUNK_SIZE + 5)
    key, ivs = os.urandom(16), [os.urandom(16) for _ in range(5)]
    own = StreamEncoder("f.bin", key=key, ivs=ivs)
    own_blobs = [(b.hash, bytes(b.data)) for b in own.encode(io.BytesIO(data))]
    spool = BlobSpool(256 * MIB, len(data))
    try:
        into = StreamEncoder("f.bin", key=key, ivs=ivs)
        into_blobs = [(b.hash, bytes(b.data)) for b in into.encode(io.BytesIO(data), spool.slot)]
        assert into_blobs == own_blobs and spool.kept == 4
        assert all(bytes(spool.get(i) or b"") == own_blobs[i][1] for i in range(4))
    finally:
        spool.close()
    assert into.sd_bytes == own.sd_bytes and into.sd_hash == own.sd_hash
