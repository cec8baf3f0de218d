"""The S3 + MySQL origin shared by `reflector`, `peer` and `upload` (reflector.md §3.3, §3.4, §5)."""

from __future__ import annotations

from prism.config import Config
from prism.db.mysql import MysqlDatabase
from prism.store.base import BlobStore, walk_chain
from prism.store.s3 import S3ConfigError, S3Settings, S3Store


class OriginConfigError(ValueError):
    """The config cannot make the S3 or database origin; the message names the key."""


def names_a_bucket(config: Config) -> bool:
    """Whether the config describes an S3 bucket to use as the origin."""
    return bool(config.bucket_name)


def s3_store(config: Config) -> S3Store:
    """The S3 store of the config's keys (not contacted yet: see `check_s3`)."""
    try:
        return S3Store(S3Settings.from_config(config))
    except S3ConfigError as e:
        raise OriginConfigError(f"config: {e}") from None


def main_database(config: Config, track_access: str, missing: str) -> MysqlDatabase:
    """The main tracking database (`db_conn`); `missing` is the error when the config has none."""
    if not config.db_conn:
        raise OriginConfigError(missing)
    return MysqlDatabase.from_dsn(config.db_conn, track_access=track_access)


async def check_s3(store: BlobStore) -> None:
    """Make sure every S3 bucket of the chain answers (S3Unavailable: one sentence otherwise)."""
    for layer in walk_chain(store):
        if isinstance(layer, S3Store):
            await layer.check()
