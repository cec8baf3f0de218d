"""Property tests: any content encodes and decodes back; bad sd blobs give specific errors."""

import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prism.blob import MAX_CHUNK_SIZE, HashMismatchError
from prism.stream import (
    BlobNumError,
    KeyLengthError,
    SdBlob,
    SdBlobError,
    SdFieldError,
    SdJsonError,
    SourceChangedError,
    StreamDecoder,
    StreamEncoder,
    StreamHashMismatch,
    TerminatorError,
    encode_bytes,
)
from prism.stream.names import sanitize_file_name
from tests.hostile import NUMERALS


def roundtrip(data: bytes, name: str = "f.bin") -> None:
    blobs, enc = encode_bytes(data, name)
    assert all(len(b) <= 2 * 1024 * 1024 for _, b in blobs)
    sd = SdBlob.parse(enc.sd_bytes)
    by_hash = dict(blobs)
    out = io.BytesIO()
    StreamDecoder(sd).decode(lambda info: by_hash[info.blob_hash], out)
    assert out.getvalue() == data


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=5000))
def test_small_contents_roundtrip(data: bytes) -> None:
    roundtrip(data)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chunks=st.integers(min_value=0, max_value=2),
    offset=st.sampled_from([-17, -16, -1, 0, 1, 15, 16]),
    seed=st.integers(0, 255),
)
def test_sizes_around_blob_boundaries_roundtrip(chunks: int, offset: int, seed: int) -> None:
    size = max(0, chunks * MAX_CHUNK_SIZE + offset)
    data = bytes((seed + j) % 256 for j in range(size)) if size < 64 else (bytes([seed]) * 64) * (size // 64)
    data = data + bytes(size - len(data))
    roundtrip(data)


@pytest.mark.parametrize("size", [0, MAX_CHUNK_SIZE, 2 * MAX_CHUNK_SIZE, 3 * MAX_CHUNK_SIZE])
def test_exact_multiples_roundtrip(size: int) -> None:
    roundtrip(b"\x5a" * size)


GOOD = encode_bytes(b"some content here" * 100, "x.txt")[1].sd_bytes


def mutate(**changes) -> bytes:
    obj = json.loads(GOOD)
    for k, v in changes.items():
        if v is ...:
            del obj[k]
        else:
            obj[k] = v
    return json.dumps(obj).encode()


def blobs_mutated(fn) -> bytes:
    obj = json.loads(GOOD)
    fn(obj["blobs"])
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"{not json", SdJsonError),
        (b"[1,2]", SdJsonError),
        (b"\xff\xfe", SdJsonError),
        (GOOD[:-1], SdJsonError),
        (mutate(stream_hash="00" * 48), StreamHashMismatch),
        (mutate(key="0011"), KeyLengthError),
        (mutate(key=...), SdFieldError),
        (mutate(stream_type="other"), SdFieldError),
        (mutate(blobs=[]), TerminatorError),
        (mutate(stream_name="zz"), SdFieldError),
        (blobs_mutated(lambda b: b.pop()), TerminatorError),
        (blobs_mutated(lambda b: b[0].update(blob_num=5)), BlobNumError),
        (blobs_mutated(lambda b: b[-1].update(blob_hash="aa" * 48)), TerminatorError),
        (blobs_mutated(lambda b: b[0].update(iv="00")), SdFieldError),
        (blobs_mutated(lambda b: b[0].update(length="16")), SdFieldError),
        (blobs_mutated(lambda b: b[0].update(blob_hash="AB" * 48)), SdFieldError),
        (b"[" * 100_000, SdJsonError),
    ],
)
def test_malformed_sd_blobs_give_specific_errors(data: bytes, error: type[SdBlobError]) -> None:
    with pytest.raises(error):
        SdBlob.parse(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_parse_never_raises_anything_but_sd_errors(data: bytes) -> None:
    try:
        SdBlob.parse(data)
    except SdBlobError:
        pass


def test_blob_not_matching_its_hash() -> None:
    blobs, enc = encode_bytes(b"abc" * 1000, "a")
    sd = SdBlob.parse(enc.sd_bytes)
    tampered = bytearray(blobs[0][1])
    tampered[0] ^= 1
    with pytest.raises(HashMismatchError):
        StreamDecoder(sd).decode(lambda info: bytes(tampered), io.BytesIO())


def test_reencode_of_changed_file_is_refused() -> None:
    _, enc = encode_bytes(b"a" * 5000, "a")
    again = StreamEncoder.from_sd_bytes(enc.sd_bytes)
    with pytest.raises(SourceChangedError):
        list(again.encode(io.BytesIO(b"b" * 5000)))
    again = StreamEncoder.from_sd_bytes(enc.sd_bytes)
    with pytest.raises(SourceChangedError):
        list(again.encode(io.BytesIO(b"a" * 3000)))


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("movie.mp4", "movie.mp4"),
        ("a<b>c:d.txt", "abcd.txt"),
        ("../../etc/passwd", "passwd"),
        ("  spaced  ", "spaced"),
        ("trailing...", "trailing"),
        ("CON", ""),
        ("tab\tname\x01.bin", "tabname.bin"),
        ("x.", "x"),
        ("", ""),
    ],
)
def test_sanitize_file_name(name: str, want: str) -> None:
    assert sanitize_file_name(name) == want


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(["blob_num", "length"]), numeral=NUMERALS)
def test_sd_blob_numerals_only_raise_sd_blob_errors(key: str, numeral: str) -> None:
    entry = '{"blob_hash": "' + "ab" * 48 + '", "iv": "' + "00" * 16 + '", "' + key + '": ' + numeral
    other = "length" if key == "blob_num" else "blob_num"
    raw = (
        '{"stream_type": "lbryfile", "stream_name": "61", "suggested_file_name": "61", "key": "'
        + "00" * 16
        + '", "stream_hash": "'
        + "cd" * 48
        + '", "blobs": ['
        + entry
        + ', "'
        + other
        + '": 0}]}'
    )
    try:
        SdBlob.parse(raw)
    except SdBlobError:
        pass
