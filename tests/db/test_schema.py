"""schema.sql loads on MariaDB and matches reflector.md §5 column for column (read back from information_schema)."""

from __future__ import annotations

import pymysql

from prism.config import MysqlParams

# reflector.md §5, as MariaDB reports it: (column, type, nullable, default, extra) in table order.
EXPECTED_COLUMNS = {
    "blob_": [
        ("id", "bigint(20) unsigned", "NO", None, "auto_increment"),
        ("hash", "char(96)", "NO", None, ""),
        ("is_stored", "tinyint(1)", "NO", "0", ""),
        ("length", "bigint(20) unsigned", "YES", "NULL", ""),
        ("last_accessed_at", "timestamp", "YES", "NULL", ""),
    ],
    "stream": [
        ("id", "bigint(20) unsigned", "NO", None, "auto_increment"),
        ("hash", "char(96)", "NO", None, ""),
        ("sd_blob_id", "bigint(20) unsigned", "NO", None, ""),
        ("last_accessed_at", "timestamp", "YES", "NULL", ""),
    ],
    "stream_blob": [
        ("stream_id", "bigint(20) unsigned", "NO", None, ""),
        ("blob_id", "bigint(20) unsigned", "NO", None, ""),
        ("num", "int(11)", "NO", None, ""),
    ],
    "blocked": [
        ("hash", "char(96)", "NO", None, ""),
    ],
}

# (table, index) -> (unique, columns in order). `id` is the UNIQUE of `id ... AUTO_INCREMENT UNIQUE`.
EXPECTED_INDEXES = {
    ("blob_", "PRIMARY"): (True, ("id",)),
    ("blob_", "id"): (True, ("id",)),
    ("blob_", "blob_hash_idx"): (True, ("hash",)),
    ("blob_", "blob_last_accessed_idx"): (False, ("last_accessed_at",)),
    ("blob_", "is_stored_idx"): (False, ("is_stored",)),
    ("stream", "PRIMARY"): (True, ("id",)),
    ("stream", "id"): (True, ("id",)),
    ("stream", "stream_hash_idx"): (True, ("hash",)),
    ("stream", "stream_sd_blob_id_idx"): (False, ("sd_blob_id",)),
    ("stream", "last_accessed_at_idx"): (False, ("last_accessed_at",)),
    ("stream_blob", "PRIMARY"): (True, ("stream_id", "blob_id")),
    ("stream_blob", "stream_blob_blob_id_idx"): (False, ("blob_id",)),
    ("blocked", "PRIMARY"): (True, ("hash",)),
}

# (table, column) -> (referenced table, referenced column, ON DELETE, ON UPDATE)
EXPECTED_FOREIGN_KEYS = {
    ("stream", "sd_blob_id"): ("blob_", "id", "RESTRICT", "CASCADE"),
    ("stream_blob", "stream_id"): ("stream", "id", "CASCADE", "CASCADE"),
    ("stream_blob", "blob_id"): ("blob_", "id", "CASCADE", "CASCADE"),
}


def _rows(params: MysqlParams, sql: str) -> list[tuple]:
    kw = params.kwargs()
    kw.pop("db")
    conn = pymysql.connect(**kw, database="information_schema", connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, (params.database,))
            return list(cur.fetchall())
    finally:
        conn.close()


def test_tables_and_columns_match_spec(mysql_database: MysqlParams) -> None:
    rows = _rows(
        mysql_database,
        "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA FROM COLUMNS "
        "WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME, ORDINAL_POSITION",
    )
    got: dict[str, list[tuple]] = {}
    for table, *column in rows:
        got.setdefault(table, []).append(tuple(column))
    assert got == EXPECTED_COLUMNS


def test_indexes_match_spec(mysql_database: MysqlParams) -> None:
    rows = _rows(
        mysql_database,
        "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, COLUMN_NAME FROM STATISTICS "
        "WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
    )
    got: dict[tuple[str, str], tuple[bool, tuple[str, ...]]] = {}
    for table, index, non_unique, column in rows:
        unique, columns = got.get((table, index), (not non_unique, ()))
        got[(table, index)] = (unique, (*columns, column))
    assert got == EXPECTED_INDEXES


def test_foreign_keys_match_spec(mysql_database: MysqlParams) -> None:
    rows = _rows(
        mysql_database,
        "SELECT k.TABLE_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_NAME, k.REFERENCED_COLUMN_NAME, "
        "r.DELETE_RULE, r.UPDATE_RULE FROM KEY_COLUMN_USAGE k JOIN REFERENTIAL_CONSTRAINTS r "
        "ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME "
        "AND r.TABLE_NAME = k.TABLE_NAME WHERE k.TABLE_SCHEMA = %s",
    )
    assert {(t, c): tuple(rest) for t, c, *rest in rows} == EXPECTED_FOREIGN_KEYS


def test_tables_are_innodb(mysql_database: MysqlParams) -> None:
    # Transactions and foreign keys need InnoDB.
    rows = _rows(mysql_database, "SELECT TABLE_NAME, ENGINE FROM TABLES WHERE TABLE_SCHEMA = %s")
    assert dict(rows) == {"blob_": "InnoDB", "stream": "InnoDB", "stream_blob": "InnoDB", "blocked": "InnoDB"}
