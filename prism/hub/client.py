"""asyncio shell of the wallet-server client (spec §4.7): one connection, one request at a time.

Addresses are shuffled and tried in order; a server counts as reachable only when it answers
`server.version` within a second. Every request has its own timeout; a timed-out connection
is closed, since an answer may still arrive for the old id.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

from prism.claim.decode import ClaimError, DecodedClaim, decode_claim
from prism.claim.schema import Message
from prism.hostport import AddressError, parse_host_port
from prism.hub.protocol import VERSION_PROBE, HubError, decode_outputs, encode_request, parse_response
from prism.hub.tx import TxError, claim_at

log = logging.getLogger("prism.hub")

DIAL_TIMEOUT = 5.0
VERSION_TIMEOUT = 1.0
REQUEST_TIMEOUT = 1.0
LINE_LIMIT = 8 * 1024 * 1024


class HubClient:
    """`await connect()`, then `resolve`, `transaction_get`, `claims_in_tx`, `claim_in_tx`; `close()`."""

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        dial_timeout: float = DIAL_TIMEOUT,
        shuffle: Callable[[list[str]], None] = random.shuffle,
    ) -> None:
        self.addresses = list(addresses)
        self.request_timeout = request_timeout
        self.dial_timeout = dial_timeout
        self.shuffle = shuffle
        self.address = ""
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._next_id = 0
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> HubClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect to the first shuffled address that answers the version probe in time."""
        order = list(self.addresses)
        self.shuffle(order)
        failures = []
        for address in order:
            try:
                await self._open(address)
                return
            except (OSError, TimeoutError, HubError, AddressError) as e:
                failures.append(f"{address}: {e or type(e).__name__}")
                log.info("wallet server %s: %s", address, e or type(e).__name__)
                await self.close()
        raise HubError("no wallet server answered (" + "; ".join(failures or ["no addresses given"]) + ")")

    async def _open(self, address: str) -> None:
        host, port = parse_host_port(address, what="wallet server")
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=LINE_LIMIT), self.dial_timeout
        )
        self._reader, self._writer = reader, writer
        writer.write(VERSION_PROBE)
        try:
            line = await asyncio.wait_for(reader.readline(), VERSION_TIMEOUT)
        except TimeoutError:
            raise HubError(f"no answer to server.version within {VERSION_TIMEOUT:g} s") from None
        if not line:
            raise HubError("the connection closed before server.version was answered")
        parse_response(line)
        self.address = address

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ConnectionError):
                pass

    async def request(self, method: str, params: list[str]) -> Any:
        """The result of one call; HubError for the hub's error, a timeout or a lost connection."""
        async with self._lock:
            if self._writer is None or self._reader is None:
                raise HubError("not connected to a wallet server")
            request_id = self._next_id
            self._next_id += 1
            self._writer.write(encode_request(request_id, method, params))
            try:
                return await asyncio.wait_for(self._answer(self._reader, request_id), self.request_timeout)
            except TimeoutError:
                await self.close()
                raise HubError(
                    f"{self.address} did not answer {method} within {self.request_timeout:g} s"
                ) from None

    async def _answer(self, reader: asyncio.StreamReader, request_id: int) -> Any:
        while True:
            try:
                line = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError):
                raise HubError("the wallet server sent an over-long line") from None
            if not line:
                raise HubError(f"{self.address} closed the connection")
            answer_id, result = parse_response(line)
            if answer_id == request_id:
                return result

    async def resolve(self, url: str) -> Message:
        """`blockchain.claimtrie.resolve`: the Outputs message."""
        return decode_outputs(await self.request("blockchain.claimtrie.resolve", [url]))

    async def transaction_get(self, txid: str) -> bytes:
        """`blockchain.transaction.get`: the raw transaction."""
        result = await self.request("blockchain.transaction.get", [txid])
        try:
            return bytes.fromhex(result)
        except (TypeError, ValueError):
            raise HubError(f"transaction {txid} came back as something other than hex") from None

    async def claims_in_tx(self, txid: str) -> list[Any]:
        """`blockchain.claimtrie.getclaimsintx`: the hub's list of claims in the transaction."""
        result = await self.request("blockchain.claimtrie.getclaimsintx", [txid])
        return result if isinstance(result, list) else []

    async def claim_in_tx(self, txid: str, nout: int) -> DecodedClaim:
        """The claim at output `nout` of transaction `txid`, decoded."""
        raw = await self.transaction_get(txid)
        try:
            return decode_claim(claim_at(raw, nout).value)
        except (TxError, ClaimError) as e:
            raise HubError(f"{txid}:{nout}: {e}") from None
