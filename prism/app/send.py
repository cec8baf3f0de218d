"""`prism send` and `prism sendblob`: encode a file into a stream and reflect it.

The sd blob lists every content blob's hash, so it exists only after a pass over the whole
file. `send` makes that one pass (encrypting and hashing every blob, and the source hash),
saves the sd blob in the `--sd-cache` directory before any upload, uploads the sd blob, and
then sends only the content blobs the reflector asks for, *never hashed again*: the first
`--spool-mb` (256 MiB) of ciphertext straight from the pass's `BlobSpool`, and any blob past it
as chunk i of the file encrypted again with the stream key and blob i's IV. A second `send` of
the same file reuses the cached sd blob (same key and IVs, so the same blobs, checked against it
during the pass), so an interrupted upload resumes with what the reflector still lacks.

Why an in-memory spool (measured on 200 MB, 2 shared cores of a VM, CPU s per GB): SHA-384
costs 0.8 and is done once per blob and once for the source hash; AES-128-CBC costs 0.6 (CBC
encryption is serial, bound by AES-NI's latency); read() from the page cache 0.08. Encrypting
again at upload time thus costs about 0.7 (1.0-1.1 for the whole upload phase with the socket),
while keeping the pass's ciphertext costs what its memory does: a spool *file* cost 1.1-1.8
(page-cache writes), but one anonymous mapping faulted in by MAP_POPULATE costs 0.27-0.29 (pages
new to the process are the expensive part on this VM; transparent huge pages were worse, 2.0,
as the host had reclaimed them), and the upload from it 0.2-0.3. The pass encrypts straight into
the spool, so nothing is copied. Past the budget, memory stays at a few blob-sized buffers.

A re-encrypted blob is checked by the file's size and mtime instead of its hash: a file changed
since the pass is an error here, and a change that keeps both would be refused by the reflector,
which checks every blob's hash. A spooled blob is the bytes the pass hashed, so needs no check.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass

from prism.app.paths import DirectoryError, ensure_directory
from prism.app.progress import ProgressBar, megabytes
from prism.blob import MAX_BLOB_SIZE, MAX_CHUNK_SIZE
from prism.hostport import AddressError, HostPort, parse_host_port
from prism.reflector.client import ReflectorClient, UploadResult
from prism.stream import SdBlob, SourceChangedError, StreamEncoder
from prism.stream.crypto import BLOCK, BlobCipher, padded_length

log = logging.getLogger("prism.reflector")

DEFAULT_SPOOL_MB = 256
"""`send --spool-mb`: the pass keeps this much of the stream's ciphertext for the upload."""


class SendError(Exception):
    """`send` failed; the message is shown to the user."""


def parse_address(address: str) -> HostPort:
    """`HOST:PORT` or `[v6]:PORT`; SendError says what is wrong."""
    try:
        return parse_host_port(address, what="address")
    except AddressError as e:
        raise SendError(f"bad {e}") from None


def sd_cache_path(cache_dir: str, path: str) -> str:
    return os.path.join(cache_dir, os.path.basename(os.path.abspath(path)) + ".sdblob")


def _write_atomically(path: str, data: bytes) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _check_sd_cache(sd_cache: str | None) -> None:
    if sd_cache:
        try:
            ensure_directory(sd_cache, "--sd-cache")
        except DirectoryError as e:
            raise SendError(str(e)) from None


@dataclass
class PreparedStream:
    sd_hash: str
    sd_bytes: bytes
    sd: SdBlob
    source_hash: str
    source_stat: tuple[int, int] | None = None
    """The file's (size, mtime_ns) when the pass read it."""
    spool: BlobSpool | None = None
    """The pass's ciphertext of the first blobs (`spool_bytes`); the caller closes it."""


