"""Build identity for `prism version` (reflector.md §1.3)."""

from __future__ import annotations

import importlib
import os
import subprocess

from prism import __version__

NAME = "prism"


def _git(*args: str) -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out = subprocess.run(
            ["git", "-C", root, *args], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out or "unknown"


def build_info() -> dict[str, str]:
    """Name, version, branch, commits and build date: from `_build_info.py` if built, else from git."""
    try:
        # Imported by name: the module exists only after `python -m prism.buildinfo`.
        info = getattr(importlib.import_module("prism._build_info"), "INFO", None)
        if isinstance(info, dict):
            return dict(info)
    except ImportError:
        pass
    describe = _git("describe", "--dirty", "--always", "--long", "--abbrev=7")
    return {
        "Name": NAME,
        "Version": f"{__version__} ({describe})" if describe != "unknown" else __version__,
        "branch": _git("rev-parse", "--abbrev-ref", "HEAD"),
        "commit": _git("rev-parse", "--short=7", "HEAD"),
        "commit long": _git("rev-parse", "HEAD"),
        "build date": _git("log", "-1", "--format=%cd", "--date=format-local:%Y-%m-%dT%H:%M:%SZ"),
    }
