"""`prism check-integrity` and `prism populate-db` on real stores, via the command line."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess

from prism.app.integrity import check_integrity
from prism.config import MysqlParams
from prism.db.localdb import SQLITE_NAME
from prism.store import DiskStore
from prism.store.disk import scan_blobs
from prism.store.disk_cache import QUARANTINE_DIR
from tests.conftest import prism_cmd, prism_env
from tests.helpers import make_blob


def make_store(root, n: int, size: int = 2048) -> list[str]:
    disk = DiskStore(root)
    hashes = []
    for i in range(n):
        h, data = make_blob(i, size + i % 7)
        disk.write_blob(h, data)
        hashes.append(h)
    return hashes


def corrupt(root, hashes: list[str]) -> None:
    disk = DiskStore(root)
    for k, h in enumerate(hashes):
        path = disk.path_of(h)
        if k % 3 == 0:  # flipped byte
            with open(path, "r+b") as f:
                b = f.read(1)
                f.seek(0)
                f.write(bytes([b[0] ^ 1]))
        elif k % 3 == 1:  # truncated
            os.truncate(path, 100)
        else:  # emptied
            os.truncate(path, 0)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        prism_cmd("--conf", "none", *args), env=prism_env(), capture_output=True, text=True, timeout=120
    )


def test_check_integrity_quarantines_corrupt_blobs_of_1000(tmp_path) -> None:
    hashes = make_store(tmp_path, 1000)
    bad = hashes[5::97]  # 11 blobs
    corrupt(tmp_path, bad)
    result = run("check-integrity", "--store-path", str(tmp_path), "--threads", "3")
    assert result.returncode == 1, result.stderr
    assert "checked 1000 blobs" in result.stdout and "with 3 threads" in result.stdout
    assert f"989 ok, {len(bad)} corrupt" in result.stdout and "0 unreadable" in result.stdout
    assert sorted(
        line.split()[1] for line in result.stdout.splitlines() if line.startswith("corrupt:")
    ) == sorted(bad)
    quarantined = sorted(os.listdir(tmp_path / QUARANTINE_DIR))
    assert quarantined == sorted(f"{h}.corrupt" for h in bad)
    left = {b.hash for b in scan_blobs(str(tmp_path))}
    assert left == set(hashes) - set(bad)  # the quarantine is not listed as blobs
    # A clean store: exit 0, nothing moved; the quarantine is not re-checked.
    again = run("check-integrity", "--store-path", str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert "checked 989 blobs" in again.stdout and "0 corrupt" in again.stdout


def test_check_integrity_delete_and_threads(tmp_path) -> None:
    hashes = make_store(tmp_path, 200, size=256 * 1024)
    corrupt(tmp_path, hashes[:4])
    report = check_integrity(str(tmp_path), threads=4, delete=True)
    assert (report.checked, report.ok, report.corrupt) == (200, 196, 4)
    assert len(report.threads_used) >= 2  # the work really spread over threads
    assert not (tmp_path / QUARANTINE_DIR).exists()
    assert len(list(scan_blobs(str(tmp_path)))) == 196


def test_check_integrity_bad_arguments(tmp_path) -> None:
    result = run("check-integrity", "--store-path", str(tmp_path / "missing"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    result = run("check-integrity", "--store-path", str(tmp_path), "--threads", "0")
    assert result.returncode == 2 and "--threads" in result.stderr


def test_populate_db_sqlite_is_idempotent(tmp_path) -> None:
    hashes = make_store(tmp_path, 50)
    first = run("populate-db", "--store-path", str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert "indexed 50 blobs into sqlite:" in first.stdout and "50 added" in first.stdout
    conn = sqlite3.connect(tmp_path / SQLITE_NAME)
    rows1 = sorted(conn.execute("SELECT * FROM blob_"))
    conn.close()
    assert {r[0] for r in rows1} == set(hashes)
    assert all(r[1] == 1 and r[2] == os.path.getsize(DiskStore(tmp_path).path_of(r[0])) for r in rows1)
    second = run("populate-db", "--store-path", str(tmp_path))
    assert "0 added, 0 updated, 50 unchanged" in second.stdout
    conn = sqlite3.connect(tmp_path / SQLITE_NAME)
    assert sorted(conn.execute("SELECT * FROM blob_")) == rows1
    conn.close()


def test_populate_db_mariadb(tmp_path, mysql_database: MysqlParams) -> None:
    make_store(tmp_path, 40)
    p = mysql_database
    dsn = f"{p.user}:{p.password}@tcp({p.host}:{p.port})/{p.database}"
    first = run("populate-db", "--store-path", str(tmp_path), "--db", dsn)
    assert first.returncode == 0, first.stderr
    assert "40 added" in first.stdout and "mysql:" in first.stdout
    second = run("populate-db", "--store-path", str(tmp_path), "--db", dsn)
    assert "0 added, 0 updated, 40 unchanged" in second.stdout
    bad = run("populate-db", "--store-path", str(tmp_path), "--db", "not a dsn")
    assert bad.returncode == 1 and "invalid MySQL DSN" in bad.stderr
    # Without --db, the config's local_db_conn is used.
    conf = tmp_path / "config.json"
    conf.write_text(json.dumps({"local_db_conn": dsn}))
    make_store(tmp_path, 45)
    third = subprocess.run(
        prism_cmd("--conf", str(conf), "populate-db", "--store-path", str(tmp_path)),
        env=prism_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert third.returncode == 0, third.stderr
    assert "mysql:" in third.stdout and "5 added, 0 updated, 40 unchanged" in third.stdout
