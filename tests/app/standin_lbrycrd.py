"""A **stand-in lbrycrd** (no lbrycrd exists in Debian or PyPI): JSON-RPC 1.0 over HTTP with Basic
auth on 127.0.0.1, answering the calls `prism publish` makes (claims.md §4) with real version-1
transaction serialisation. The signature it puts in each input is a **placeholder** (zero bytes
shaped like a DER signature and a compressed key): signing is lbrycrd's job, not prism's.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from aiohttp import web

from prism.claim.legacy import base58_decode
from prism.hub.tx import OP_CLAIM_NAME, Transaction, TxIn, TxOut, p2pkh, parse_transaction, push, txid_of

PLACEHOLDER_SCRIPT_SIG = push(b"\x30" + b"\x00" * 70) + push(b"\x02" + b"\x00" * 32)


class StandInLbrycrd:
    def __init__(self, user: str = "rpcuser", password: str = "rpcpass", *, modern: bool = False) -> None:
        self.user, self.password = user, password
        self.modern = modern
        """Answer getinfo with -32601, as lbrycrd releases without it do."""
        self.unspent: list[dict[str, Any]] = []
        self.calls: list[tuple[str, list[Any]]] = []
        self.broadcast: list[str] = []
        self.before_broadcast: Callable[[bytes], Awaitable[None]] | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.user}:{self.password}@127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self, grace: float = 0.0) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.Response(status=401)
        body = json.loads(await request.text(), parse_float=Decimal)
        method, params = body["method"], body.get("params") or []
        self.calls.append((method, params))
        try:
            result = await self._call(method, params)
        except LookupError as e:
            error = {"code": -32601, "message": str(e.args[0])}
            return web.json_response({"result": None, "error": error, "id": body.get("id")}, status=500)
        text = json.dumps({"result": result, "error": None, "id": body.get("id")}, default=float)
        return web.Response(text=text, content_type="application/json")

    async def _call(self, method: str, params: list[Any]) -> Any:
        if method == "getblockchaininfo":
            return {"chain": "regtest", "blocks": 1000}
        if method == "listunspent":
            return self.unspent
        if method == "createrawtransaction":
            return self._create(*params)
        if method == "signrawtransaction":
            tx = parse_transaction(bytes.fromhex(params[0]))
            for tx_in in tx.inputs:
                tx_in.script = PLACEHOLDER_SCRIPT_SIG
            return {"hex": tx.serialize().hex(), "complete": True}
        if method == "getinfo" and not self.modern:
            return {"version": 120300}
        if method == "getnetworkinfo":
            return {"version": 170000}
        if method == "sendrawtransaction":
            raw = bytes.fromhex(params[0])
            if self.before_broadcast is not None:
                await self.before_broadcast(raw)
            self.broadcast.append(params[0])
            return txid_of(raw)
        if method == "decoderawtransaction":
            return self._decode(bytes.fromhex(params[0]))
        raise LookupError("Method not found")

    def _create(self, inputs: list[dict[str, Any]], outputs: dict[str, Decimal], locktime: int) -> str:
        tx = Transaction(version=1, locktime=locktime)
        tx.inputs = [TxIn(i["txid"], i["vout"]) for i in inputs]
        for address, amount in outputs.items():
            tx.outputs.append(TxOut(int(Decimal(amount) * 100_000_000), p2pkh(base58_decode(address)[1:21])))
        return tx.serialize().hex()

    def _decode(self, raw: bytes) -> dict[str, Any]:
        tx = parse_transaction(raw)
        vin = [
            {"txid": i.prev_txid, "vout": i.prev_nout, "scriptSig": {"hex": i.script.hex()}}
            for i in tx.inputs
        ]
        vout = [
            {
                "value": Decimal(o.value) / 100_000_000,
                "n": n,
                "scriptPubKey": {
                    "hex": o.script.hex(),
                    "type": "claim" if o.script[:1] == bytes([OP_CLAIM_NAME]) else "pubkeyhash",
                },
            }
            for n, o in enumerate(tx.outputs)
        ]
        return {
            "txid": txid_of(raw),
            "version": tx.version,
            "locktime": tx.locktime,
            "vin": vin,
            "vout": vout,
        }
