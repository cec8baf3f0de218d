"""A lbrycrd JSON-RPC 1.0 client (HTTP POST, Basic auth) and where its URL comes from (claims.md §4).

The URL and credentials come from `lbrycrd.conf` as reflector.go reads it (`~/.lbrycrd/`, or
`~/.lbrycrd_regtest/` when REGTEST=true: rpcuser, rpcpassword, rpchost default localhost,
rpcport default 9245), or from a `http://user:password@host:port` URL given on the command line.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import aiohttp

DEFAULT_PORT = 9245
METHOD_NOT_FOUND = -32601


class LbrycrdError(Exception):
    """lbrycrd answered with an error (`code` is its JSON-RPC code) or could not be reached."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def conf_path(home: str | None = None, regtest: bool | None = None) -> str:
    home = home if home is not None else os.path.expanduser("~")
    if regtest is None:
        regtest = os.environ.get("REGTEST", "").lower() == "true"
    return os.path.join(home, ".lbrycrd_regtest" if regtest else ".lbrycrd", "lbrycrd.conf")


def url_from_conf(path: str) -> str:
    """`http://user:password@host:port` from a lbrycrd.conf (`key=value` lines, `#` comments)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise LbrycrdError(
            f"cannot read {path} ({e.strerror}): give --lbrycrd URL or write that file"
        ) from None
    conf: dict[str, str] = {}
    for line in lines:
        key, eq, value = line.split("#", 1)[0].partition("=")
        if eq:
            conf[key.strip()] = value.strip()
    if not conf.get("rpcuser") or not conf.get("rpcpassword"):
        raise LbrycrdError(f"{path} must set rpcuser and rpcpassword")
    host = conf.get("rpchost") or "localhost"
    return f"http://{conf['rpcuser']}:{conf['rpcpassword']}@{host}:{conf.get('rpcport') or DEFAULT_PORT}"


def _amount(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


class Lbrycrd:
    """`await call(method, *params)`; numbers in answers come back as Decimal (amounts stay exact)."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LbrycrdError(f"--lbrycrd must be an http://user:password@host:port URL, got {url!r}")
        self.auth = aiohttp.BasicAuth(parts.username or "", parts.password or "")
        port = parts.port or DEFAULT_PORT
        self.url = f"{parts.scheme}://{parts.hostname}:{port}/"
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def call(self, method: str, *params: Any) -> Any:
        body = json.dumps(
            {"jsonrpc": "1.0", "id": "prism", "method": method, "params": list(params)}, default=_amount
        )
        try:
            async with (
                aiohttp.ClientSession(timeout=self.timeout, auth=self.auth) as session,
                session.post(self.url, data=body, headers={"Content-Type": "application/json"}) as r,
            ):
                text = await r.text()
                status = r.status
        except (aiohttp.ClientError, TimeoutError) as e:
            raise LbrycrdError(
                f"lbrycrd at {self.url} did not answer {method}: {e or type(e).__name__}"
            ) from None
        try:
            answer = json.loads(text, parse_float=Decimal)
        except ValueError:
            raise LbrycrdError(f"lbrycrd answered {method} with HTTP {status} and no JSON") from None
        error = answer.get("error") if isinstance(answer, dict) else None
        if error:
            code = error.get("code") if isinstance(error, dict) else None
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise LbrycrdError(f"lbrycrd {method}: {message}", code)
        return answer.get("result") if isinstance(answer, dict) else None
