"""Writes `prism/_build_info.py` at install time (`python -m prism.buildinfo > prism/_build_info.py`)."""

from __future__ import annotations

import datetime

from prism.version import build_info


def render() -> str:
    info = build_info()
    info["build date"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f'"""Generated at install time; not in git."""\n\nINFO = {info!r}\n'


if __name__ == "__main__":
    print(render(), end="")
