"""StreamDecoder.decode's pipeline: two blobs in flight, nothing written before its hash is checked."""

import io
import itertools

import pytest

from prism.blob import MAX_CHUNK_SIZE, HashMismatchError
from prism.stream import SdBlob, StreamDecoder, encode_bytes

CONTENT = bytes(range(256)) * (5 * MAX_CHUNK_SIZE // 256) + b"tail" * 1000  # six blobs


def _stream() -> tuple[SdBlob, dict[str, bytes]]:
    blobs, enc = encode_bytes(CONTENT, "five.bin")
    return SdBlob.parse(enc.sd_bytes), dict(blobs)


def test_blobs_read_into_two_buffers_in_turn_decode_back():
    # The caller may reuse a view once two more have been asked for, as bench/stream.py does.
    sd, by_hash = _stream()
    buffers = (bytearray(2 * 1024 * 1024), bytearray(2 * 1024 * 1024))
    turn = itertools.count()

    def read(info):
        buf = buffers[next(turn) % 2]
        data = by_hash[info.blob_hash]
        buf[: len(data)] = data
        return memoryview(buf)[: len(data)]

    out = io.BytesIO()
    assert StreamDecoder(sd).decode(read, out) == len(CONTENT)
    assert out.getvalue() == CONTENT


@pytest.mark.parametrize("bad", [0, 2, 5])
def test_a_wrong_blob_stops_the_decode_before_any_of_it_is_written(bad):
    sd, by_hash = _stream()
    infos = sd.content_blobs
    assert len(infos) == 6

    def read(info):
        data = by_hash[info.blob_hash]
        if info.blob_num == bad:
            data = bytes([data[0] ^ 1]) + data[1:]
        return data

    out = io.BytesIO()
    with pytest.raises(HashMismatchError, match=f"blob {bad} "):
        StreamDecoder(sd).decode(read, out)
    written = out.getvalue()
    before_bad = sum(len(p) for p in _plaintexts(sd, by_hash)[:bad])
    assert len(written) <= before_bad and CONTENT.startswith(written)


def _plaintexts(sd: SdBlob, by_hash: dict[str, bytes]) -> list[bytes]:
    dec = StreamDecoder(sd)
    return [bytes(dec.decrypt(info, by_hash[info.blob_hash])) for info in sd.content_blobs]
