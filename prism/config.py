"""Typed loading of `config.json` (reflector.md §1.2) and Go-style MySQL DSNs."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any

from prism.hostport import AddressError, parse_host_port

DEFAULT_CONFIG_PATH = "config.json"
DEFAULT_PROTECTED_LIST_URL = "https://api.odysee.com/file/list_protected"


class ConfigError(ValueError):
    """The configuration file or one of its values is wrong; the message names the key."""


@dataclass(frozen=True, slots=True)
class Config:
    """Every key reflector.go reads (all strings), plus prism's own optional ones."""

    aws_id: str = ""
    aws_secret: str = ""
    bucket_region: str = ""
    bucket_name: str = ""
    s3_endpoint: str = ""
    db_conn: str = ""
    slack_hook_url: str = ""
    slack_channel: str = ""
    update_bin_url: str = ""
    update_cmd: str = ""
    # prism additions
    s3_path_style: str = ""
    """Path-style S3 addressing: "true"/"false"; empty means true when s3_endpoint is set."""
    s3_sharding: str = ""
    """Object key `hash[:n]/hash` (reflector.go Modern); empty or "0" is the plain hash (Classic)."""
    s3_acl: str = "public-read"
    """Canned ACL of every S3 PUT; "none" sends none."""
    local_db_conn: str = ""
    """DSN of the localdb cache index; empty means an embedded SQLite file in the cache dir."""
    protected_list_url: str = DEFAULT_PROTECTED_LIST_URL
    unknown_keys: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_mapping(cls, data: object, source: str = "config") -> Config:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: the top level must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls) if f.name != "unknown_keys"}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                continue
            if not isinstance(value, str):
                raise ConfigError(f"{source}: key {key!r} must be a string, got {type(value).__name__}")
            values[key] = value
        unknown = tuple(sorted(k for k in data if k not in known))
        return cls(**values, unknown_keys=unknown)

    @classmethod
    def load(cls, path: str | None, explicit: bool) -> Config:
        """Load `path`. A missing default file gives an empty config; a missing named file is an error.

        `path` of None or "none" disables loading.
        """
        if path is None or path == "none":
            return cls()
        if path == "":
            raise ConfigError("--conf flag required (use 'none' to run without a config file)")
        if not os.path.exists(path):
            if explicit:
                raise ConfigError(f"config file not found: {path}")
            return cls()
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read config file: {e.strerror}") from None
        return cls.from_mapping(data, source=path)


@dataclass(frozen=True, slots=True)
class MysqlParams:
    """Connection parameters parsed from a DSN, ready for aiomysql.connect(**params.kwargs())."""

    user: str
    password: str
    database: str
    host: str = "127.0.0.1"
    port: int = 3306
    unix_socket: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    def kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"user": self.user, "password": self.password, "db": self.database}
        if self.unix_socket:
            kw["unix_socket"] = self.unix_socket
        else:
            kw["host"] = self.host
            kw["port"] = self.port
        return kw


_DSN = re.compile(r"^(?P<proto>tcp|unix)\((?P<addr>[^)]*)\)/(?P<db>[^?]*)(?:\?(?P<opts>.*))?$")


def parse_mysql_dsn(dsn: str) -> MysqlParams:
    """Parse go-sql-driver's `USER:PASSWORD@tcp(HOST:PORT)/DBNAME[?k=v&...]`."""
    if "@" not in dsn:
        raise ConfigError(f"invalid MySQL DSN {dsn!r}: want USER:PASSWORD@tcp(HOST:PORT)/DBNAME")
    cred, _, rest = dsn.rpartition("@")
    user, _, password = cred.partition(":")
    m = _DSN.match(rest)
    if not m:
        raise ConfigError(f"invalid MySQL DSN {dsn!r}: want USER:PASSWORD@tcp(HOST:PORT)/DBNAME")
    if not user:
        raise ConfigError(f"invalid MySQL DSN {dsn!r}: the user is empty")
    if not m["db"]:
        raise ConfigError(f"invalid MySQL DSN {dsn!r}: the database name is empty")
    opts = (
        tuple((k, v) for k, _, v in (p.partition("=") for p in m["opts"].split("&") if "=" in p))
        if m["opts"]
        else ()
    )
    if m["proto"] == "unix":
        return MysqlParams(user, password, m["db"], unix_socket=m["addr"], options=opts)
    # go-sql-driver: an empty host means localhost, an empty port 3306.
    addr = m["addr"].removesuffix(":") or "127.0.0.1"
    if addr.startswith(":"):
        addr = "127.0.0.1" + addr
    try:
        host, port = parse_host_port(addr, default_port=3306, what="address")
    except AddressError as e:
        raise ConfigError(f"invalid MySQL DSN {dsn!r}: {e}") from None
    return MysqlParams(user, password, m["db"], host=host, port=port, options=opts)
