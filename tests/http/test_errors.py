"""What an HTTP client is told when the store fails: generic words, 503 while the database is down."""

from __future__ import annotations

import logging
import socket

import pytest

from prism.config import MysqlParams
from prism.db import MysqlDatabase
from prism.http.h3client import Http3Client
from prism.http.h3server import Http3BlobServer
from prism.http.server import HttpBlobServer
from prism.store import MemoryStore
from prism.store.db_backed import DBBackedStore
from tests.helpers import BrokenStore, running
from tests.http.helpers import raw_request

HASH = "ab" * 48


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_database_down_is_a_generic_503_with_retry_after_and_one_log_line(
    method: str, caplog: pytest.LogCaptureFixture
) -> None:
    params = MysqlParams("root", "", "reflector", port=_closed_port())
    db = MysqlDatabase(params, connect_timeout=1.0, retry_interval=30.0)
    server = HttpBlobServer(DBBackedStore(MemoryStore(), db), "127.0.0.1", 0)
    await server.start()
    try:
        caplog.set_level(logging.WARNING, logger="prism.http")
        answers = [
            await raw_request(
                server.port, f"{method} /blob?hash={HASH} HTTP/1.1\r\nConnection: close\r\n\r\n".encode()
            )
            for _ in range(5)
        ]
    finally:
        await server.stop()
        await db.close()
    for answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), answer
        assert b"Retry-After: 5" in head
        assert b"127.0.0.1" not in answer and b"root" not in answer and b"MySQL" not in answer
        if method == "GET":
            assert body == b"service temporarily unavailable, retry later\n"
    http_lines = [r for r in caplog.records if r.name == "prism.http" and r.levelno >= logging.WARNING]
    assert len(http_lines) == 1, [r.getMessage() for r in http_lines]


@pytest.mark.parametrize("route", ["get", "has"])
async def test_http3_failure_is_the_generic_answer_not_the_error_text(route: str) -> None:
    server = Http3BlobServer(BrokenStore("disk at /srv/secret"), "127.0.0.1", 0)
    async with running(server):
        client = Http3Client(f"127.0.0.1:{server.port}", timeout=5)
        try:
            answer = await client.get(f"/{route}/{HASH}")
        finally:
            await client.close()
    # reflector.go answers 400 with the error's text; prism answers as its HTTP/1.1 server does.
    assert answer.status == 500 and answer.body == b"internal error\n"
    assert b"secret" not in answer.body
