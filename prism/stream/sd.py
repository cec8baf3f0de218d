"""The sd blob (stream descriptor): model, byte-exact serialization in both layouts, parsing, validation.

Readers never re-serialize: the sd hash is always SHA-384 of the bytes as received.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from prism.blob import MAX_BLOB_SIZE, is_valid_hash, sha384_hex
from prism.stream.errors import (
    BlobNumError,
    KeyLengthError,
    SdFieldError,
    SdJsonError,
    StreamHashMismatch,
    TerminatorError,
)
from prism.stream.names import unhex_name

STREAM_TYPE = "lbryfile"
_HEX = frozenset("0123456789abcdefABCDEF")


class Layout(enum.Enum):
    """How an sd blob is laid out on the wire. Both are valid; the bytes decide the sd hash."""

    SORTED = "sorted"
    """Keys sorted at every level: what current lbrynet writes (the default)."""
    LEGACY = "legacy"
    """lbrynet's old sort order, which is also byte for byte what reflector.go writes."""


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """One entry of the sd blob's `blobs` list. The terminator has length 0 and no hash."""

    blob_num: int
    length: int
    iv: str
    blob_hash: str | None = None

    @property
    def is_terminator(self) -> bool:
        return self.length == 0

    @property
    def iv_bytes(self) -> bytes:
        return bytes.fromhex(self.iv)

    def digest(self) -> bytes:
        """This entry's 48-byte contribution to the stream hash."""
        hash_text = (self.blob_hash or "") if self.length > 0 else ""
        text = hash_text + str(self.blob_num) + self.iv + str(self.length)
        return hashlib.sha384(text.encode("ascii")).digest()

    def to_sorted(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.length > 0 and self.blob_hash:
            d["blob_hash"] = self.blob_hash
        d["blob_num"] = self.blob_num
        d["iv"] = self.iv
        d["length"] = self.length
        return d

    def to_legacy(self) -> dict[str, Any]:
        d: dict[str, Any] = {"length": self.length, "blob_num": self.blob_num}
        if self.blob_hash:
            d["blob_hash"] = self.blob_hash
        d["iv"] = self.iv
        return d


def compute_stream_hash(
    stream_name: str, key: str, suggested_file_name: str, blobs: tuple[BlobInfo, ...]
) -> str:
    """stream_hash over the hex text fields and the per-blob digests (lbry-wire.md §2.3)."""
    blobs_digest = hashlib.sha384(b"".join(b.digest() for b in blobs)).digest()
    h = hashlib.sha384()
    h.update(stream_name.encode("ascii"))
    h.update(key.encode("ascii"))
    h.update(suggested_file_name.encode("ascii"))
    h.update(blobs_digest)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class SdBlob:
    """A parsed, validated stream descriptor. Name fields are kept as the hex text of the JSON."""

    stream_name: str
    suggested_file_name: str
    key: str
    blobs: tuple[BlobInfo, ...]
    stream_hash: str
    stream_type: str = STREAM_TYPE

    @classmethod
    def create(
        cls, stream_name: str, suggested_file_name: str, key: str, blobs: tuple[BlobInfo, ...]
    ) -> SdBlob:
        """Build a descriptor, computing its stream hash."""
        return cls(
            stream_name,
            suggested_file_name,
            key,
            blobs,
            compute_stream_hash(stream_name, key, suggested_file_name, blobs),
        )

    @property
    def content_blobs(self) -> tuple[BlobInfo, ...]:
        """Every entry but the terminator."""
        return self.blobs[:-1]

    @property
    def content_hashes(self) -> list[str]:
        """The content blobs' hashes, in stream order (validated by `parse`: never empty)."""
        return [b.blob_hash or "" for b in self.blobs[:-1]]

    @property
    def key_bytes(self) -> bytes:
        return bytes.fromhex(self.key)

    @property
    def file_name(self) -> str:
        """The decoded suggested file name (may be empty)."""
        return unhex_name(self.suggested_file_name)

    @property
    def name(self) -> str:
        """The decoded stream name (may be empty)."""
        return unhex_name(self.stream_name)

    @property
    def stream_size(self) -> int:
        """Total encrypted size of the content blobs."""
        return sum(b.length for b in self.content_blobs)

    def serialize(self, layout: Layout = Layout.SORTED) -> bytes:
        """The sd blob's bytes in the chosen layout (separators `, ` and `: `, no trailing newline)."""
        if layout is Layout.SORTED:
            obj = {
                "blobs": [b.to_sorted() for b in self.blobs],
                "key": self.key,
                "stream_hash": self.stream_hash,
                "stream_name": self.stream_name,
                "stream_type": self.stream_type,
                "suggested_file_name": self.suggested_file_name,
            }
        else:
            obj = {
                "stream_name": self.stream_name,
                "blobs": [b.to_legacy() for b in self.blobs],
                "stream_type": self.stream_type,
                "key": self.key,
                "suggested_file_name": self.suggested_file_name,
                "stream_hash": self.stream_hash,
            }
        return json.dumps(obj).encode("ascii")

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview | str) -> SdBlob:
        """Parse sd blob bytes in any key order or spacing, then validate them strictly.

        Raises an SdBlobError subclass naming the problem; never anything else.
        """
        try:
            obj = json.loads(bytes(data) if not isinstance(data, str) else data)
        except (ValueError, RecursionError) as e:
            raise SdJsonError(f"sd blob is not valid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise SdJsonError(f"sd blob must be a JSON object, got {type(obj).__name__}")
        stream_type = _str_field(obj, "stream_type")
        if stream_type != STREAM_TYPE:
            raise SdFieldError(f"unsupported stream_type {stream_type!r}, want {STREAM_TYPE!r}")
        stream_name = _hex_field(obj, "stream_name")
        suggested = _hex_field(obj, "suggested_file_name")
        key = _hex_field(obj, "key")
        if len(key) != 32:
            raise KeyLengthError(f"key must be 16 bytes (32 hex characters), got {len(key)} characters")
        stream_hash = _str_field(obj, "stream_hash")
        raw_blobs = obj.get("blobs")
        if not isinstance(raw_blobs, list):
            raise SdFieldError("sd blob field 'blobs' must be a list")
        if not raw_blobs:
            raise TerminatorError("sd blob has no blobs: the stream terminator is missing")
        blobs = tuple(_parse_blob_info(i, entry, len(raw_blobs)) for i, entry in enumerate(raw_blobs))
        expected = compute_stream_hash(stream_name, key, suggested, blobs)
        if stream_hash != expected:
            raise StreamHashMismatch(
                f"stream_hash {stream_hash[:16]}... does not match computed {expected[:16]}..."
            )
        return cls(stream_name, suggested, key, blobs, stream_hash, stream_type)


def sd_hash_of(data: bytes | bytearray | memoryview) -> str:
    """The sd hash: SHA-384 of the sd blob bytes exactly as received."""
    return sha384_hex(data)


def _str_field(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        what = "missing" if value is None else f"a {type(value).__name__}"
        raise SdFieldError(f"sd blob field {name!r} must be a string, is {what}")
    return value


def _hex_field(obj: dict[str, Any], name: str) -> str:
    value = _str_field(obj, name)
    if len(value) % 2 or not _HEX.issuperset(value):
        raise SdFieldError(f"sd blob field {name!r} must be hex text")
    return value


def _int(entry: dict[str, Any], name: str, index: int) -> int:
    value = entry.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SdFieldError(f"blob entry {index}: {name!r} must be an integer")
    return value


def _parse_blob_info(index: int, entry: object, count: int) -> BlobInfo:
    if not isinstance(entry, dict):
        raise SdFieldError(f"blob entry {index} must be an object")
    blob_num = _int(entry, "blob_num", index)
    length = _int(entry, "length", index)
    iv = entry.get("iv")
    if not isinstance(iv, str) or len(iv) != 32 or not _HEX.issuperset(iv):
        raise SdFieldError(f"blob entry {index}: 'iv' must be 32 hex characters")
    if blob_num != index:
        raise BlobNumError(f"blob entry {index} has blob_num {blob_num}")
    blob_hash = entry.get("blob_hash")
    last = index == count - 1
    if last:
        if length != 0:
            raise TerminatorError(f"last blob entry has length {length}: the stream terminator is missing")
        if blob_hash:
            raise TerminatorError("the stream terminator must not carry a blob_hash")
        return BlobInfo(blob_num, 0, iv, None)
    if length <= 0:
        raise TerminatorError(f"blob entry {index} has length {length}: only the last entry may be empty")
    if length > MAX_BLOB_SIZE:
        raise SdFieldError(f"blob entry {index}: length {length} exceeds {MAX_BLOB_SIZE}")
    if not is_valid_hash(blob_hash):
        raise SdFieldError(f"blob entry {index}: 'blob_hash' must be 96 lowercase hex characters")
    return BlobInfo(blob_num, length, iv, blob_hash)
