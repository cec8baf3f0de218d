"""`prism upload` into SeaweedFS + MariaDB, run as the real command (a subprocess)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pymysql
import pytest

from prism.blob import sha384_hex
from prism.config import MysqlParams
from prism.stream.encoder import encode_bytes
from tests.conftest import prism_cmd, prism_env
from tests.helpers import make_blob
from tests.s3server import BAD_SETTINGS, SeaweedFS, bad_settings, one_error_line, write_config


def upload(conf: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        prism_cmd("--conf", str(conf), "upload", *args),
        env=prism_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_blobs(
    directory: Path, streams: int, content: int, size: int = 1000, start: int = 0
) -> dict[str, str]:
    """`streams` small streams (one sd blob and one content blob each) and `content` more blobs.

    Returns each file name's kind ("sd" or "content").
    """
    directory.mkdir(parents=True, exist_ok=True)
    kinds: dict[str, str] = {}
    for i in range(streams):
        blobs, enc = encode_bytes(os.urandom(size), f"file{i}.bin")
        for h, data in blobs:
            (directory / h).write_bytes(data)
            kinds[h] = "content"
        (directory / enc.sd_hash).write_bytes(enc.sd_bytes)
        kinds[enc.sd_hash] = "sd"
    for i in range(start, start + content):
        h, data = make_blob(i, size)
        (directory / h).write_bytes(data)
        kinds[h] = "content"
    return kinds


def upload_some_first(conf: Path, blobs: Path, names: list[str], scratch: Path) -> None:
    """Store `names` of `blobs` with an earlier upload run (of hard links in `scratch`)."""
    scratch.mkdir()
    for name in names:
        os.link(blobs / name, scratch / name)
    done = upload(conf, str(scratch))
    assert done.returncode == 0, done.stderr


def table_counts(db: MysqlParams) -> dict[str, int]:
    kw = db.kwargs()
    conn = pymysql.connect(**kw, database=kw.pop("db"))
    try:
        with conn.cursor() as cur:
            counts = {}
            for sql, name in (
                ("SELECT COUNT(*) FROM blob_ WHERE is_stored = 1", "stored"),
                ("SELECT COUNT(*) FROM stream", "stream"),
                ("SELECT COUNT(*) FROM stream_blob", "stream_blob"),
            ):
                cur.execute(sql)
                counts[name] = cur.fetchone()[0]
            return counts
    finally:
        conn.close()


def bucket_keys(server: SeaweedFS, bucket: str) -> set[str]:
    client = server.client()
    try:
        keys: set[str] = set()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys.update(o["Key"] for o in page.get("Contents", []))
        return keys
    finally:
        client.close()


def summary(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("upload stats:"))


@pytest.mark.slow
def test_upload_500_blobs_then_nothing(
    tmp_path: Path, seaweedfs: SeaweedFS, s3_bucket: str, mysql_database: MysqlParams
) -> None:
    conf = write_config(tmp_path / "config.json", seaweedfs, s3_bucket, mysql_database)
    blobs = tmp_path / "blobs"
    kinds = write_blobs(blobs, streams=10, content=479)
    (blobs / ("0" * 96)).write_bytes(b"not the blob its name says")  # misnamed
    assert len(os.listdir(blobs)) == 500
    # 50 content blobs are stored already (by an earlier, partial upload)
    upload_some_first(
        conf, blobs, sorted(n for n, k in kinds.items() if k == "content")[:50], tmp_path / "first"
    )
    done = upload(conf, str(blobs), "--workers", "8")
    assert done.returncode == 0, done.stderr
    assert summary(done.stdout) == (
        "upload stats: 500 blobs total, 50 already stored, 10 SD blobs uploaded, "
        "439 content blobs uploaded, 1 skipped (file name is not the blob's hash), 0 errors"
    )
    assert "file name does not match hash" in done.stderr
    assert bucket_keys(seaweedfs, s3_bucket) == set(kinds)
    assert table_counts(mysql_database) == {"stored": 499, "stream": 10, "stream_blob": 10}
    again = upload(conf, str(blobs), "--workers", "8")
    assert again.returncode == 0, again.stderr
    assert summary(again.stdout).startswith(
        "upload stats: 500 blobs total, 499 already stored, 0 SD blobs uploaded, 0 content blobs uploaded"
    )


def test_delete_blobs_after_upload_removes_exactly_the_uploaded(
    tmp_path: Path, seaweedfs: SeaweedFS, s3_bucket: str, mysql_database: MysqlParams
) -> None:
    conf = write_config(tmp_path / "config.json", seaweedfs, s3_bucket, mysql_database)
    blobs = tmp_path / "blobs"
    kinds = write_blobs(blobs, streams=2, content=20)
    stored = sorted(n for n, k in kinds.items() if k == "content")[:5]
    upload_some_first(conf, blobs, stored, tmp_path / "first")
    (blobs / "README").write_text("not a blob")
    done = upload(conf, str(blobs), "--delete-blobs-after-upload", "--workers", "4")
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(blobs)) == sorted([*stored, "README"])
    assert "2 SD blobs uploaded, 17 content blobs uploaded, 1 skipped" in summary(done.stdout)


def test_sigint_stops_after_blobs_in_flight_and_rerun_completes(
    tmp_path: Path, seaweedfs: SeaweedFS, s3_bucket: str, mysql_database: MysqlParams
) -> None:
    conf = write_config(tmp_path / "config.json", seaweedfs, s3_bucket, mysql_database)
    blobs = tmp_path / "blobs"
    kinds = write_blobs(blobs, streams=0, content=600, size=64 * 1024)
    proc = subprocess.Popen(
        prism_cmd("--conf", str(conf), "upload", str(blobs), "--workers", "2"),
        env=prism_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while table_counts(mysql_database)["stored"] < 10:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert "interrupted" in err and "Traceback" not in err
    line = summary(out)
    uploaded = table_counts(mysql_database)["stored"]
    assert 10 <= uploaded < 600
    assert f"{uploaded} content blobs uploaded" in line  # every blob counted was stored, none half
    done = upload(conf, str(blobs), "--workers", "4")
    assert done.returncode == 0, done.stderr
    assert f"600 blobs total, {uploaded} already stored" in summary(done.stdout)
    assert bucket_keys(seaweedfs, s3_bucket) == set(kinds)


@pytest.mark.parametrize("problem", BAD_SETTINGS)
def test_bad_s3_config_is_one_sentence(
    tmp_path: Path, seaweedfs: SeaweedFS, s3_bucket: str, mysql_database: MysqlParams, problem: str
) -> None:
    overrides, phrase = bad_settings(problem)
    conf = write_config(tmp_path / "config.json", seaweedfs, s3_bucket, mysql_database, **overrides)
    blobs = tmp_path / "blobs"
    write_blobs(blobs, streams=0, content=3)
    done = upload(conf, str(blobs))
    assert done.returncode == 1
    assert phrase in one_error_line(done.stderr)
    assert table_counts(mysql_database)["stored"] == 0


def test_json_that_is_not_an_sd_blob_is_content_and_skip_exists_check_uploads_again(
    tmp_path: Path, seaweedfs: SeaweedFS, s3_bucket: str, mysql_database: MysqlParams
) -> None:
    conf = write_config(tmp_path / "config.json", seaweedfs, s3_bucket, mysql_database)
    blobs = tmp_path / "blobs"
    write_blobs(blobs, streams=1, content=0)
    not_sd = b'{"stream_name": "not an sd blob", "blobs": 3}'
    (blobs / sha384_hex(not_sd)).write_bytes(not_sd)
    done = upload(conf, str(blobs))
    assert done.returncode == 0, done.stderr
    # reflector.go would send any valid JSON through PutSD (and fail on the missing stream_hash).
    assert "1 SD blobs uploaded, 2 content blobs uploaded" in summary(done.stdout)
    assert table_counts(mysql_database) == {"stored": 3, "stream": 1, "stream_blob": 1}
    again = upload(conf, str(blobs), "--skipExistsCheck")
    assert again.returncode == 0, again.stderr
    assert "3 blobs total, 0 already stored, 1 SD blobs uploaded, 2 content blobs uploaded" in summary(
        again.stdout
    )


# -- in-process, over a memory store (no S3): the progress bar and stop() ------------------------


async def test_progress_bar_on_a_terminal_and_stop_after_blobs_in_flight(tmp_path: Path) -> None:
    import io

    from prism.app.upload import Uploader, blob_files, upload_progress
    from tests.helpers import CountingStore

    write_blobs(tmp_path, streams=0, content=20)
    screen = io.StringIO()
    store = CountingStore()
    uploader = Uploader(store, None, workers=2, progress=upload_progress(tty=True, stream=screen))
    stats = await uploader.run(blob_files(str(tmp_path)))
    assert stats.content_uploaded == 20 and len(store.blobs) == 20
    assert "20/20 blobs, 0.0 MB" in screen.getvalue() and "ETA" in screen.getvalue()

    store = CountingStore()
    uploader = Uploader(store, None, workers=2)
    real_put = store.put

    async def put_then_interrupt(h: str, data: bytes) -> None:
        uploader.stop()  # SIGINT while two blobs are in flight
        await real_put(h, data)

    store.put = put_then_interrupt  # type: ignore[method-assign]
    stats = await uploader.run(blob_files(str(tmp_path)))
    assert stats.content_uploaded == 2 == len(store.blobs)
