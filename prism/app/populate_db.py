"""`prism populate-db`: index an existing disk store into the localdb cache index.

The index is the store's embedded SQLite file (`<store>/localdb.sqlite3`) unless a MySQL
DSN is given (`--db`, or `local_db_conn` in the config). Each blob gets its real size; rows
that are already right are not touched, so running it twice changes nothing.
"""

from __future__ import annotations

import asyncio
import os

from prism.config import parse_mysql_dsn
from prism.db.localdb import LocalDB, MysqlLocalDB, PopulateReport, SqliteLocalDB, populate
from prism.store.disk import scan_blobs


def open_target(store_path: str, dsn: str = "") -> LocalDB:
    if dsn:
        return MysqlLocalDB(parse_mysql_dsn(dsn))
    return SqliteLocalDB.in_cache_dir(os.path.abspath(store_path))


def describe(db: LocalDB) -> str:
    if isinstance(db, SqliteLocalDB):
        return f"sqlite:{db.path}"
    assert isinstance(db, MysqlLocalDB)
    p = db.params
    return f"mysql:{p.user}@{p.unix_socket or f'{p.host}:{p.port}'}/{p.database}"


def _store_root(store_path: str) -> str:
    root = os.path.abspath(store_path)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"store path {root} is not a directory")
    return root


async def populate_db(store_path: str, dsn: str = "") -> tuple[PopulateReport, str]:
    """Index every blob under `store_path`; returns the report and where it was written."""
    root = _store_root(store_path)
    db = open_target(root, dsn)
    await db.open()
    try:
        blobs = await asyncio.to_thread(lambda: [(b.hash, b.size, b.stamp) for b in scan_blobs(root)])
        return await populate(db, blobs), describe(db)
    finally:
        await db.close()
