"""`prism upload PATH`: put a directory of blob files into S3 + MySQL (reflector.md §1.3 `upload`,
origin-cluster.md §2).

File names are the hashes. Unless `skip_exists_check`, names already stored are dropped first
(one `IN (...)` query per 10000). N workers then read each file, check that its SHA-384 is its
name (else it is skipped and counted), store sd blobs (recognised by parsing them as sd blobs,
not by "is it JSON") through `put_sd` so the database learns the stream, and everything else
through `put`. `stop()` (SIGINT) lets the blobs in flight finish and starts no more; running
again skips what was stored, so an interrupted upload resumes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO

from prism.app.progress import ProgressBar, duration, megabytes
from prism.app.s3origin import OriginConfigError, check_s3, main_database, names_a_bucket, s3_store
from prism.blob import is_valid_hash
from prism.config import Config
from prism.db.mysql import MysqlDatabase
from prism.store.base import BlobStore, StoreError
from prism.store.db_backed import DBBackedStore
from prism.stream.errors import SdBlobError
from prism.stream.sd import SdBlob

log = logging.getLogger("prism.upload")


class UploadPathError(ValueError):
    """PATH is neither a regular file nor a directory."""


@dataclass
class UploadStats:
    """What one run did; `summary()` is the line printed at the end."""

    total: int = 0
    already_stored: int = 0
    sd_uploaded: int = 0
    content_uploaded: int = 0
    misnamed: int = 0
    errors: int = 0
    bytes_uploaded: int = 0
    seconds: float = 0.0
    """From the first file read to the last blob stored (the exists check included)."""
    uploaded_paths: list[str] = field(default_factory=list)

    def summary(self) -> str:
        # reflector.go's line (which it logs at debug level only), plus the skipped files.
        return (
            f"upload stats: {self.total} blobs total, {self.already_stored} already stored, "
            f"{self.sd_uploaded} SD blobs uploaded, {self.content_uploaded} content blobs uploaded, "
            f"{self.misnamed} skipped (file name is not the blob's hash), {self.errors} errors"
        )

    def rate(self) -> str:
        mbps = self.bytes_uploaded / 1e6 / max(self.seconds, 1e-6)
        return f"uploaded {megabytes(self.bytes_uploaded)} in {self.seconds:.2f}s ({mbps:.1f} MB/s)"


def blob_files(path: str) -> list[str]:
    """PATH itself if it is a file, else the regular files directly in it (not recursive), sorted."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise UploadPathError(f"{path}: no such file or directory")
    with os.scandir(path) as entries:
        return sorted(e.path for e in entries if e.is_file(follow_symlinks=False))


def _read_and_hash(path: str) -> tuple[bytes, str]:
    with open(path, "rb") as f:
        data = f.read()
    return data, hashlib.sha384(data).hexdigest()


def _is_sd_blob(data: bytes) -> bool:
    try:
        SdBlob.parse(data)
    except SdBlobError:
        return False
    return True


