"""Shared fixtures. MariaDB tests use the real server (PRISM_TEST_MYSQL, default root@127.0.0.1:3306)."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from prism.config import MysqlParams, parse_mysql_dsn
from tests.s3server import SeaweedFS

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_SQL = REPO_ROOT / "schema.sql"
TEST_MYSQL_DSN = os.environ.get("PRISM_TEST_MYSQL", "root:@tcp(127.0.0.1:3306)/prism_test")


def split_sql(text: str) -> list[str]:
    """Statements of a plain SQL script (no procedures), comments removed."""
    lines = [ln for ln in text.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _admin_connect(params: MysqlParams, database: str | None = None) -> pymysql.Connection:
    kw = params.kwargs()
    kw.pop("db", None)
    return pymysql.connect(**kw, database=database, autocommit=True, connect_timeout=5)


def connect(params: MysqlParams) -> pymysql.Connection:
    """A plain autocommit connection to the database of `params`."""
    return _admin_connect(params, params.database)


def sql(params: MysqlParams, statement: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of one statement run straight on the database of `params` (no prism code in the way)."""
    conn = connect(params)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, args)
            return list(cur.fetchall())
    finally:
        conn.close()


@pytest.fixture
def mysql_database() -> Iterator[MysqlParams]:
    """A fresh MariaDB database loaded from schema.sql, dropped afterwards."""
    base = parse_mysql_dsn(TEST_MYSQL_DSN)
    name = f"prism_t_{secrets.token_hex(6)}"
    admin = _admin_connect(base)
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
        conn = _admin_connect(base, name)
        with conn.cursor() as cur:
            for stmt in split_sql(SCHEMA_SQL.read_text()):
                cur.execute(stmt)
        conn.close()
        yield MysqlParams(base.user, base.password, name, base.host, base.port, base.unix_socket)
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


def prism_cmd(*args: str) -> list[str]:
    """argv that runs this checkout's `prism` (not whatever is on PATH)."""
    return [sys.executable, "-m", "prism", *args]


def prism_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One SeaweedFS S3 server for the whole session (started on first use, stopped at the end)."""
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(seaweedfs: SeaweedFS) -> str:
    """A fresh empty bucket on the session's SeaweedFS."""
    return seaweedfs.create_bucket()


async def run_prism(*args: str, limit: float = 120.0) -> tuple[int, str, str]:
    """Run `prism --conf none ARGS` to completion without blocking the loop: (exit code, stdout, stderr)."""
    import asyncio
    import subprocess

    proc = await asyncio.create_subprocess_exec(
        *prism_cmd("--conf", "none", *args), env=prism_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), limit)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
