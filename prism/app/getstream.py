"""`prism getstream`: download a stream from one peer, verify it, decrypt it into a file.

Order of work: the sd blob (its hash and its stream hash are checked), then the content blobs,
several in flight at once, each checked against its hash and its length from the sd blob, then
decrypted and appended in order. Every blob is kept in a blob directory, so a download that is
interrupted resumes without fetching again. The output is written under a temporary name in
the output directory and only gets its final name once complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO, TextIO

from prism.app.paths import DirectoryError, ensure_directory
from prism.app.progress import ProgressBar, duration, megabytes
from prism.blob import sha384_hex, validate_hash
from prism.peer.client import (
    DEFAULT_TIMEOUT,
    PeerClient,
    PeerConnectError,
    PeerError,
    PeerShortReadError,
    PeerTimeoutError,
)
from prism.store.base import BlobNotFound
from prism.store.disk import DiskBlob, DiskStore, scan_blobs
from prism.store.peer import parse_address
from prism.stream import SdBlob, SdBlobError, StreamDecoder, StreamError, sanitize_file_name
from prism.stream.sd import BlobInfo

log = logging.getLogger("prism.peer")

PARTIAL_SUFFIX = ".partial"
_RETRYABLE = (PeerTimeoutError, PeerShortReadError, PeerConnectError)


class GetStreamError(Exception):
    """The stream could not be downloaded; the message says which step failed and why."""


@dataclass(frozen=True, slots=True)
class GetStreamResult:
    path: str
    size: int
    sd_hash: str
    blobs_downloaded: int
    blobs_from_cache: int


ProgressCallback = Callable[[int, int], None]
"""progress(bytes_done, bytes_total), called after each content blob."""


DEFAULT_BLOB_CACHE_BYTES = 2 << 30
"""How much the blob directory keeps between downloads (2 GiB); the oldest blobs go first."""


def blobs_to_trim(blobs: Iterable[DiskBlob], limit: int) -> list[DiskBlob]:
    """The oldest blobs to remove so the rest fit in `limit` bytes (pure; 0 means no limit)."""
    ordered = sorted(blobs, key=lambda b: b.stamp, reverse=True)
    kept = 0
    trim = []
    for blob in ordered:
        kept += blob.size
        if limit and kept > limit:
            trim.append(blob)
    return trim


def trim_blob_dir(root: str, limit: int) -> tuple[int, int]:
    """Remove the oldest blobs of a getstream blob directory beyond `limit` bytes: (blobs, bytes)."""
    if not os.path.isdir(root):
        return 0, 0
    removed = freed = 0
    for blob in blobs_to_trim(scan_blobs(root), limit):
        try:
            os.unlink(blob.path)
        except FileNotFoundError:
            continue
        removed += 1
        freed += blob.size
    return removed, freed


def default_blob_dir() -> str:
    """`$XDG_CACHE_HOME/prism/blobs`, else `~/.cache/prism/blobs`."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "prism", "blobs")


def output_file_name(sd: SdBlob, now: datetime.datetime | None = None) -> str:
    """The sd blob's suggested name, sanitized; `stream_<UTC timestamp>` when nothing safe is left."""
    fallback = "stream_" + (now or datetime.datetime.now(datetime.UTC)).strftime("%Y%m%d_%H%M%S")
    try:
        name = sanitize_file_name(sd.file_name)
    except ValueError:
        return fallback
    # Belt and braces: whatever the sanitizer lets through must be one plain name.
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        return fallback
    if name.startswith("."):
        name = name.lstrip(".") or fallback  # never a hidden file (nor a partial file's name)
    return name


def _candidates(name: str) -> list[str]:
    stem, ext = os.path.splitext(name)
    return [name] + [f"{stem}_{i}{ext}" for i in range(1, 1000)]


