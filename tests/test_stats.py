"""Error types by exception class (reflector.go's label values) and the server counters."""

from __future__ import annotations

import asyncio
import errno
import json

import pytest

from prism.blob import BlobSizeError, HashMismatchError, InvalidHashError
from prism.stats import ErrorType, ServerStats, classify_error
from prism.store.base import BlobNotFound


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (TimeoutError(), "io_timeout"),
        (TimeoutError(errno.ETIMEDOUT, "Connection timed out"), "e_timedout"),
        (ConnectionResetError("connection reset by peer"), "conn_reset"),
        (BrokenPipeError(errno.EPIPE, "Broken pipe"), "e_pipe"),
        (asyncio.IncompleteReadError(b"", 10), "unexpected_eof"),
        (InvalidHashError("x"), "invalid_blob_hash"),
        (HashMismatchError("x"), "hash_mismatch"),
        (BlobSizeError("blob must be at most 2097152 bytes"), "blob_too_big"),
        (BlobNotFound("h"), "blob_not_found"),
        (json.JSONDecodeError("bad", "{", 0), "json_syntax"),
        (OSError("disk on fire"), "other"),
        (ValueError("hash mentioned in a message"), "other"),
    ],
)
def test_errors_are_typed_by_class_not_by_message(exc, kind):
    assert classify_error(exc) == kind


def test_server_stats_count_errors_downloads_and_snapshot_a_copy():
    stats = ServerStats("http")
    assert stats.error(ConnectionResetError()) is ErrorType.CONN_RESET
    stats.error(ErrorType.PROTECTED_BLOB)
    stats.error(ErrorType.PROTECTED_BLOB)
    stats.sent(100)
    stats.sent(50)
    snap = stats.snapshot(queue_waiting=3, connections=2)
    stats.sent(1)
    assert (snap.protocol, snap.bytes_out, snap.downloads) == ("http", 150, 2)
    assert snap.errors == {"conn_reset": 1, "protected_blob": 2}
    assert (snap.queue_waiting, snap.connections) == (3, 2)
