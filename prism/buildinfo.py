"""Writes `prism/_build_info.py` at install time: `python -m prism.buildinfo`."""

from __future__ import annotations

import datetime
import os

from prism.version import build_info


def render() -> str:
    info = build_info()
    info["build date"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f'"""Generated at install time; not in git."""\n\nINFO = {info!r}\n'


def write(path: str | None = None) -> str:
    """Write the build info module atomically (a half-written module must never be imported)."""
    path = path or os.path.join(os.path.dirname(os.path.abspath(__file__)), "_build_info.py")
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(render())
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    write()
