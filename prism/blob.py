"""Blob naming, hashing and size rules shared by every protocol and store.

A blob is 1..2 MiB of opaque bytes named by the lowercase hex SHA-384 of those bytes.
Hashes are validated here, at the edge, before any of them can reach a file path.
"""

from __future__ import annotations

import hashlib
from typing import TypeGuard

MAX_BLOB_SIZE = 2 * 1024 * 1024
"""Largest blob in bytes (2 MiB)."""

MAX_CHUNK_SIZE = MAX_BLOB_SIZE - 1
"""Largest plaintext chunk per content blob: PKCS#7 always adds at least one byte."""

HASH_INLINE_MAX = 64 * 1024
"""Blobs up to this size are hashed in the event loop; larger ones on a worker thread
(hashlib releases the GIL), where the thread hop costs less than blocking the loop."""

HASH_HEX_LENGTH = 96
HASH_BYTES = 48

_DROP_HEX = str.maketrans("", "", "0123456789abcdef")
"""Deletes lowercase hex digits: a hash is valid when nothing else is left (4x a set's issuperset)."""


class BlobError(ValueError):
    """Base class of every blob-level input error."""


class InvalidHashError(BlobError):
    """A blob hash is not exactly 96 lowercase hex characters."""


class BlobSizeError(BlobError):
    """A blob length is outside 1..MAX_BLOB_SIZE."""


class HashMismatchError(BlobError):
    """Blob bytes do not hash to the name they were offered under."""


def is_valid_hash(value: object) -> TypeGuard[str]:
    """True for exactly 96 lowercase hex characters."""
    return isinstance(value, str) and len(value) == HASH_HEX_LENGTH and not value.translate(_DROP_HEX)


def validate_hash(value: object) -> str:
    """Return `value` if it is a valid blob hash, else raise InvalidHashError."""
    if is_valid_hash(value):
        return value
    shown = repr(value)
    if len(shown) > 120:
        shown = shown[:117] + "..."
    raise InvalidHashError(f"invalid blob hash {shown}: want 96 lowercase hex characters")


def validate_size(size: object) -> int:
    """Return `size` if it is an int in 1..MAX_BLOB_SIZE, else raise BlobSizeError."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise BlobSizeError(f"blob size must be an integer, got {size!r}")
    if size <= 0:
        raise BlobSizeError(f"blob size must be positive, got {size}")
    if size > MAX_BLOB_SIZE:
        raise BlobSizeError(f"blob must be at most {MAX_BLOB_SIZE} bytes, got {size}")
    return size


def sha384_hex(data: bytes | bytearray | memoryview) -> str:
    """Lowercase hex SHA-384 of `data`: a blob's name."""
    return hashlib.sha384(data).hexdigest()


def verify_blob(blob_hash: str, data: bytes | bytearray | memoryview) -> None:
    """Raise unless `data` is a well-sized blob whose SHA-384 is `blob_hash`."""
    validate_size(len(data))
    actual = sha384_hex(data)
    if actual != blob_hash:
        raise HashMismatchError(f"blob bytes hash to {actual}, not {blob_hash}")
