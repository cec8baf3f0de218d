"""Saving the routing table on shutdown and loading it at start, so a restarted node rejoins at once."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from prism.dht.messages import NODE_ID_LENGTH
from prism.dht.routing import Contact


def default_state_path(port: int) -> Path:
    """`$XDG_CACHE_HOME/prism/dht-<port>.json` (or ~/.cache/prism/...)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "prism" / f"dht-{port}.json"


def save_state(path: str | os.PathLike[str], node_id: bytes, contacts: list[Contact]) -> None:
    """Write node id and contacts atomically (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "node_id": node_id.hex(),
        "contacts": [{"id": c.node_id.hex(), "ip": c.ip, "port": c.port} for c in contacts],
    }
    fd, tmp = tempfile.mkstemp(prefix=".dht-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_state(path: str | os.PathLike[str]) -> tuple[bytes | None, list[Contact]]:
    """(node id, contacts) from a saved file; (None, []) if missing or unreadable. Bad entries are skipped."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None, []
    if not isinstance(doc, dict):
        return None, []
    node_id = None
    try:
        raw = bytes.fromhex(doc.get("node_id", ""))
        if len(raw) == NODE_ID_LENGTH:
            node_id = raw
    except (TypeError, ValueError):
        pass
    contacts: list[Contact] = []
    for entry in doc.get("contacts", []) if isinstance(doc.get("contacts"), list) else []:
        try:
            cid = bytes.fromhex(entry["id"])
            ip, port = str(entry["ip"]), int(entry["port"])
            if len(cid) == NODE_ID_LENGTH and 0 < port < 65536:
                contacts.append(Contact(cid, ip, port))
        except (KeyError, TypeError, ValueError):
            continue
    return node_id, contacts
