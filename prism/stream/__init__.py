"""The LBRY stream format: encrypted content blobs plus an sd blob describing them."""

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