def publish(tmp_path: str, out_dir: str, name: str) -> str:
    """Give the finished temporary file its final name in `out_dir`, never replacing a file."""
    out_real = os.path.realpath(out_dir)
    for candidate in _candidates(name):
        final = os.path.join(out_real, candidate)
        if os.path.dirname(os.path.realpath(final)) != out_real:
            raise GetStreamError(f"refusing to write outside {out_dir}: {candidate!r}")
        try:
            os.link(tmp_path, final)  # fails if the name exists: no race with another writer
        except FileExistsError:
            continue
        except OSError:
            if os.path.lexists(final):
                continue
            os.rename(tmp_path, final)
            return final
        os.unlink(tmp_path)
        return final
    raise GetStreamError(f"no free file name for {name!r} in {out_dir}")


class _BlobSource:
    """Blobs from the blob directory if present and intact, else from the peer (then cached)."""

    def __init__(self, client: PeerClient, cache: DiskStore, retries: int = 2) -> None:
        self.client = client
        self.cache = cache
        self.retries = retries
        self.downloaded = 0
        self.from_cache = 0

    async def get(self, blob_hash: str, expected_length: int | None) -> bytes:
        data = self._cached(blob_hash, expected_length)
        if data is not None:
            self.from_cache += 1
            return data
        for attempt in range(self.retries + 1):
            try:
                data = await self.client.get(blob_hash, expected_length)
                break
            except _RETRYABLE as e:
                if attempt == self.retries:
                    raise
                log.info("retrying %s after: %s", blob_hash[:8], e)
                await asyncio.sleep(0.2 * (attempt + 1))
        assert data is not None
        await self.cache.put(blob_hash, data)
        self.downloaded += 1
        return data

    def _cached(self, blob_hash: str, expected_length: int | None) -> bytes | None:
        path = self.cache.path_of(blob_hash)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        if sha384_hex(data) == blob_hash and (expected_length is None or len(data) == expected_length):
            return data
        log.warning("cached blob %s is damaged: fetching it again", blob_hash[:8])
        with contextlib.suppress(OSError):
            os.unlink(path)
        return None


async def get_stream(
    address: str,
    sd_hash: str,
    out_dir: str = ".",
    blob_dir: str | None = None,
    *,
    peer_timeout: float = DEFAULT_TIMEOUT,
    parallel: int = 4,
    progress: ProgressCallback | None = None,
    blob_cache_bytes: int = DEFAULT_BLOB_CACHE_BYTES,
) -> GetStreamResult:
    """Download, verify and decrypt the stream `sd_hash` from the peer at `address` into `out_dir`.

    `out_dir` is created if missing. Afterwards the blob directory is trimmed, oldest blobs first,
    to `blob_cache_bytes` (0: kept whole).
    """
    try:
        validate_hash(sd_hash)
        host, port = parse_address(address)
    except ValueError as e:
        raise GetStreamError(str(e)) from None
    if not os.path.isdir(out_dir):
        log.info("creating output directory %s", out_dir)
    try:
        ensure_directory(out_dir, "--out")
    except DirectoryError as e:
        raise GetStreamError(str(e)) from None
    cache = DiskStore(blob_dir or default_blob_dir())
    client = PeerClient(host, port, peer_timeout, max_connections=max(1, parallel))
    source = _BlobSource(client, cache)
    try:
        sd = await _fetch_sd(source, address, sd_hash)
        final, size = await _write_stream(sd, sd_hash, source, out_dir, parallel, progress)
    finally:
        await client.close()
    removed, freed = await asyncio.to_thread(trim_blob_dir, cache.root, blob_cache_bytes)
    if removed:
        log.info("blob cache %s: removed the %d oldest blobs (%d bytes)", cache.root, removed, freed)
    log.info(
        "wrote %s (%d bytes; %d blobs downloaded, %d from the blob cache)",
        final,
        size,
        source.downloaded,
        source.from_cache,
    )
    return GetStreamResult(final, size, sd_hash, source.downloaded, source.from_cache)


