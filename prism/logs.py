"""Logging setup: `-v COMPONENT` turns on debug output for `prism.<component>` loggers."""

from __future__ import annotations

import logging
import sys

COMPONENTS = ("app", "cache", "db", "dht", "http", "peer", "reflector", "store", "stream")


def setup_logging(verbose: tuple[str, ...] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for component in verbose:
        if component == "all":
            logging.getLogger("prism").setLevel(logging.DEBUG)
        else:
            logging.getLogger(f"prism.{component}").setLevel(logging.DEBUG)
