"""Splitting a file into encrypted content blobs and an sd blob, in a streaming way.

Memory stays at a few blob-sized buffers whatever the file size: input is read with
`readinto` into two alternating buffers, encrypted into two alternating output buffers, and
each blob is handed to the caller as a memoryview that is valid until the next blob is
produced. The two SHA-384s (of each blob's ciphertext, and of the whole plaintext, the source
hash `send` prints) run on worker threads, overlapping the cipher and each other: hashlib
releases the GIL for large buffers.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from prism.blob import MAX_CHUNK_SIZE
from prism.stream.crypto import BLOCK, IV_SIZE, KEY_SIZE, BlobCipher, padded_length
from prism.stream.errors import SourceChangedError
from prism.stream.names import hex_name, sanitize_file_name
from prism.stream.sd import BlobInfo, Layout, SdBlob, sd_hash_of

BlobOutput = Callable[[int, int], memoryview | None]
"""Where blob i's ciphertext goes: given (blob number, ciphertext size), a writable view of exactly
that size (a spool slot, say), or None for the encoder's own reused buffer."""


@dataclass(frozen=True, slots=True)
class EncodedBlob:
    """One content blob. `data` points into the encoder's buffer (copy it, bytes(data), to keep it)
    or into the view `encode`'s `output` gave for it."""

    blob_num: int
    hash: str
    data: memoryview

    @property
    def length(self) -> int:
        return len(self.data)


