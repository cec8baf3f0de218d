"""`prism getstream` logic in-process: verification, resume, names, partial files, progress."""

import datetime
import hashlib
import io
import os

import pytest

from prism.app.getstream import (
    GetStreamError,
    blobs_to_trim,
    download_progress,
    get_stream,
    output_file_name,
)
from prism.blob import sha384_hex
from prism.peer.server import PeerServer
from prism.store.base import BlobNotFound, BlobRef
from prism.store.disk import DiskBlob, DiskStore, scan_blobs
from prism.stream import SdBlob, encode_bytes
from prism.stream.names import hex_name
from tests.helpers import random_blob
from tests.peer.helpers import running_server


def put_stream(store: DiskStore, data: bytes, name: str) -> tuple[str, list[str]]:
    blobs, enc = encode_bytes(data, name)
    for h, blob in blobs:
        store.write_blob(h, blob)
    store.write_blob(enc.sd_hash, enc.sd_bytes)
    return enc.sd_hash, [h for h, _ in blobs]


def put_renamed_stream(store: DiskStore, data: bytes, suggested: str) -> str:
    """The same stream with a hostile suggested_file_name (an encoder would have sanitized it)."""
    blobs, enc = encode_bytes(data, "x.bin")
    sd = enc.sd_blob
    renamed = SdBlob.create(sd.stream_name, hex_name(suggested), sd.key, sd.blobs)
    sd_bytes = renamed.serialize()
    for h, blob in blobs:
        store.write_blob(h, blob)
    store.write_blob(sha384_hex(sd_bytes), sd_bytes)
    return sha384_hex(sd_bytes)