async def _fetch_sd(source: _BlobSource, address: str, sd_hash: str) -> SdBlob:
    try:
        sd_bytes = await source.get(sd_hash, None)
    except BlobNotFound:
        raise GetStreamError(f"{address} does not have the sd blob {sd_hash}") from None
    except PeerError as e:
        raise GetStreamError(f"could not get the sd blob: {e}") from None
    try:
        return SdBlob.parse(sd_bytes)
    except SdBlobError as e:
        raise GetStreamError(f"sd blob {sd_hash[:8]} is not a valid stream descriptor: {e}") from None


async def _write_stream(
    sd: SdBlob,
    sd_hash: str,
    source: _BlobSource,
    out_dir: str,
    parallel: int,
    progress: ProgressCallback | None,
) -> tuple[str, int]:
    """Decrypt the stream into a partial file in `out_dir`, then publish it: (path, size)."""
    name = output_file_name(sd)
    log.info(
        "stream %s: %r, %d content blobs, %d bytes encrypted",
        sd_hash[:8],
        name,
        len(sd.content_blobs),
        sd.stream_size,
    )
    fd, tmp_path = tempfile.mkstemp(dir=out_dir, prefix=f".{name[:100]}.", suffix=PARTIAL_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 is for the partial file only
            size = await _download_content(sd, source, out, parallel, progress)
            out.flush()
            os.fsync(out.fileno())
        return publish(tmp_path, out_dir, name), size
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_path)
        raise


async def _download_content(
    sd: SdBlob,
    source: _BlobSource,
    out: BinaryIO,
    parallel: int,
    progress: ProgressCallback | None,
) -> int:
    infos = sd.content_blobs
    total = sd.stream_size
    decoder = StreamDecoder(sd)
    window = max(1, parallel) * 2  # blobs fetched ahead of the writer (bounded memory)
    tasks: dict[int, asyncio.Task[bytes]] = {}

    def fetch(i: int) -> None:
        info = infos[i]
        assert info.blob_hash is not None
        tasks[i] = asyncio.ensure_future(source.get(info.blob_hash, info.length))

    def write(info: BlobInfo, data: bytes) -> int:
        # `source.get` has checked the hash and the length already (peer client or cache).
        plain = decoder.decrypt(info, data, verify=False)
        out.write(plain)
        return len(plain)

    written = 0
    done = 0
    try:
        for i in range(min(window, len(infos))):
            fetch(i)
        for i, info in enumerate(infos):
            try:
                data = await tasks.pop(i)
            except BlobNotFound:
                raise GetStreamError(
                    f"the peer does not have blob {info.blob_num} ({info.blob_hash})"
                ) from None
            except PeerError as e:
                raise GetStreamError(f"blob {info.blob_num}: {e}") from None
            if i + window < len(infos):
                fetch(i + window)
            try:
                written += await asyncio.to_thread(write, info, data)
            except StreamError as e:
                raise GetStreamError(f"blob {info.blob_num} does not decrypt: {e}") from None
            done += info.length
            if progress is not None:
                progress(done, total)
    finally:
        for task in tasks.values():
            task.cancel()
        for task in tasks.values():
            with contextlib.suppress(BaseException):
                await task
    return written


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def download_progress(stream: TextIO | None = None, *, tty: bool | None = None) -> ProgressBar:
    """Bytes, rate and ETA on a terminal; a log line per ~10% otherwise."""
    return ProgressBar(_download_status, stream=stream, tty=tty, on_tenth=_log_download)


def _download_status(bar: ProgressBar) -> str:
    return (
        f"{megabytes(bar.done)} / {megabytes(bar.total)}  {megabytes(bar.rate)}/s  ETA {duration(bar.eta)} "
    )


def _log_download(bar: ProgressBar) -> None:
    log.info("downloaded %s of %s (%s/s)", megabytes(bar.done), megabytes(bar.total), megabytes(bar.rate))