class Uploader:
    """Upload blob files into `store` (DB-backed S3) with `workers` in parallel."""

    def __init__(
        self,
        store: BlobStore,
        database: MysqlDatabase | None,
        *,
        workers: int = 1,
        skip_exists_check: bool = False,
        delete_after_upload: bool = False,
        progress: ProgressBar | None = None,
    ) -> None:
        self.store = store
        self.database = database
        self.workers = max(1, workers)
        self.skip_exists_check = skip_exists_check
        self.delete_after_upload = delete_after_upload
        self.progress = progress
        self.stats = UploadStats()
        self.stopping = False

    def stop(self) -> None:
        """Finish the blobs in flight, start no more (SIGINT)."""
        if not self.stopping:
            log.info("stopping after the blobs in flight")
        self.stopping = True

    async def run(self, paths: list[str]) -> UploadStats:
        started = time.monotonic()
        self.stats.total = len(paths)
        todo = await self._not_stored(paths)
        if self.progress is not None:
            self.progress.total = len(todo)
        queue = iter(todo)
        await asyncio.gather(*(self._worker(queue) for _ in range(min(self.workers, len(todo) or 1))))
        if self.progress is not None:
            self.progress.finish()
        self.stats.seconds = time.monotonic() - started
        return self.stats

    async def _not_stored(self, paths: list[str]) -> list[str]:
        if self.skip_exists_check or self.database is None:
            return paths
        stored = await self.database.has_blobs(os.path.basename(p) for p in paths)
        self.stats.already_stored = sum(1 for p in paths if os.path.basename(p) in stored)
        return [p for p in paths if os.path.basename(p) not in stored]

    async def _worker(self, queue: Iterator[str]) -> None:
        for path in queue:
            if self.stopping:
                return
            size = await self._upload_one(path)
            if self.progress is not None:
                self.progress.advance(1, size)

    async def _upload_one(self, path: str) -> int:
        """Upload one file; the bytes uploaded (0 when skipped or failed)."""
        name = os.path.basename(path)
        try:
            data, digest = await asyncio.to_thread(_read_and_hash, path)
        except OSError as e:
            log.error("%s: cannot read: %s", path, e.strerror or e)
            self.stats.errors += 1
            return 0
        if not is_valid_hash(name) or digest != name:
            log.error("file name does not match hash (%s != %s), skipping", name, digest)
            self.stats.misnamed += 1
            return 0
        is_sd = _is_sd_blob(data)
        try:
            await (self.store.put_sd if is_sd else self.store.put)(name, data)
        except (StoreError, OSError, ValueError) as e:
            log.error("%s: upload failed: %s", name, e)
            self.stats.errors += 1
            return 0
        if is_sd:
            self.stats.sd_uploaded += 1
        else:
            self.stats.content_uploaded += 1
        self.stats.bytes_uploaded += len(data)
        self.stats.uploaded_paths.append(path)
        if self.delete_after_upload:
            try:
                os.unlink(path)
            except OSError as e:
                log.warning("%s: uploaded, but cannot delete it: %s", path, e.strerror or e)
        return len(data)


def upload_progress(tty: bool | None = None, stream: TextIO | None = None) -> ProgressBar:
    """Blobs, bytes, rate and ETA on a terminal; a log line per tenth elsewhere."""
    return ProgressBar(_status, tty=tty, stream=stream, on_tenth=lambda bar: log.info("%s", _status(bar)))


def _status(bar: ProgressBar) -> str:
    elapsed = max(time.monotonic() - bar.started, 1e-6)
    eta = (bar.total - bar.done) * elapsed / bar.done if bar.done else 0.0
    return (
        f"{bar.done}/{bar.total} blobs, {megabytes(bar.bytes)}, {megabytes(bar.rate)}/s, ETA {duration(eta)} "
    )


async def run_upload(
    config: Config,
    path: str,
    *,
    workers: int = 1,
    skip_exists_check: bool = False,
    delete_after_upload: bool = False,
    tty: bool | None = None,
) -> tuple[UploadStats, bool]:
    """Upload PATH into DB-backed S3 from the config; the stats and whether SIGINT stopped it.

    Raises OriginConfigError, UploadPathError, S3Unavailable or DatabaseUnavailable (one
    sentence each) before anything is uploaded.
    """
    paths = blob_files(path)
    if not names_a_bucket(config):
        raise OriginConfigError("upload needs an S3 bucket in the config (aws_id, aws_secret, bucket_name)")
    s3 = s3_store(config)
    db = main_database(config, "none", "upload needs db_conn in the config file")
    store = DBBackedStore(s3, db)
    try:
        await db.start(require=True)
        await check_s3(s3)
        uploader = Uploader(
            store,
            db,
            workers=workers,
            skip_exists_check=skip_exists_check,
            delete_after_upload=delete_after_upload,
            progress=upload_progress(tty),
        )
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, uploader.stop)
        try:
            stats = await uploader.run(paths)
        finally:
            loop.remove_signal_handler(signal.SIGINT)
        return stats, uploader.stopping
    finally:
        await store.close()
        await db.close()
