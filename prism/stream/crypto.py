"""AES-128-CBC with PKCS#7 over reusable buffers: the per-blob cipher of LBRY streams."""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from prism.blob import MAX_BLOB_SIZE
from prism.stream.errors import PaddingError

BLOCK = 16
KEY_SIZE = 16
IV_SIZE = 16


def padded_length(n: int) -> int:
    """Ciphertext size of an n-byte chunk: PKCS#7 always adds 1..16 bytes."""
    return (n // BLOCK + 1) * BLOCK


class BlobCipher:
    """Encrypts and decrypts whole blobs through buffers allocated once.

    Allocating a fresh 2 MiB buffer per blob costs page faults; one BlobCipher per stream (or
    per worker) keeps them warm. Returned memoryviews point into the internal buffers and are
    valid only until the next call.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"AES-128 key must be {KEY_SIZE} bytes, got {len(key)}")
        self.key = key
        self._algorithm = algorithms.AES(key)
        self._buffer: bytearray | None = None

    @property
    def _out(self) -> bytearray:
        # Allocated on first use: a cipher that only encrypts into given buffers never touches it
        # (2 MiB of pages new to the process cost more CPU than encrypting them).
        if self._buffer is None:
            # cryptography wants room for one extra block in update_into's output.
            self._buffer = bytearray(MAX_BLOB_SIZE + BLOCK)
        return self._buffer

    def encrypt_padded(
        self, iv: bytes, buf: bytearray | memoryview, n: int, out: memoryview | None = None
    ) -> memoryview:
        """Pad the first n bytes of `buf` in place (buf needs 16 spare bytes) and encrypt them.

        The ciphertext goes to the internal buffer, or with `out` (at least padded_length(n)
        bytes, e.g. a slot of a spool) straight there, and the returned view points into it.
        """
        total = padded_length(n)
        pad = total - n
        mv = memoryview(buf)
        mv[n:total] = bytes((pad,)) * pad
        enc = Cipher(self._algorithm, modes.CBC(iv)).encryptor()
        if out is None:
            written = enc.update_into(mv[:total], self._out)
            enc.finalize()
            return memoryview(self._out)[:written]
        if len(out) < total:
            raise ValueError(f"output buffer of {len(out)} bytes is too small for {total}")
        # update_into wants one block of slack past its output; leaving the last block to update()
        # lets `out` be exactly the ciphertext's size (spool slots are packed).
        head = total - BLOCK
        written = enc.update_into(mv[:head], out[:total]) if head else 0
        last = enc.update(mv[head:total]) + enc.finalize()
        out[written : written + len(last)] = last
        return out[: written + len(last)]

    def decrypt(self, iv: bytes, data: bytes | bytearray | memoryview) -> memoryview:
        """Decrypt one blob and strip its padding; raises PaddingError on bad padding."""
        size = len(data)
        if size == 0 or size % BLOCK:
            raise PaddingError(f"ciphertext length {size} is not a positive multiple of {BLOCK}")
        if size > MAX_BLOB_SIZE:
            raise PaddingError(f"ciphertext length {size} exceeds {MAX_BLOB_SIZE}")
        dec = Cipher(self._algorithm, modes.CBC(iv)).decryptor()
        written = dec.update_into(data, self._out)
        dec.finalize()
        out = memoryview(self._out)[:written]
        pad = out[-1]
        if not 1 <= pad <= BLOCK or out[written - pad : written] != bytes((pad,)) * pad:
            raise PaddingError("decrypted blob has invalid PKCS#7 padding (wrong key or IV?)")
        return out[: written - pad]


def decrypt_blob(key: bytes, iv: bytes, data: bytes | bytearray | memoryview) -> bytes:
    """Plaintext of one content blob (convenience; hot paths keep a BlobCipher)."""
    return bytes(BlobCipher(key).decrypt(iv, data))
