"""Directories named by flags: created when missing, refused with a sentence naming the flag."""

from __future__ import annotations

import errno
import os


class DirectoryError(ValueError):
    """A flag names a path that cannot be a directory prism writes to."""


def ensure_directory(path: str, flag: str) -> None:
    """Create `path` (and its parents) if missing; DirectoryError names `flag` and what to change."""
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        raise DirectoryError(f"{flag}: {path!r} is a file, not a directory: give a directory") from None
    except OSError as e:
        raise DirectoryError(
            f"{flag}: cannot create directory {path!r} ({_reason(e)}): give another path"
        ) from None
    if not os.path.isdir(path):
        raise DirectoryError(f"{flag}: {path!r} is not a directory: give a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise DirectoryError(
            f"{flag}: directory {path!r} is not writable: give another path or fix its permissions"
        )


def _reason(e: OSError) -> str:
    if e.errno == errno.ENOTDIR:
        return "a part of it is a file"
    return e.strerror or type(e).__name__
