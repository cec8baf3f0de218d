"""File-name handling for streams: hex fields in the sd blob and safe names on disk."""

from __future__ import annotations

import os
import re

# Characters no file system accepts, control characters, trailing dots and surrounding blanks,
# and Windows device names: the rules lbrynet applies before naming a downloaded file.
_ILLEGAL = re.compile(
    r'[<>:"/\\|?*]+|[\x00-\x1f]+|[ \t]*\.+[ \t]*$|^[ \t]+|[ \t]+$|^(?:CON|PRN|AUX|NUL|COM[1-9]|LPT[1-9])$'
)


def sanitize_file_name(name: str, default: str = "") -> str:
    """A file name that is safe to create in a directory, or `default` when nothing usable is left.

    The stem and the extension are cleaned separately, as lbrynet does, so `a?b.txt` becomes `ab.txt`
    and a lone `.` extension is dropped.
    """
    name = os.path.basename(name.replace("\\", "/"))
    stem, ext = os.path.splitext(name)
    stem = _ILLEGAL.sub("", stem)
    ext = _ILLEGAL.sub("", ext)
    if not stem:
        return default
    if len(ext) > 1:
        stem += ext
    return stem


def hex_name(name: str) -> str:
    """The sd-blob form of a name: hex of its UTF-8 bytes."""
    return name.encode("utf-8").hex()


def unhex_name(value: str) -> str:
    """Decode a hex name field; undecodable UTF-8 is replaced rather than failing the download."""
    return bytes.fromhex(value).decode("utf-8", errors="replace")
