"""Counters a server keeps for the metrics collector to read at scrape time.

Servers never import the metrics registry (it lives in prism.app, above them); the
collector walks the components it was given and reads these plain numbers.
"""

from __future__ import annotations

import errno
from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class ServerStats:
    """What one download server has done since it started."""

    protocol: str
    """`http`, `http3` or `tcp`: picks the metric names (reflector_<protocol>_out_bytes ...)."""
    bytes_out: int = 0
    bytes_in: int = 0
    downloads: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    """error_type -> count, direction `download`."""

    def error(self, exc: BaseException | str) -> str:
        kind = classify_error(exc)
        self.errors[kind] += 1
        return kind


_RULES: tuple[tuple[str, str], ...] = (
    ("i/o timeout", "io_timeout"),
    ("connection reset", "conn_reset"),
    ("deadline exceeded", "deadline_exceeded"),
    ("read: connection reset", "read_conn_reset"),
    ("write: connection reset", "write_conn_reset"),
    ("connection timed out", "e_timedout"),
    ("no recent network activity", "no_network_activity"),
    ("unexpected eof", "unexpected_eof"),
    ("broken pipe", "e_pipe"),
    ("blob must be at most", "blob_too_big"),
    ("invalid data", "invalid_peer_data"),
    ("request is too large", "request_too_large"),
    ("invalid blob hash", "invalid_blob_hash"),
    ("hash", "hash_mismatch"),
    ("blob not found", "blob_not_found"),
    ("protected", "protected_blob"),
    ("0-byte blob", "zero_byte_blob"),
    ("protocol violation", "quic_protocol_violation"),
    ("invalid character", "invalid_character"),
    ("json", "json_syntax"),
    ("no_error", "no_error"),
)


def classify_error(exc: BaseException | str) -> str:
    """reflector.md §6 `error_type` of an error (first matching rule wins)."""
    if isinstance(exc, TimeoutError):
        return "io_timeout"
    if isinstance(exc, ConnectionResetError):
        return "conn_reset"
    if isinstance(exc, BrokenPipeError):
        return "e_pipe"
    if isinstance(exc, OSError) and exc.errno == errno.ETIMEDOUT:
        return "e_timedout"
    text = (str(exc) if not isinstance(exc, str) else exc).lower()
    if type(exc).__name__ == "InvalidHashError":
        return "invalid_blob_hash"
    if type(exc).__name__ == "HashMismatchError":
        return "hash_mismatch"
    if type(exc).__name__ == "BlobNotFound":
        return "blob_not_found"
    for needle, kind in _RULES:
        if needle in text:
            return kind
    return "other"
