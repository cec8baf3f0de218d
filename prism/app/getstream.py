"""`prism getstream`: download a stream from its peers, verify it, decrypt it into a file.

Peers are given (`ADDRESS:PORT`, `--peer`) or found on the DHT, as lbrynet does: the sd hash's peers,
then a content blob's own peers when none of those has it. Blobs come from several peers at once;
a peer that fails, times out or sends a wrong blob is dropped (`PeerPool`).

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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import BinaryIO, TextIO

from prism.app.paths import DirectoryError, ensure_directory
from prism.app.progress import ProgressBar, duration, megabytes
from prism.blob import sha384_hex, validate_hash
from prism.dht.config import DEFAULT_SEEDS, DhtConfig
from prism.dht.node import DhtNode
from prism.hostport import HostPort, parse_host_port
from prism.peer.client import (
    DEFAULT_TIMEOUT,
    PeerBlobNotFound,
    PeerClient,
    PeerConnectError,
    PeerError,
    PeerShortReadError,
    PeerTimeoutError,
)
from prism.store.base import BlobNotFound
from prism.store.disk import DiskBlob, DiskStore, scan_blobs
from prism.stream import SdBlob, SdBlobError, StreamDecoder, StreamError, sanitize_file_name
from prism.stream.sd import BlobInfo

log = logging.getLogger("prism.peer")

PARTIAL_SUFFIX = ".partial"
_RETRYABLE = (PeerTimeoutError, PeerShortReadError, PeerConnectError)
DHT_JOIN_TIMEOUT = 15.0


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


@dataclass(slots=True)
class PeerCount:
    """Peers a download uses right now (shown by the progress bar)."""

    value: int = 0


PeerFinder = Callable[[str], Awaitable[list[HostPort]]]
"""Who announced a blob hash (e.g. an iterative findValue on the DHT)."""


class NoPeerError(PeerError):
    """Every peer that might have the blob was dropped."""


class PeerPool:
    """The peers a stream comes from: each blob from the least busy peer that may have it.

    A peer that lacks a blob is not asked for it again; a peer that sends a wrong blob (bad hash, wrong
    length, a malformed answer) is dropped at once, one that fails or times out `max_failures` times in a
    row too, and the blob goes to the next peer. When no peer is left for a blob, `finder` (the DHT) is
    asked once for that blob's peers.
    """

    def __init__(
        self,
        timeout: float,
        parallel: int,
        finder: PeerFinder | None = None,
        count: PeerCount | None = None,
        max_failures: int = 3,
    ) -> None:
        self.timeout = timeout
        self.parallel = parallel
        self.finder = finder
        self.count = count or PeerCount()
        self.max_failures = max_failures
        self.clients: dict[str, PeerClient] = {}
        self.dropped: dict[str, str] = {}
        """Address -> why it was dropped."""
        self._lacks: dict[str, set[str]] = {}
        self._failures: dict[str, int] = {}
        self._busy: dict[str, int] = {}
        self._searched: set[str] = set()
        self._closing: set[asyncio.Task[None]] = set()

    def add(self, host: str, port: int) -> bool:
        """Use this peer (False if known already, or dropped)."""
        client = PeerClient(host, port, self.timeout, max_connections=self.parallel)
        address = client.address
        if address in self.clients or address in self.dropped:
            return False
        self.clients[address] = client
        self._lacks[address], self._failures[address], self._busy[address] = set(), 0, 0
        self.count.value = len(self.clients)
        log.info("peer %s added", address)
        return True

    def _pick(self, blob_hash: str) -> PeerClient | None:
        able = [a for a in self.clients if blob_hash not in self._lacks[a]]
        return self.clients[min(able, key=lambda a: self._busy[a])] if able else None

    def _drop(self, address: str, reason: str) -> None:
        log.warning("dropping peer %s: %s", address, reason)
        self.dropped[address] = reason
        client = self.clients.pop(address)
        self.count.value = len(self.clients)
        task = asyncio.get_running_loop().create_task(client.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _discover(self, blob_hash: str) -> bool:
        """Ask the finder for this blob's peers (once per blob); True if a new peer was added."""
        if self.finder is None or blob_hash in self._searched:
            return False
        self._searched.add(blob_hash)
        found = await self.finder(blob_hash)
        log.info("%d peers announced %s", len(found), blob_hash[:8])
        return sum(self.add(host, port) for host, port in found) > 0

    def _no_peer(self, blob_hash: str) -> PeerError:
        if self.dropped and not self.clients:
            why = "; ".join(f"{a}: {r}" for a, r in self.dropped.items())
            return NoPeerError(f"no peer left for blob {blob_hash[:8]} (dropped {why})")
        return PeerBlobNotFound(blob_hash, ", ".join(self.clients) or "no peer")

    async def get(self, blob_hash: str, expected_length: int | None) -> bytes:
        """The blob, verified, from whichever peer has it."""
        while True:
            client = self._pick(blob_hash)
            if client is None:
                if await self._discover(blob_hash):
                    continue
                raise self._no_peer(blob_hash)
            address = client.address
            self._busy[address] += 1
            try:
                data = await client.get(blob_hash, expected_length)
            except PeerBlobNotFound:
                self._lacks[address].add(blob_hash)
                continue
            except _RETRYABLE as e:
                await self._failed(address, e)
                continue
            except PeerError as e:  # a wrong blob, or an answer that makes no sense
                if address in self.clients:
                    self._drop(address, str(e))
                continue
            finally:
                self._busy[address] -= 1
            self._failures[address] = 0
            return data

    async def _failed(self, address: str, error: PeerError) -> None:
        if address not in self.clients:
            return
        self._failures[address] += 1
        if self._failures[address] >= self.max_failures:
            self._drop(address, f"{self._failures[address]} failures in a row, the last: {error}")
        elif len(self.clients) == 1:
            log.info("retrying %s after: %s", address, error)
            await asyncio.sleep(0.2 * self._failures[address])

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