class BlobSpool:
    """The encoding pass's ciphertext of a stream's first blobs, kept for the upload.

    One anonymous mapping of at most `budget` bytes, faulted in by the kernel in one go
    (MAP_POPULATE) rather than page by page, holds blob i at offset i * MAX_BLOB_SIZE; blobs
    past the budget are not kept. `slot` is the encoder's `output`: the pass encrypts straight
    into the spool, so a kept blob is never copied or encrypted again.
    """

    def __init__(self, budget: int, file_size: int) -> None:
        self.size = _spool_size(budget, file_size)
        self._map: mmap.mmap | None = None
        if self.size:
            flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
            self._map = mmap.mmap(-1, self.size, flags=flags)
        self._lengths: dict[int, int] = {}

    def slot(self, blob_num: int, length: int) -> memoryview | None:
        """Where the pass writes blob `blob_num` (`length` bytes), or None if it does not fit."""
        start = blob_num * MAX_BLOB_SIZE
        if self._map is None or start + length > self.size:
            return None
        self._lengths[blob_num] = length
        return memoryview(self._map)[start : start + length]

    def get(self, blob_num: int) -> memoryview | None:
        """The kept ciphertext of blob `blob_num`, or None if it was not kept."""
        length = self._lengths.get(blob_num)
        if length is None or self._map is None:
            return None
        start = blob_num * MAX_BLOB_SIZE
        return memoryview(self._map)[start : start + length]

    @property
    def kept(self) -> int:
        return len(self._lengths)

    def close(self) -> None:
        self._lengths.clear()
        if self._map is not None:
            spool, self._map = self._map, None
            try:
                spool.close()
            except BufferError:
                pass  # a view is still alive somewhere: the mapping goes when it does


