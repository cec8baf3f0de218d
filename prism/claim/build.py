"""*sans-IO* build the v2 stream claim `publish` puts on chain (claims.md §4)."""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass, field

from prism.claim.schema import Message, encode, new

MAX_PUSH = 520
"""The largest script push lbrycrd accepts; a longer claim value cannot be published."""

_TYPES = mimetypes.MimeTypes(filenames=())  # the built-in table only: the same answer on every machine


def media_type(file_name: str) -> str:
    """The media type guessed from the file's extension (application/octet-stream if unknown)."""
    guessed, _ = _TYPES.guess_type(file_name, strict=False)
    return guessed or "application/octet-stream"


@dataclass
class StreamInfo:
    """What a stream claim says about one file."""

    sd_hash: str
    file_name: str
    size: int
    source_hash: str
    """SHA-384 of the file, hex."""
    title: str = ""
    description: str = ""
    author: str = ""
    release_time: int = 0
    tags: list[str] = field(default_factory=list)


def stream_claim(info: StreamInfo) -> Message:
    """The v2 Claim: title, description, tags and a Stream with its source and an empty media-kind message."""
    mtype = media_type(info.file_name)
    source = new(
        "Source",
        sd_hash=bytes.fromhex(info.sd_hash),
        name=info.file_name,
        size=info.size,
        hash=bytes.fromhex(info.source_hash),
        media_type=mtype,
    )
    stream = new("Stream", source=source, author=info.author, release_time=info.release_time)
    kind = mtype.split("/", 1)[0]
    if kind in ("video", "audio", "image"):
        stream.set(kind, new(kind.capitalize()))
    claim = new("Claim", stream=stream, title=info.title, description=info.description)
    if info.tags:
        claim.set("tags", list(info.tags))
    return claim


def unsigned_value(claim: Message) -> bytes:
    """The claim value as stored on chain: 0x00 then the protobuf."""
    return b"\x00" + encode(claim)
