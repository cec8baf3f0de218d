"""The optional JSON-RPC front of a DHT node (reflector.md §4.6), over aiohttp: POST `/`.

gorilla/rpc v2 JSON codec shape: request `{"method": "rpc.Ping", "params": [{...}], "id": 1}`, answer
`{"result": ..., "error": null, "id": 1}` (error: `{"result": null, "error": "<text>", "id": 1}`).
Methods (the `rpc.` service prefix is optional): Ping {Address}, FindNode {Key, NodeID, IP, Port},
FindValue {Key, NodeID, IP, Port}, IterativeFindValue {Key}, GetRoutingTable {}, AddKnownNode {ID, IP, Port,
PeerPort}. Contacts are `{"ID": hex, "IP": str, "Port": int, "PeerPort": int}`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from prism.dht.core import RpcFailed
from prism.dht.messages import NODE_ID_LENGTH
from prism.dht.node import DhtNode
from prism.dht.routing import Contact
from prism.dht.workers import resolve_ipv4
from prism.hostport import AddressError, HostPort, bind_socket, parse_host_port

log = logging.getLogger("prism.dht")


class RpcArgError(ValueError):
    pass


def contact_json(node_id: bytes, ip: str, port: int, peer_port: int = 0) -> dict[str, Any]:
    return {"ID": node_id.hex(), "IP": ip, "Port": port, "PeerPort": peer_port}


def _hex_id(args: dict[str, Any], name: str) -> bytes:
    try:
        raw = bytes.fromhex(str(args.get(name, "")))
    except ValueError:
        raise RpcArgError(f"{name} must be hex") from None
    if len(raw) != NODE_ID_LENGTH:
        raise RpcArgError(f"{name} must be {NODE_ID_LENGTH} bytes ({2 * NODE_ID_LENGTH} hex characters)")
    return raw


def _addr(args: dict[str, Any]) -> tuple[str, int]:
    ip = str(args.get("IP", ""))
    port = args.get("Port")
    if not ip or not isinstance(port, int) or not 0 < port < 65536:
        raise RpcArgError("IP and Port are required")
    return ip, port


class DhtRpcServer:
    """Serves the JSON-RPC for one node on host:port; `start()` / `stop(grace)` like every component."""

    def __init__(self, node: DhtNode, host: str = "0.0.0.0", port: int = 0) -> None:
        self.node = node
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self._methods: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "Ping": self.ping,
            "FindNode": self.find_node,
            "FindValue": self.find_value,
            "IterativeFindValue": self.iterative_find_value,
            "GetRoutingTable": self.get_routing_table,
            "AddKnownNode": self.add_known_node,
        }

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        try:
            site = web.SockSite(self._runner, bind_socket(self.host, self.port))
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        if self._runner.addresses:  # the port actually bound, when 0 was asked for
            self.port = int(self._runner.addresses[0][1])
        log.info("dht json-rpc listening on %s", HostPort(self.host, self.port))

    async def stop(self, grace: float = 1.0) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        req_id: Any = None
        try:
            body = json.loads(await request.read())
            if not isinstance(body, dict):
                raise RpcArgError("request must be a JSON object")
            req_id = body.get("id")
            method = str(body.get("method", ""))
            name = method.split(".", 1)[1] if "." in method else method
            handler = self._methods.get(name)
            if handler is None:
                raise RpcArgError(f"rpc: can't find method {method}")
            params = body.get("params") or [{}]
            args = params[0] if isinstance(params, list) and params else params
            if not isinstance(args, dict):
                raise RpcArgError("params must be [object]")
            result = await handler(args)
            return web.json_response({"result": result, "error": None, "id": req_id})
        except (ValueError, RpcFailed) as e:  # RpcArgError and json errors are ValueErrors
            return web.json_response({"result": None, "error": str(e), "id": req_id})

    async def ping(self, args: dict[str, Any]) -> str:
        try:
            host, port = parse_host_port(str(args.get("Address", "")), what="Address")
        except AddressError as e:
            raise RpcArgError(str(e)) from None
        resolved = await resolve_ipv4(host, port)
        if resolved is None:
            raise RpcArgError(f"cannot resolve {host}")
        await self.node.ping(resolved)
        return "pong"

    async def find_node(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        key, node_id = _hex_id(args, "Key"), _hex_id(args, "NodeID")
        ip, port = _addr(args)
        contacts, _ = await self.node.find_node(Contact(node_id, ip, port), key)
        return [contact_json(c.node_id, c.ip, c.port) for c in contacts]

    async def find_value(self, args: dict[str, Any]) -> dict[str, Any]:
        key, node_id = _hex_id(args, "Key"), _hex_id(args, "NodeID")
        ip, port = _addr(args)
        fv, _ = await self.node.find_value(Contact(node_id, ip, port), key)
        if fv.peers:
            return {"Contacts": [contact_json(n, i, 0, p) for i, p, n in fv.peers], "Value": key.hex()}
        return {"Contacts": [contact_json(n, i, p) for n, i, p in fv.contacts], "Value": ""}

    async def iterative_find_value(self, args: dict[str, Any]) -> dict[str, Any]:
        key = _hex_id(args, "Key")
        peers, contacts = await self.node.iterative_find_value(key)
        return {
            "Contacts": [contact_json(c.node_id, c.ip, c.port) for c in contacts],
            "FoundValue": bool(peers),
            "Values": [contact_json(p.node_id, p.ip, 0, p.tcp_port) for p in peers],
        }

    async def get_routing_table(self, args: dict[str, Any]) -> dict[str, Any]:
        core = self.node.core
        assert core is not None
        buckets = []
        for b in core.routing.buckets:
            # Start/End: the bucket's range of XOR distance from our id (prism's buckets are distance ranges)
            buckets.append(
                {
                    "Start": b.lo.to_bytes(NODE_ID_LENGTH, "big").hex(),
                    "End": (b.hi - 1).to_bytes(NODE_ID_LENGTH, "big").hex(),
                    "NumContacts": len(b.contacts),
                    "Contacts": [contact_json(c.node_id, c.ip, c.port) for c in b.contacts],
                }
            )
        return {"NodeID": core.node_id.hex(), "NumBuckets": len(buckets), "Buckets": buckets}

    async def add_known_node(self, args: dict[str, Any]) -> dict[str, Any]:
        node_id = _hex_id(args, "ID")
        ip, port = _addr(args)
        # like an answer: only a contact that answers our ping goes into the table
        await self.node.ping((ip, port), expect_id=node_id)
        return {}