def _spool_size(budget: int, file_size: int) -> int:
    """Bytes of whole blob slots, from the first, that fit in `budget` (no more than the file needs)."""
    full, rest = divmod(file_size, MAX_CHUNK_SIZE)
    slots = min(budget // MAX_BLOB_SIZE, full)
    size = slots * MAX_BLOB_SIZE
    if slots == full and rest and size + padded_length(rest) <= budget:
        size += padded_length(rest)
    return size


def prepare_stream(path: str, sd_cache: str | None = None, spool_bytes: int = 0) -> PreparedStream:
    """The stream's sd blob and the file's hash, from one encoding pass over the file.

    With a cached sd blob the pass re-encodes with its key and IVs and checks every blob against
    it, so a file that changed since is an error rather than a stream that does not match.
    With `spool_bytes`, the first blobs' ciphertext is kept in a BlobSpool of that budget.
    """
    cache_file = sd_cache_path(sd_cache, path) if sd_cache else None
    _check_sd_cache(sd_cache)
    cached: bytes | None = None
    if cache_file and os.path.exists(cache_file):
        with open(cache_file, "rb") as f:
            cached = f.read()
        try:
            encoder = StreamEncoder.from_sd_bytes(cached)
        except ValueError as e:
            raise SendError(f"cached sd blob {cache_file} is invalid ({e}); delete it to start over") from e
        log.info("reusing cached sd blob %s", cache_file)
    else:
        encoder = StreamEncoder(path)
    spool = BlobSpool(spool_bytes, os.path.getsize(path)) if spool_bytes > 0 else None
    try:
        return _encode_pass(path, encoder, cached, cache_file, spool)
    except BaseException:
        if spool is not None:
            spool.close()
        raise


def _encode_pass(
    path: str, encoder: StreamEncoder, cached: bytes | None, cache_file: str | None, spool: BlobSpool | None
) -> PreparedStream:
    try:
        with open(path, "rb", buffering=0) as f:
            before = _identity(f.fileno())
            for _blob in encoder.encode(f, spool.slot if spool is not None else None):
                pass
            if _identity(f.fileno()) != before:
                raise SourceChangedError(f"{path} changed while it was being encoded")
    except SourceChangedError as e:
        if cached is None:
            raise SendError(str(e)) from e
        raise SendError(
            f"{e} (cached sd blob {cache_file}: delete it to send the file as a new stream)"
        ) from e
    sd_bytes = encoder.sd_bytes
    if cache_file and cached is None:
        try:
            _write_atomically(cache_file, sd_bytes)
        except OSError as e:
            raise SendError(f"--sd-cache: cannot save the sd blob as {cache_file}: {e.strerror}") from None
    return PreparedStream(encoder.sd_hash, sd_bytes, encoder.sd_blob, encoder.source_hash, before, spool)


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_size, st.st_mtime_ns


class BlobProducer:
    """Blob i of the stream: from the pass's `spool` if it kept it, else chunk i of the file
    re-encrypted on demand through one reused cipher and buffer.

    A re-encrypted blob is checked, with `unchanged_since` (the file's size and mtime at the
    encoding pass), by that identity instead of by hashing it again (`send`); without, by its hash
    (`publish`). A spooled blob is the very bytes the pass hashed.

    One caller at a time: a re-encrypted blob is a view of the producer's buffer, valid until the
    next call (the reflector client sends each blob before asking for the next), so no 2 MiB
    copy is made per blob.
    """

    def __init__(
        self,
        path: str,
        sd: SdBlob,
        unchanged_since: tuple[int, int] | None = None,
        spool: BlobSpool | None = None,
    ) -> None:
        self.path = path
        self.sd = sd
        self.unchanged_since = unchanged_since
        self.spool = spool
        self._by_hash = {b.blob_hash: b for b in sd.content_blobs}
        self._cipher = BlobCipher(sd.key_bytes)
        self._buf: bytearray | None = None  # allocated when a blob is not in the spool
        self._file = open(path, "rb", buffering=0)

    def close(self) -> None:
        self._file.close()

    def blob(self, blob_hash: str) -> bytes | memoryview:
        info = self._by_hash[blob_hash]
        if self.spool is not None and (kept := self.spool.get(info.blob_num)) is not None:
            return kept
        fd = self._file.fileno()
        if self._buf is None:
            self._buf = bytearray(MAX_CHUNK_SIZE + BLOCK)
        n = os.preadv(fd, [memoryview(self._buf)[:MAX_CHUNK_SIZE]], info.blob_num * MAX_CHUNK_SIZE)
        data = self._cipher.encrypt_padded(info.iv_bytes, self._buf, n)
        if self.unchanged_since is not None:
            same = len(data) == info.length and _identity(fd) == self.unchanged_since
        else:
            same = len(data) == info.length and hashlib.sha384(data).hexdigest() == blob_hash
        if not same:
            raise SourceChangedError(
                f"blob {info.blob_num} of {self.path} no longer matches the sd blob: the file changed"
            )
        return data

    async def get(self, blob_hash: str) -> bytes | memoryview:
        if self.spool is not None and (kept := self.spool.get(self._by_hash[blob_hash].blob_num)) is not None:
            return kept  # no file read, no thread
        return await asyncio.to_thread(self.blob, blob_hash)


def upload_progress(total_blobs: int, enabled: bool | None = None) -> ProgressBar:
    """Blobs done, bytes sent and rate on one line on stderr, only when stderr is a terminal."""
    return ProgressBar(_upload_status, total=total_blobs, tty=enabled)


def _upload_status(bar: ProgressBar) -> str:
    return f"{bar.done}/{bar.total} blobs, {megabytes(bar.bytes)} sent, {bar.rate / 1e6:.1f} MB/s"


async def send_file(
    address: str,
    path: str,
    *,
    sd_cache: str | None = None,
    version: int = 1,
    io_timeout: float = 180.0,
    progress: Callable[[int, int], None] | None = None,
    spool_mb: int = DEFAULT_SPOOL_MB,
) -> tuple[PreparedStream, str, UploadResult]:
    """Encode `path` and upload the stream; returns (stream, source hash, upload counts).

    The pass keeps up to `spool_mb` MiB of ciphertext for the upload (0: re-encrypt every blob).
    """
    host, port = parse_address(address)
    if not os.path.isfile(path):
        raise SendError(f"{path}: not a readable file")
    if spool_mb < 0:
        raise SendError("--spool-mb must be 0 or more")
    stream = await asyncio.to_thread(prepare_stream, path, sd_cache, spool_mb << 20)
    producer = BlobProducer(path, stream.sd, stream.source_stat, stream.spool)
    try:
        hashes = stream.sd.content_hashes
        async with ReflectorClient(
            host, port, version=version, timeout=io_timeout, on_progress=progress
        ) as client:
            result = await client.upload_stream(stream.sd_hash, stream.sd_bytes, producer.get, hashes)
            missing = await client.still_needed(stream.sd_hash, stream.sd_bytes)
    finally:
        producer.close()
        if stream.spool is not None:
            stream.spool.close()
    if missing:
        raise SendError(
            f"the reflector still lacks {len(missing)} blob(s) of stream {stream.sd_hash[:16]} after the "
            "upload; run the same send again to retry"
            + (f" (with --sd-cache {sd_cache} it sends only those)" if sd_cache else "")
        )
    return stream, stream.source_hash, result


async def send_blob_or_stream(
    address: str, path: str | None, *, version: int = 1, io_timeout: float = 180.0
) -> dict[str, object]:
    """`sendblob`: one random 1024-byte blob, or the whole stream of `path` (sd blob first)."""
    host, port = parse_address(address)
    if path is None:
        data = os.urandom(1024)
        blob_hash = hashlib.sha384(data).hexdigest()
        async with ReflectorClient(host, port, version=version, timeout=io_timeout) as client:
            result = await client.send_blob(blob_hash, data)
        return {"blob_hash": blob_hash, "sent": result.sent, "already_present": result.already_present}
    stream, source_hash, result = await send_file(address, path, version=version, io_timeout=io_timeout)
    return {
        "sd_hash": stream.sd_hash,
        "source_hash": source_hash,
        "blobs_sent": result.sent,
        "already_present": result.already_present,
    }
