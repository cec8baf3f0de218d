"""Start-up sizing from the process's file limit: one connection table for every TCP server."""

from __future__ import annotations

import logging
from typing import Any

from prism.admission import Admission, connection_cap, raise_nofile_limit

log = logging.getLogger("prism.app")


def process_admission(max_connections: int | None = None) -> Admission[Any]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (logged), and the connection table it allows.

    The peer, HTTP and receiver servers share the table: its cap leaves headroom for blob files,
    the database and caches, and an idle socket of one protocol can make room for a request of another.
    `max_connections` lowers the cap (a command's own flag).
    """
    soft, hard = raise_nofile_limit()
    cap = connection_cap(soft)
    if max_connections is not None:
        cap = min(cap, max_connections)
    log.info("open file limit %d (hard %d): up to %d client connections", soft, hard, cap)
    return Admission(cap)
