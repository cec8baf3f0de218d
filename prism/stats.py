"""Counters a blob server keeps, the typed snapshot metrics read, and reflector.go's error types.

Servers never import the metrics registry (it lives in prism.app, above them); they count into a
`ServerStats` and hand out a frozen `ServerSnapshot` when asked.
"""

from __future__ import annotations

import asyncio
import errno
import json
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

from prism.blob import BlobSizeError, HashMismatchError, InvalidHashError
from prism.store.base import BlobNotFound


class ErrorType(StrEnum):
    """reflector.go's `error_type` label values (reflector.md §6).

    The whole set is kept so labels match reflector.go's; a few name Go error texts that no Python
    exception class stands for (`read_conn_reset`, `write_conn_reset`: Python raises one
    ConnectionResetError for both directions, counted as `conn_reset`, as reflector.go counts its
    download-side resets).
    """

    IO_TIMEOUT = "io_timeout"
    CONN_RESET = "conn_reset"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    READ_CONN_RESET = "read_conn_reset"
    WRITE_CONN_RESET = "write_conn_reset"
    E_TIMEDOUT = "e_timedout"
    NO_NETWORK_ACTIVITY = "no_network_activity"
    UNEXPECTED_EOF = "unexpected_eof"
    E_PIPE = "e_pipe"
    BLOB_TOO_BIG = "blob_too_big"
    INVALID_PEER_DATA = "invalid_peer_data"
    REQUEST_TOO_LARGE = "request_too_large"
    INVALID_BLOB_HASH = "invalid_blob_hash"
    HASH_MISMATCH = "hash_mismatch"
    BLOB_NOT_FOUND = "blob_not_found"
    PROTECTED_BLOB = "protected_blob"
    ZERO_BYTE_BLOB = "zero_byte_blob"
    QUIC_PROTOCOL_VIOLATION = "quic_protocol_violation"
    INVALID_CHARACTER = "invalid_character"
    JSON_SYNTAX = "json_syntax"
    NO_ERROR = "no_error"
    OTHER = "other"


# Most specific class first. Codec errors (peer, QUIC) are named by the server that catches them,
# since this module sits below the codecs.
_BY_CLASS: tuple[tuple[type[BaseException], ErrorType], ...] = (
    (asyncio.IncompleteReadError, ErrorType.UNEXPECTED_EOF),
    (TimeoutError, ErrorType.IO_TIMEOUT),
    (BrokenPipeError, ErrorType.E_PIPE),
    (ConnectionResetError, ErrorType.CONN_RESET),
    (InvalidHashError, ErrorType.INVALID_BLOB_HASH),
    (HashMismatchError, ErrorType.HASH_MISMATCH),
    (BlobSizeError, ErrorType.BLOB_TOO_BIG),
    (BlobNotFound, ErrorType.BLOB_NOT_FOUND),
    (json.JSONDecodeError, ErrorType.JSON_SYNTAX),
)


def classify_error(exc: BaseException) -> ErrorType:
    """The `error_type` of an exception, by its class (`other` when no class matches)."""
    if isinstance(exc, TimeoutError) and exc.errno == errno.ETIMEDOUT:
        return ErrorType.E_TIMEDOUT  # the kernel gave up on the peer, not one of our deadlines
    for cls, kind in _BY_CLASS:
        if isinstance(exc, cls):
            return kind
    return ErrorType.OTHER


@dataclass(frozen=True, slots=True)
class ServerSnapshot:
    """What one download server has done since it started, as metrics read it."""

    protocol: str
    """`http`, `http3` or `tcp`: picks the metric names (reflector_<protocol>_out_bytes ...)."""
    bytes_out: int
    downloads: int
    errors: dict[str, int]
    """error_type -> count, direction `download`."""
    queue_waiting: int | None = None
    """Requests waiting for a worker, for servers with a request queue."""
    connections: int | None = None
    """Open connections, for servers that report them as a `routines` gauge."""


@dataclass(slots=True)
class ServerStats:
    """The counters of one download server (HTTP, HTTP/3 or peer)."""

    protocol: str
    accepted: int = 0
    """Connections admitted."""
    refused: int = 0
    """Connections refused (too many open)."""
    requests: int = 0
    downloads: int = 0
    """Blobs sent."""
    bytes_out: int = 0
    """Blob bytes sent."""
    not_found: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    """error_type -> count, direction `download`."""

    def error(self, error: BaseException | ErrorType) -> ErrorType:
        """Count an error: an exception is classified by its class, an ErrorType is counted as is."""
        kind = error if isinstance(error, ErrorType) else classify_error(error)
        self.errors[kind.value] += 1
        return kind

    def sent(self, nbytes: int) -> None:
        """Count one blob (or range of one) sent."""
        self.bytes_out += nbytes
        self.downloads += 1

    def snapshot(self, queue_waiting: int | None = None, connections: int | None = None) -> ServerSnapshot:
        return ServerSnapshot(
            self.protocol, self.bytes_out, self.downloads, dict(self.errors), queue_waiting, connections
        )
