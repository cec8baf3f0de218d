"""A **stand-in hub** (no LBRY wallet server can run here): the hub's JSON-RPC over real TCP.

It answers `server.version`, `blockchain.claimtrie.resolve` (base64 `Outputs` built with prism's
own schema), `blockchain.transaction.get` and `blockchain.claimtrie.getclaimsintx` from the
transactions it is given, with the hub's error texts. `mute=True` makes a server that accepts
connections and never answers (a hung hub); `nested_errors=True` uses the nested error shape.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from typing import Any

from prism.claim.schema import ERROR_CODES, encode, new
from prism.hub.tx import TxError, claim_at, txid_of


def found_outputs(txid: str, nout: int, height: int = 1000, short_url: str = "") -> str:
    meta = new("ClaimMeta", short_url=short_url, canonical_url=short_url, is_controlling=True)
    out = new("Output", tx_hash=bytes.fromhex(txid)[::-1], nout=nout, height=height, claim=meta)
    return base64.b64encode(encode(new("Outputs", txos=[out]))).decode()


def error_outputs(code: str, text: str) -> str:
    error = new("Error", code=ERROR_CODES.index(code), text=text)
    return base64.b64encode(encode(new("Outputs", txos=[new("Output", error=error)]))).decode()


class StandInHub:
    def __init__(self, *, mute: bool = False, nested_errors: bool = False) -> None:
        self.mute = mute
        self.nested_errors = nested_errors
        self.transactions: dict[str, bytes] = {}
        self.claims: dict[str, tuple[str, int]] = {}
        """URL → (txid, nout)."""
        self.blocked: dict[str, str] = {}
        """URL → the hub's BLOCKED text."""
        self.invalid: set[str] = set()
        """URLs the hub calls invalid (its grammar is stricter in places than prism's check)."""
        self.requests: list[tuple[str, list[Any]]] = []
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def add_transaction(self, raw: bytes) -> str:
        txid = txid_of(raw)
        self.transactions[txid] = raw
        return txid

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self, grace: float = 0.0) -> None:
        if self._server is not None:
            self._server.close()
            for writer in self._writers:
                writer.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                if self.mute:
                    continue
                request = json.loads(line)
                method, params = request.get("method"), request.get("params") or []
                self.requests.append((method, params))
                answer: dict[str, Any] = {"jsonrpc": "2.0", "id": request.get("id")}
                try:
                    answer["result"] = self._call(method, params)
                except LookupError as e:
                    err = {"code": 1, "message": e.args[0]}
                    answer["error"] = {"message": err} if self.nested_errors else err
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        writer.close()

    def _call(self, method: str, params: list[Any]) -> Any:
        if method == "server.version":
            return ["stand-in hub", "0.109.0"]
        if method == "blockchain.claimtrie.resolve":
            url = params[0]
            if url in self.invalid:
                return error_outputs("INVALID", "Invalid LBRY URL")
            if url in self.blocked:
                return error_outputs("BLOCKED", self.blocked[url])
            if url in self.claims:
                return found_outputs(*self.claims[url])
            return error_outputs("NOT_FOUND", f'Could not find claim at "{url}".')
        if method == "blockchain.transaction.get":
            if params[0] not in self.transactions:
                raise LookupError(f"no such transaction {params[0]}")
            return self.transactions[params[0]].hex()
        if method == "blockchain.claimtrie.getclaimsintx":
            return self._claims_in_tx(params[0])
        raise LookupError(f"unknown method {method}")

    def _claims_in_tx(self, txid: str) -> list[dict[str, Any]]:
        raw = self.transactions.get(txid, b"")
        out = []
        for nout in range(8):
            with contextlib.suppress(TxError):
                claim = claim_at(raw, nout)
                out.append(
                    {"txid": txid, "nout": nout, "name": claim.name.decode(), "value": claim.value.hex()}
                )
        return out
