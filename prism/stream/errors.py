"""Errors of the stream format. Each names what is wrong with an sd blob or a stream."""

from __future__ import annotations


class StreamError(ValueError):
    """Base class of every stream-format error."""


class SdBlobError(StreamError):
    """An sd blob is malformed or fails validation."""


class SdJsonError(SdBlobError):
    """The sd blob is not a JSON object."""


class SdFieldError(SdBlobError):
    """A required field is missing or has the wrong type or form."""


class KeyLengthError(SdFieldError):
    """The stream key is not 16 bytes (32 hex characters)."""


class TerminatorError(SdBlobError):
    """The blob list does not end with exactly one zero-length terminator."""


class BlobNumError(SdBlobError):
    """A blob_num does not equal its position in the list."""


class StreamHashMismatch(SdBlobError):
    """The stream_hash field does not match the one computed from the other fields."""


class PaddingError(StreamError):
    """Decrypted bytes do not end in valid PKCS#7 padding."""


class SourceChangedError(StreamError):
    """Re-encoding from an existing sd blob produced different blobs: the file is not the same."""
