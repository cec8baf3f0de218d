"""Logging setup: `-v COMPONENT` turns on debug output for `prism.<component>` loggers."""

from __future__ import annotations

import logging
import sys
import time

COMPONENTS = ("app", "cache", "db", "dht", "http", "peer", "reflector", "store", "stream")


def setup_logging(verbose: tuple[str, ...] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # aioquic logs every handshake ("ALPN negotiated ...") at INFO: library chatter, not events.
    for library in ("quic", "http3"):
        logging.getLogger(library).setLevel(logging.WARNING)
    for name in ("prism", *(f"prism.{c}" for c in COMPONENTS)):
        logging.getLogger(name).setLevel(logging.NOTSET)  # a second setup (tests) starts afresh
    for component in verbose:
        if component == "all":
            logging.getLogger("prism").setLevel(logging.DEBUG)
        else:
            logging.getLogger(f"prism.{component}").setLevel(logging.DEBUG)


class RepeatFilter:
    """Sans-IO: whether a failure message is worth logging again.

    The first occurrence of a message is logged; the same message again only after `window`
    seconds, with the count of repeats it stood for. A server whose upstream is down answers
    every miss with the same error; the log says so once, not once per request.
    """

    def __init__(self, window: float = 600.0, max_messages: int = 256) -> None:
        self.window = window
        self.max_messages = max_messages
        self._seen: dict[str, tuple[float, int]] = {}
        """message -> (when it was last logged, repeats since)."""

    def admit(self, message: str, now: float) -> int | None:
        """None to stay quiet; else the number of unlogged repeats since it was last logged."""
        last = self._seen.get(message)
        if last is not None and now - last[0] < self.window:
            self._seen[message] = (last[0], last[1] + 1)
            return None
        if last is None and len(self._seen) >= self.max_messages:
            del self._seen[next(iter(self._seen))]
        self._seen[message] = (now, 0)
        return 0 if last is None else last[1]

    def suffix(self, message: str, now: float) -> str | None:
        """`admit` for a log line: None to stay quiet, else "" or " (N more since)" to append."""
        repeats = self.admit(message, now)
        if repeats is None:
            return None
        return f" ({repeats} more since)" if repeats else ""


def log_repeated(repeats: RepeatFilter, logger: logging.Logger, level: int, message: str) -> None:
    """Log `message` unless `repeats` says it was logged within its window (then it is counted)."""
    count = repeats.admit(message, time.monotonic())
    if count is not None:
        logger.log(level, "%s%s", message, f" ({count} more since)" if count else "")


def access_line(
    client: str, action: str, blob_hash: str, status: str | int, nbytes: int, seconds: float, layer: str
) -> str:
    """One request in the access log (`-v http`, `-v peer`, `-v reflector`), like gin's in reflector.go.

    `layer` is the blob's trace path, the store that had it first (`disk>db-backed>caching`),
    `-` when none did.
    """
    return f"{client} {action} {blob_hash[:16]} {status} {nbytes}B {seconds * 1000:.1f}ms {layer or '-'}"
