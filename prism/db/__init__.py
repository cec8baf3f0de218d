"""Blob and stream tracking databases: reflector.go's MySQL schema (and localdb's SQLite variant)."""

from prism.db.base import BlobDatabase, StreamBlob, TrackAccess, stream_blobs
from prism.db.errors import DatabaseError, DatabaseTimeout, DatabaseUnavailable
from prism.db.mysql import MysqlDatabase

__all__ = [
    "BlobDatabase",
    "DatabaseError",
    "DatabaseTimeout",
    "DatabaseUnavailable",
    "MysqlDatabase",
    "StreamBlob",
    "TrackAccess",
    "stream_blobs",
]
