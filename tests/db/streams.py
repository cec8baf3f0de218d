"""Small synthetic streams for database tests: real sd blobs over random (not encrypted) content blobs."""

from __future__ import annotations

import os
from dataclasses import dataclass

from prism.blob import sha384_hex
from prism.stream.names import hex_name
from prism.stream.sd import BlobInfo, SdBlob


@dataclass(frozen=True)
class SyntheticStream:
    sd_hash: str
    sd_bytes: bytes
    sd: SdBlob
    blobs: list[tuple[str, bytes]]

    @property
    def hashes(self) -> list[str]:
        return [h for h, _ in self.blobs]


def make_stream(n_blobs: int, blob_size: int = 1024, name: str = "test.bin") -> SyntheticStream:
    """A stream of `n_blobs` content blobs of random bytes; its sd blob is valid and parses."""
    blobs = [(sha384_hex(d), d) for d in (os.urandom(blob_size) for _ in range(n_blobs))]
    infos = [BlobInfo(i, len(d), os.urandom(16).hex(), h) for i, (h, d) in enumerate(blobs)]
    infos.append(BlobInfo(n_blobs, 0, os.urandom(16).hex()))
    sd = SdBlob.create(hex_name(name), hex_name(name), os.urandom(16).hex(), tuple(infos))
    data = sd.serialize()
    return SyntheticStream(sha384_hex(data), data, sd, blobs)


def random_hash() -> str:
    return os.urandom(48).hex()
