"""The LBRY stream format: encrypted content blobs plus an sd blob describing them.

Names are imported on first use (module `__getattr__`), so importing one submodule, or the
package for one name, does not load the others."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prism.lazy import lazy_getattr

if TYPE_CHECKING:
    from prism.stream.crypto import BlobCipher, decrypt_blob
    from prism.stream.decoder import StreamDecoder
    from prism.stream.encoder import EncodedBlob, StreamEncoder, encode_bytes
    from prism.stream.errors import (
        BlobNumError,
        KeyLengthError,
        PaddingError,
        SdBlobError,
        SdFieldError,
        SdJsonError,
        SourceChangedError,
        StreamError,
        StreamHashMismatch,
        TerminatorError,
    )
    from prism.stream.names import sanitize_file_name
    from prism.stream.sd import BlobInfo, Layout, SdBlob, compute_stream_hash, sd_hash_of

_WHERE = {
    "BlobCipher": "prism.stream.crypto",
    "decrypt_blob": "prism.stream.crypto",
    "StreamDecoder": "prism.stream.decoder",
    "EncodedBlob": "prism.stream.encoder",
    "StreamEncoder": "prism.stream.encoder",
    "encode_bytes": "prism.stream.encoder",
    "BlobNumError": "prism.stream.errors",
    "KeyLengthError": "prism.stream.errors",
    "PaddingError": "prism.stream.errors",
    "SdBlobError": "prism.stream.errors",
    "SdFieldError": "prism.stream.errors",
    "SdJsonError": "prism.stream.errors",
    "SourceChangedError": "prism.stream.errors",
    "StreamError": "prism.stream.errors",
    "StreamHashMismatch": "prism.stream.errors",
    "TerminatorError": "prism.stream.errors",
    "sanitize_file_name": "prism.stream.names",
    "BlobInfo": "prism.stream.sd",
    "Layout": "prism.stream.sd",
    "SdBlob": "prism.stream.sd",
    "compute_stream_hash": "prism.stream.sd",
    "sd_hash_of": "prism.stream.sd",
}


__getattr__ = lazy_getattr(__name__, _WHERE, globals())


__all__ = [
    "BlobCipher",
    "BlobInfo",
    "BlobNumError",
    "EncodedBlob",
    "KeyLengthError",
    "Layout",
    "PaddingError",
    "SdBlob",
    "SdBlobError",
    "SdFieldError",
    "SdJsonError",
    "SourceChangedError",
    "StreamDecoder",
    "StreamEncoder",
    "StreamError",
    "StreamHashMismatch",
    "TerminatorError",
    "compute_stream_hash",
    "decrypt_blob",
    "encode_bytes",
    "sanitize_file_name",
    "sd_hash_of",
]
