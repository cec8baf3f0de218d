"""Verifying and decrypting a stream's content blobs back into the original file."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import BinaryIO

from prism.blob import BlobSizeError, HashMismatchError
from prism.stream.crypto import BlobCipher
from prism.stream.sd import BlobInfo, SdBlob


class StreamDecoder:
    """Decrypts the content blobs of one stream through reused buffers."""

    def __init__(self, sd: SdBlob) -> None:
        self.sd = sd
        self._cipher = BlobCipher(sd.key_bytes)

    def verify(self, info: BlobInfo, data: bytes | bytearray | memoryview) -> None:
        """Raise unless `data` is exactly the blob the sd blob lists."""
        if len(data) != info.length:
            raise BlobSizeError(f"blob {info.blob_num} has {len(data)} bytes, the sd blob says {info.length}")
        actual = hashlib.sha384(data).hexdigest()
        if actual != info.blob_hash:
            raise HashMismatchError(f"blob {info.blob_num} hashes to {actual}, not {info.blob_hash}")

    def decrypt(
        self, info: BlobInfo, data: bytes | bytearray | memoryview, verify: bool = True
    ) -> memoryview:
        """Plaintext of one content blob; the view is valid until the next call."""
        if verify:
            self.verify(info, data)
        return self._cipher.decrypt(info.iv_bytes, data)

    def decode(self, get_blob: Callable[[BlobInfo], bytes | bytearray | memoryview], out: BinaryIO) -> int:
        """Write the whole file to `out`, fetching each blob with `get_blob`; returns bytes written."""
        written = 0
        for info in self.sd.content_blobs:
            plain = self.decrypt(info, get_blob(info))
            out.write(plain)
            written += len(plain)
        return written