class StreamEncoder:
    """Encodes one stream. Iterate `encode(reader)`; afterwards `sd_bytes`, `sd_hash`, `source_hash`."""

    def __init__(
        self,
        file_name: str = "",
        *,
        key: bytes | None = None,
        ivs: Iterable[bytes] | None = None,
        layout: Layout = Layout.SORTED,
        compute_source_hash: bool = True,
    ) -> None:
        self.stream_name = hex_name(os.path.basename(file_name))
        self.suggested_file_name = hex_name(sanitize_file_name(file_name))
        self.key = key if key is not None else os.urandom(KEY_SIZE)
        if len(self.key) != KEY_SIZE:
            raise ValueError(f"stream key must be {KEY_SIZE} bytes, got {len(self.key)}")
        self._ivs = iter(ivs) if ivs is not None else None
        self.layout = layout
        self.compute_source_hash = compute_source_hash
        self._expected: SdBlob | None = None
        self._given_sd_bytes: bytes | None = None
        self._sd: SdBlob | None = None
        self._sd_bytes: bytes | None = None
        self._source_hash: str | None = None

    @classmethod
    def from_sd_bytes(cls, sd_bytes: bytes, *, compute_source_hash: bool = True) -> StreamEncoder:
        """Re-encode with an existing stream's key, IVs and names: the same file gives the same blobs.

        The sd blob's bytes are reused unchanged, so the sd hash cannot change; if the file
        no longer matches, encoding raises SourceChangedError.
        """
        sd = SdBlob.parse(sd_bytes)
        enc = cls(
            key=sd.key_bytes, ivs=[b.iv_bytes for b in sd.blobs], compute_source_hash=compute_source_hash
        )
        enc.stream_name = sd.stream_name
        enc.suggested_file_name = sd.suggested_file_name
        enc._expected = sd
        enc._given_sd_bytes = bytes(sd_bytes)
        return enc

    def _next_iv(self) -> bytes:
        if self._ivs is None:
            return os.urandom(IV_SIZE)
        try:
            iv = next(self._ivs)
        except StopIteration:
            raise SourceChangedError("the file has more data than the sd blob describes") from None
        if len(iv) != IV_SIZE:
            raise ValueError(f"IV must be {IV_SIZE} bytes, got {len(iv)}")
        return iv

    def encode(self, reader: ReadsInto, output: BlobOutput | None = None) -> Iterator[EncodedBlob]:
        """Yield the content blobs in order; the sd blob is ready once the iterator is exhausted.

        With `output`, each blob it gives a view for is encrypted straight into that view.

        A pipeline over two cores (hashlib and the cipher release the GIL): this thread reads and
        encrypts blob i while one worker hashes blob i-1's ciphertext and another hashes the
        plaintext into the source hash; blob i-1 is yielded once its hash is known. Buffers
        alternate in pairs (plaintext and ciphertext), so memory stays at four blob buffers.
        """
        ciphers = (BlobCipher(self.key), BlobCipher(self.key))
        bufs = (bytearray(MAX_CHUNK_SIZE + BLOCK), bytearray(MAX_CHUNK_SIZE + BLOCK))
        reading: list[Future[None] | None] = [None, None]
        source = hashlib.sha384()
        source_pool = ThreadPoolExecutor(1, "source-hash") if self.compute_source_hash else None
        hash_pool = ThreadPoolExecutor(1, "blob-hash")
        infos: list[BlobInfo] = []
        waiting: tuple[int, bytes, memoryview, Future[str]] | None = None  # num, iv, ciphertext, hash
        try:
            num = 0
            while True:
                slot = num % 2
                buf = bufs[slot]
                if (fut := reading[slot]) is not None:
                    fut.result()  # the source hasher must be done with this buffer before we refill it
                n = _read_full(reader, memoryview(buf)[:MAX_CHUNK_SIZE])
                if n == 0:
                    break
                if source_pool is not None:
                    reading[slot] = source_pool.submit(source.update, memoryview(buf)[:n])
                iv = self._next_iv()
                # Blob i-2's ciphertext, in this cipher's buffer, was consumed before we resumed.
                out = output(num, padded_length(n)) if output is not None else None
                ciphertext = ciphers[slot].encrypt_padded(iv, buf, n, out)
                hashed = hash_pool.submit(_sha384_hex, ciphertext)
                if waiting is not None:
                    yield self._finished_blob(infos, *waiting)
                waiting = (num, iv, ciphertext, hashed)
                num += 1
            if waiting is not None:
                yield self._finished_blob(infos, *waiting)
            for fut in reading:
                if fut is not None:
                    fut.result()
        finally:
            if source_pool is not None:
                source_pool.shutdown(wait=True)
            hash_pool.shutdown(wait=True)
        infos.append(BlobInfo(len(infos), 0, self._next_iv().hex(), None))
        self._finish(tuple(infos))
        self._source_hash = source.hexdigest() if self.compute_source_hash else None

    def _finished_blob(
        self, infos: list[BlobInfo], num: int, iv: bytes, ciphertext: memoryview, hashed: Future[str]
    ) -> EncodedBlob:
        blob_hash = hashed.result()
        info = BlobInfo(num, len(ciphertext), iv.hex(), blob_hash)
        if self._expected is not None:
            self._check_expected(info)
        infos.append(info)
        return EncodedBlob(num, blob_hash, ciphertext)

    def _check_expected(self, info: BlobInfo) -> None:
        assert self._expected is not None
        blobs = self._expected.blobs
        if info.blob_num >= len(blobs) - 1 or blobs[info.blob_num] != info:
            raise SourceChangedError(
                f"blob {info.blob_num} differs from the cached sd blob: the file changed since it was made"
            )

    def _finish(self, infos: tuple[BlobInfo, ...]) -> None:
        if self._expected is not None:
            if infos != self._expected.blobs:
                raise SourceChangedError("the file is shorter than the cached sd blob describes")
            self._sd = self._expected
            self._sd_bytes = self._given_sd_bytes
            return
        self._sd = SdBlob.create(self.stream_name, self.suggested_file_name, self.key.hex(), infos)
        self._sd_bytes = self._sd.serialize(self.layout)

    @property
    def sd_blob(self) -> SdBlob:
        if self._sd is None:
            raise RuntimeError("the stream is not encoded yet")
        return self._sd

    @property
    def sd_bytes(self) -> bytes:
        if self._sd_bytes is None:
            raise RuntimeError("the stream is not encoded yet")
        return self._sd_bytes

    @property
    def sd_hash(self) -> str:
        return sd_hash_of(self.sd_bytes)

    @property
    def source_hash(self) -> str:
        if self._source_hash is None:
            raise RuntimeError("the source hash was not computed")
        return self._source_hash


class ReadsInto(Protocol):
    """A binary file opened for reading (`typing.BinaryIO` does not declare `readinto`)."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


def _sha384_hex(data: memoryview) -> str:
    return hashlib.sha384(data).hexdigest()


def _read_full(reader: ReadsInto, view: memoryview) -> int:
    """Fill `view` from `reader` unless EOF comes first; returns the byte count."""
    total = 0
    size = len(view)
    while total < size:
        n = reader.readinto(view[total:])
        if not n:
            break
        total += n
    return total


def encode_bytes(
    data: bytes,
    file_name: str = "",
    *,
    key: bytes | None = None,
    ivs: Iterable[bytes] | None = None,
    layout: Layout = Layout.SORTED,
) -> tuple[list[tuple[str, bytes]], StreamEncoder]:
    """Encode in-memory data: (hash, blob bytes) pairs and the finished encoder. For tests and small files."""
    import io

    enc = StreamEncoder(file_name, key=key, ivs=ivs, layout=layout)
    blobs = [(b.hash, bytes(b.data)) for b in enc.encode(io.BytesIO(data))]
    return blobs, enc
