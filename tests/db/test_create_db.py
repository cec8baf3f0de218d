"""`make db` creates the database and user and loads schema.sql (on the private server, never the shared one)."""

from __future__ import annotations

import os
import subprocess

import pymysql

from prism.db import MysqlDatabase
from tests.conftest import REPO_ROOT
from tests.db.conftest import PrivateMariaDB


def _make_db(server: PrivateMariaDB, **settings: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MYSQL_HOST="127.0.0.1", MYSQL_PORT=str(server.port), **settings)
    return subprocess.run(
        ["make", "--no-print-directory", "db"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_make_db_creates_database_user_and_schema(private_mariadb: PrivateMariaDB) -> None:
    suffix = os.urandom(4).hex()
    name, user, password = f"prism_mk_{suffix}", f"mk_{suffix}", "pa'ss\\wo rd"
    settings = {"DB_NAME": name, "DB_USER": user, "DB_PASSWORD": password, "DB_USER_HOSTS": "127.0.0.1"}
    try:
        for _ in range(2):  # running it again is harmless
            out = _make_db(private_mariadb, **settings)
            assert out.returncode == 0, out.stderr
            assert f"database {name} ready" in out.stdout
        conn = pymysql.connect(
            host="127.0.0.1", port=private_mariadb.port, user=user, password=password, database=name
        )
        with conn.cursor() as cur:
            cur.execute("SHOW TABLES")
            assert sorted(r[0] for r in cur.fetchall()) == ["blob_", "blocked", "stream", "stream_blob"]
        conn.close()
        db = MysqlDatabase.from_dsn(f"{user}:{password}@tcp(127.0.0.1:{private_mariadb.port})/{name}")
        try:
            assert await db.start(require=True)
            assert await db.count_stored() == 0
        finally:
            await db.close()
    finally:
        private_mariadb.admin(
            f"DROP DATABASE IF EXISTS `{name}`", f"DROP USER IF EXISTS '{user}'@'127.0.0.1'"
        )


def test_make_db_refuses_a_bad_name(private_mariadb: PrivateMariaDB) -> None:
    out = _make_db(private_mariadb, DB_NAME="x`; DROP DATABASE mysql; --")
    assert out.returncode != 0
    assert "DB_NAME must be letters, digits and _ only" in out.stderr
