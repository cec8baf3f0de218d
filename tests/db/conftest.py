"""A private MariaDB server for tests that stop, pause or lock out the database.

The shared server on 3306 is used by every developer and is never stopped; tests that need a
database going away start their own `mariadbd` on a free port with a datadir under a temp dir.
Every wait is bounded, and the server is killed at the end whatever happens.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest

from prism.config import MysqlParams
from tests.conftest import SCHEMA_SQL, split_sql

START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


def _binary(*names: str) -> str:
    for name in names:
        for d in ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"):
            if os.access(os.path.join(d, name), os.X_OK):
                return os.path.join(d, name)
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(f"none of {names} is installed: the private MariaDB server cannot start")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateMariaDB:
    """One `mariadbd` of our own: root with no password over TCP on 127.0.0.1:`port`."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.datadir = base / "data"
        self.socket = base / "mysqld.sock"
        self.log = base / "error.log"
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    def install(self) -> None:
        cmd = [
            _binary("mariadb-install-db", "mysql_install_db"),
            "--no-defaults",
            f"--datadir={self.datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--innodb-log-file-size=4M",
            "--innodb-buffer-pool-size=16M",
        ]
        if os.geteuid() == 0:
            cmd.append("--user=root")
        out = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {out.stderr.decode(errors='replace')[-2000:]}")

    def start(self) -> None:
        assert self.proc is None, "already running"
        cmd = [
            _binary("mariadbd", "mysqld"),
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.socket}",
            f"--pid-file={self.base / 'mysqld.pid'}",
            f"--log-error={self.log}",
            "--innodb-buffer-pool-size=16M",
            "--innodb-log-file-size=4M",
            "--skip-innodb-buffer-pool-dump-at-shutdown",
            "--skip-innodb-buffer-pool-load-at-startup",
            "--skip-log-bin",
            "--skip-name-resolve",
            "--max-connections=100",
        ]
        if os.geteuid() == 0:
            cmd.append("--user=root")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        atexit.register(self.kill)  # even if pytest dies before the fixture's cleanup
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"private mariadbd exited at start: {self._log_tail()}")
            try:
                self.admin("SELECT 1")
                return
            except pymysql.MySQLError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"private mariadbd did not answer within {START_TIMEOUT}s: {self._log_tail()}")

    def stop(self) -> None:
        """Shut the server down cleanly (SIGTERM), killing it if that takes too long."""
        if self.proc is None:
            return
        if self.paused:
            self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)
        self.proc = None
        atexit.unregister(self.kill)

    def kill(self) -> None:
        atexit.unregister(self.kill)
        if self.proc is not None:
            if self.paused:
                self.resume()
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)
            self.proc = None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True
        # SIGSTOP is asynchronous: wait until every thread is really stopped.
        deadline = time.monotonic() + 5.0
        while not self._all_threads_stopped():
            if time.monotonic() > deadline:
                raise RuntimeError("private mariadbd did not stop on SIGSTOP within 5s")
            time.sleep(0.01)

    def _all_threads_stopped(self) -> bool:
        assert self.proc is not None
        tasks = Path(f"/proc/{self.proc.pid}/task")
        try:
            for task in tasks.iterdir():
                stat = (task / "stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] not in ("T", "t"):
                    return False
        except FileNotFoundError:  # a thread ended while we looked: look again
            return False
        return True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def admin(self, *statements: str, database: str | None = None) -> list[tuple[object, ...]]:
        conn = pymysql.connect(
            host="127.0.0.1",
            port=self.port,
            user="root",
            password="",
            database=database,
            autocommit=True,
            connect_timeout=3,
            read_timeout=10,
            write_timeout=10,
        )
        try:
            rows: list[tuple[object, ...]] = []
            with conn.cursor() as cur:
                for stmt in statements:
                    cur.execute(stmt)
                    rows = list(cur.fetchall())
            return rows
        finally:
            conn.close()

    def create_database(self, name: str) -> MysqlParams:
        """A database loaded from schema.sql; root's parameters for it."""
        self.admin(f"CREATE DATABASE `{name}`")
        self.admin(*split_sql(SCHEMA_SQL.read_text()), database=name)
        return MysqlParams("root", "", name, host="127.0.0.1", port=self.port)

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no error log)"


@pytest.fixture(scope="module")
def private_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateMariaDB]:
    """A private MariaDB server, shared by the tests of one module; it is left running by each test."""
    base = tmp_path_factory.mktemp("mariadb")
    server = PrivateMariaDB(base)
    try:
        server.install()
        server.start()
        yield server
    finally:
        server.kill()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def private_database(private_mariadb: PrivateMariaDB) -> Iterator[MysqlParams]:
    """A fresh database from schema.sql on the private server, which is (re)started if a test stopped it."""
    if private_mariadb.paused:
        private_mariadb.resume()
    if private_mariadb.proc is None:
        private_mariadb.start()
    name = f"prism_p_{os.urandom(6).hex()}"
    params = private_mariadb.create_database(name)
    yield params
    if private_mariadb.paused:
        private_mariadb.resume()
    if private_mariadb.proc is None:
        private_mariadb.start()
    private_mariadb.admin(f"DROP DATABASE IF EXISTS `{name}`")