class _BlobSource:
    """Blobs from the blob directory if present and intact, else from the peers (then cached)."""

    def __init__(self, peers: PeerPool, cache: DiskStore) -> None:
        self.peers = peers
        self.cache = cache
        self.downloaded = 0
        self.from_cache = 0

    async def get(self, blob_hash: str, expected_length: int | None) -> bytes:
        data = self._cached(blob_hash, expected_length)
        if data is not None:
            self.from_cache += 1
            return data
        data = await self.peers.get(blob_hash, expected_length)
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


@dataclass(slots=True)
class PeerSources:
    """Where `get_stream` finds peers besides its ADDRESS: fixed addresses, and the DHT."""

    peers: list[HostPort] = field(default_factory=list)
    dht: bool = False
    """Look peers up on the DHT (a throw-away node on a random port)."""
    dht_seeds: list[HostPort] | None = None
    """None: LBRY's standard seeds."""
    allow_private_peers: bool = False


@contextlib.asynccontextmanager
async def _dht_finder(sources: PeerSources) -> AsyncIterator[PeerFinder | None]:
    """A finder over a throw-away DHT node (joined first), or None without the DHT."""
    if not sources.dht:
        yield None
        return
    seeds = sources.dht_seeds
    if seeds is None:
        seeds = [HostPort(h, p) for h, p in DEFAULT_SEEDS]
    node = DhtNode(port=0, seeds=seeds, config=DhtConfig(allow_private_peers=sources.allow_private_peers))
    await node.start()
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(node.joined.wait(), DHT_JOIN_TIMEOUT)
        if node.routing_size() == 0:
            raise GetStreamError("could not join the DHT: no seed node answered (see --dht-seeds)")

        async def find(blob_hash: str) -> list[HostPort]:
            return [HostPort(p.ip, p.tcp_port) for p in await node.find_peers(blob_hash)]

        yield find
    finally:
        await node.stop()


async def get_stream(
    address: str | None,
    sd_hash: str,
    out_dir: str = ".",
    blob_dir: str | None = None,
    *,
    peer_timeout: float = DEFAULT_TIMEOUT,
    parallel: int = 4,
    progress: ProgressCallback | None = None,
    sources: PeerSources | None = None,
    peer_count: PeerCount | None = None,
    blob_cache_bytes: int = DEFAULT_BLOB_CACHE_BYTES,
) -> GetStreamResult:
    """Download, verify and decrypt the stream `sd_hash` into `out_dir`, from the peer at `address` (if
    any) and those of `sources` (fixed ones, and the DHT's).

    `out_dir` is created if missing. Afterwards the blob directory is trimmed, oldest blobs first,
    to `blob_cache_bytes` (0: kept whole).
    """
    sources = sources or PeerSources()
    try:
        validate_hash(sd_hash)
        fixed = list(sources.peers)
        if address is not None:
            fixed.insert(0, parse_host_port(address, what="peer address"))
    except ValueError as e:
        raise GetStreamError(str(e)) from None
    if not os.path.isdir(out_dir):
        log.info("creating output directory %s", out_dir)
    try:
        ensure_directory(out_dir, "--out")
    except DirectoryError as e:
        raise GetStreamError(str(e)) from None
    # The blob directory is a cache: each blob is checked against its hash when read back
    # (`_BlobSource._cached`), so a blob a crash left damaged is fetched again; no fsync per blob.
    cache = DiskStore(blob_dir or default_blob_dir(), durable=False)
    async with _dht_finder(sources) as finder:
        pool = PeerPool(peer_timeout, max(1, parallel), finder, peer_count)
        for host, port in fixed:
            pool.add(host, port)
        source = _BlobSource(pool, cache)
        try:
            sd = await _fetch_sd(source, sd_hash)
            final, size = await _write_stream(sd, sd_hash, source, out_dir, parallel, progress)
        finally:
            await pool.close()
    removed, freed = await asyncio.to_thread(trim_blob_dir, cache.root, blob_cache_bytes)
    if removed:
        log.info("blob cache %s: removed the %d oldest blobs (%d bytes)", cache.root, removed, freed)
    log.info(
        "wrote %s (%d bytes; %d blobs downloaded, %d from the blob cache; peers dropped: %s)",
        final,
        size,
        source.downloaded,
        source.from_cache,
        ", ".join(pool.dropped) or "none",
    )
    return GetStreamResult(final, size, sd_hash, source.downloaded, source.from_cache)


async def _fetch_sd(source: _BlobSource, sd_hash: str) -> SdBlob:
    try:
        sd_bytes = await source.get(sd_hash, None)
    except BlobNotFound as e:
        raise GetStreamError(f"no peer has the sd blob {sd_hash} ({e})") from None
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
                raise GetStreamError(f"no peer has blob {info.blob_num} ({info.blob_hash})") from None
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


def download_progress(
    stream: TextIO | None = None, *, tty: bool | None = None, peers: PeerCount | None = None
) -> ProgressBar:
    """Bytes, rate, ETA (and the peer count) on a terminal; a log line per ~10% otherwise."""

    def status(bar: ProgressBar) -> str:
        line = f"{megabytes(bar.done)} / {megabytes(bar.total)}  {megabytes(bar.rate)}/s  "
        line += f"ETA {duration(bar.eta)} "
        return line if peers is None else f"{line} {peers.value} peers "

    return ProgressBar(status, stream=stream, tty=tty, on_tenth=_log_download)


def _log_download(bar: ProgressBar) -> None:
    log.info("downloaded %s of %s (%s/s)", megabytes(bar.done), megabytes(bar.total), megabytes(bar.rate))