@pytest.fixture
def dirs(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    return DiskStore(tmp_path / "served"), str(out), str(tmp_path / "blobcache")


async def test_download_verifies_decrypts_and_names(dirs) -> None:
    store, out, cache = dirs
    data = os.urandom(3 * 2097151 + 5)
    sd_hash, _ = put_stream(store, data, "movie.mp4")
    seen_partial = []

    def progress(done: int, total: int) -> None:
        names = os.listdir(out)
        assert "movie.mp4" not in names  # the final name only appears when complete
        seen_partial.extend(n for n in names if n.endswith(".partial"))

    async with running_server(store) as server:
        result = await get_stream(f"127.0.0.1:{server.port}", sd_hash, out, cache, progress=progress)
    assert result.path == os.path.join(os.path.realpath(out), "movie.mp4")
    assert open(result.path, "rb").read() == data and result.size == len(data)
    assert result.blobs_downloaded == 5 and result.blobs_from_cache == 0
    assert seen_partial and os.listdir(out) == ["movie.mp4"]


async def test_existing_file_is_not_replaced(dirs) -> None:
    store, out, cache = dirs
    sd_hash, _ = put_stream(store, b"new content", "notes.txt")
    with open(os.path.join(out, "notes.txt"), "wb") as f:
        f.write(b"mine")
    async with running_server(store) as server:
        result = await get_stream(f"127.0.0.1:{server.port}", sd_hash, out, cache)
    assert os.path.basename(result.path) == "notes_1.txt"
    assert open(os.path.join(out, "notes.txt"), "rb").read() == b"mine"


class _Flaky:
    """Wraps a store; pretends some blobs are missing (an interrupted download)."""

    def __init__(self, inner: DiskStore, hidden: set[str]) -> None:
        self.inner = inner
        self.name = "flaky"
        self.hidden = hidden

    async def has(self, blob_hash: str) -> bool:
        return blob_hash not in self.hidden and await self.inner.has(blob_hash)

    async def get(self, blob_hash: str) -> BlobRef:
        if blob_hash in self.hidden:
            raise BlobNotFound(blob_hash)
        return await self.inner.get(blob_hash)


async def test_interrupted_download_resumes_from_the_blob_dir(dirs) -> None:
    store, out, cache = dirs
    data = os.urandom(4 * 2097151)
    sd_hash, hashes = put_stream(store, data, "big.bin")
    server = PeerServer(_Flaky(store, {hashes[3]}), "127.0.0.1", 0)  # type: ignore[arg-type]
    await server.start()
    try:
        with pytest.raises(GetStreamError, match="does not have blob 3"):
            await get_stream(f"127.0.0.1:{server.port}", sd_hash, out, cache, parallel=1)
    finally:
        await server.stop()
    assert os.listdir(out) == []  # neither a final nor a partial file is left behind
    async with running_server(store) as server:
        result = await get_stream(f"127.0.0.1:{server.port}", sd_hash, out, cache)
        assert server.stats.downloads == 1  # only the blob that was missing
    assert result.blobs_downloaded == 1 and result.blobs_from_cache == 4
    assert hashlib.sha384(open(result.path, "rb").read()).digest() == hashlib.sha384(data).digest()


async def test_damaged_cached_blob_is_fetched_again(dirs) -> None:
    store, out, cache = dirs
    sd_hash, hashes = put_stream(store, os.urandom(1000), "a.bin")
    async with running_server(store) as server:
        await get_stream(f"127.0.0.1:{server.port}", sd_hash, out, cache)
        with open(DiskStore(cache).path_of(hashes[0]), "r+b") as f:
            f.write(b"\x00\x00")
        result = await get_stream(f"127.0.0.1:{server.port}", sd_hash, out, cache)
    assert result.blobs_downloaded == 1 and result.blobs_from_cache == 1


async def test_tampered_blob_on_the_server_fails_cleanly(dirs) -> None:
    store, out, cache = dirs
    sd_hash, hashes = put_stream(store, os.urandom(5000), "a.bin")
    with open(store.path_of(hashes[0]), "r+b") as f:
        f.write(b"evil")
    async with running_server(store) as server:
        with pytest.raises(GetStreamError, match="hash"):
            await get_stream(f"127.0.0.1:{server.port}", sd_hash, out, cache)
    assert os.listdir(out) == []
    assert not os.path.exists(DiskStore(cache).path_of(hashes[0]))  # never cached


async def test_sd_blob_with_a_wrong_stream_hash_is_refused(dirs) -> None:
    store, out, cache = dirs
    _, enc = encode_bytes(b"data", "a.bin")
    bad = enc.sd_bytes.replace(enc.sd_blob.stream_hash.encode(), b"0" * 96)
    store.write_blob(sha384_hex(bad), bad)
    async with running_server(store) as server:
        with pytest.raises(GetStreamError, match="not a valid stream descriptor"):
            await get_stream(f"127.0.0.1:{server.port}", sha384_hex(bad), out, cache)


@pytest.mark.parametrize(
    ("suggested", "expected"),
    [
        ("../../escape.txt", "escape.txt"),
        ("/etc/passwd", "passwd"),
        ("..", None),
        ("a/../..", None),
        ("CON", None),
        ("   ", None),
        ("what?*.txt", "what.txt"),
        (".hidden", "hidden"),
    ],
)
async def test_file_names_never_leave_the_output_dir(dirs, suggested: str, expected: str | None) -> None:
    store, out, cache = dirs
    sd_hash = put_renamed_stream(store, b"payload", suggested)
    async with running_server(store) as server:
        result = await get_stream(f"127.0.0.1:{server.port}", sd_hash, out, cache)
    assert os.path.dirname(result.path) == os.path.realpath(out)
    name = os.path.basename(result.path)
    if expected is None:
        assert name.startswith("stream_") and len(name) == len("stream_20250101_120000")
    else:
        assert name == expected
    assert open(result.path, "rb").read() == b"payload"


def test_fallback_name_is_a_utc_timestamp() -> None:
    _, enc = encode_bytes(b"", "")
    when = datetime.datetime(2025, 3, 4, 5, 6, 7, tzinfo=datetime.UTC)
    assert output_file_name(enc.sd_blob, when) == "stream_20250304_050607"


async def test_clear_errors(dirs) -> None:
    store, out, cache = dirs
    with pytest.raises(GetStreamError, match="invalid blob hash"):
        await get_stream("127.0.0.1:1", "abc", out, cache)
    with pytest.raises(GetStreamError, match="not HOST:PORT"):
        await get_stream("localhost", "a" * 96, out, cache)
    async with running_server(store) as server:
        with pytest.raises(GetStreamError, match="does not have the sd blob"):
            await get_stream(f"127.0.0.1:{server.port}", "a" * 96, out, cache)
    with pytest.raises(GetStreamError, match="could not get the sd blob"):
        await get_stream(f"127.0.0.1:{server.port}", "a" * 96, out, cache, peer_timeout=1)


def test_progress_bar_on_a_terminal_and_in_logs(caplog) -> None:
    screen = io.StringIO()
    bar = download_progress(screen, tty=True)
    bar.update(1_000_000, 4_000_000)
    bar.update(4_000_000, 4_000_000)
    bar.finish()
    text = screen.getvalue()
    assert "\r[" in text and "4.0 MB / 4.0 MB" in text and "MB/s" in text and "ETA" in text
    assert text.endswith("\n")
    caplog.set_level("INFO", "prism.peer")
    plain = download_progress(io.StringIO(), tty=False)
    for done in range(0, 4_000_001, 100_000):
        plain.update(done, 4_000_000)
    lines = [r.getMessage() for r in caplog.records if "downloaded" in r.getMessage()]
    assert 5 <= len(lines) <= 12


async def test_missing_out_dir_is_created_and_the_blob_cache_is_trimmed_oldest_first(
    dirs, tmp_path, caplog
) -> None:
    store, _out, cache = dirs
    old = DiskStore(cache)
    stale = [random_blob(500_000) for _ in range(3)]
    for i, (h, d) in enumerate(stale):
        old.write_blob(h, d)
        os.utime(old.path_of(h), (1_000_000 + i, 1_000_000 + i))
    data = os.urandom(2 * 2097151)
    sd_hash, _ = put_stream(store, data, "two.bin")
    out = tmp_path / "new" / "dir"
    caplog.set_level("INFO", logger="prism.peer")
    async with running_server(store) as server:
        limit = 2 * 2097152 + 600_000  # this stream and the newest stale blob
        result = await get_stream(
            f"127.0.0.1:{server.port}", sd_hash, str(out), cache, blob_cache_bytes=limit
        )
    assert open(result.path, "rb").read() == data
    assert f"creating output directory {out}" in caplog.text
    kept = {b.hash for b in scan_blobs(cache)}
    assert stale[2][0] in kept and stale[0][0] not in kept and stale[1][0] not in kept
    assert sd_hash in kept


async def test_out_that_cannot_be_a_directory_names_the_flag(dirs, tmp_path) -> None:
    _store, _out, cache = dirs
    a_file = tmp_path / "f"
    a_file.write_text("x")
    with pytest.raises(GetStreamError, match="--out"):
        await get_stream("127.0.0.1:1", "ab" * 48, str(a_file / "sub"), cache)


def test_blobs_to_trim_keeps_the_newest_within_the_limit() -> None:
    blobs = [DiskBlob(f"h{i}", 100, float(i), f"/p{i}") for i in range(5)]
    assert [b.hash for b in blobs_to_trim(blobs, 250)] == ["h2", "h1", "h0"]
    assert blobs_to_trim(blobs, 0) == []
    assert blobs_to_trim(blobs, 500) == []
