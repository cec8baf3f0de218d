"""`prism publish FILE --name ...` (reflector.md §1.3, claims.md §4): claim a file's stream on chain.

The file is encoded into a stream and its claim built first, so a claim over the 520-byte push
limit is refused before anything is sent. Then, through lbrycrd: pick the smallest spendable
output that pays for the claim and fee, create the transaction with the change, append the
claim output, have lbrycrd sign it; reflect the stream (sd blob first) and only then broadcast.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from prism.app.lbrycrd import METHOD_NOT_FOUND, Lbrycrd, LbrycrdError
from prism.app.send import BlobProducer, PreparedStream, parse_address, prepare_stream
from prism.claim.build import StreamInfo, stream_claim, unsigned_value
from prism.hub.tx import TxError, TxOut, claim_name_script, parse_transaction
from prism.reflector.client import ReflectorClient

CLAIM_ADDRESS = "bSzpgkTnAoiT2YAhUShPpfpajPESfNXVTu"
"""reflector.go's hard-coded address: it receives both the change and the claim."""
CLAIM_ADDRESS_HASH160 = bytes.fromhex("9c82b4ab38ff2cff928623eed0ca8ff0a4eddb2e")
CLAIM_AMOUNT = Decimal("0.01")
FEE = Decimal("0.0002")
DEWEYS_PER_LBC = 100_000_000
DEFAULT_REFLECTOR = "reflector.lbry.com:5566"


class PublishError(Exception):
    """`publish` stopped; the message says at which step and why."""


@dataclass
class PublishRequest:
    path: str
    name: str
    title: str = ""
    description: str = ""
    author: str = ""
    tags: list[str] = field(default_factory=list)
    release_time: int = 0
    reflector: str = DEFAULT_REFLECTOR


@dataclass
class Published:
    txid: str
    decoded: Any
    sd_hash: str
    blobs_reflected: int


def claim_value(request: PublishRequest, stream: PreparedStream) -> bytes:
    """The claim value for the file's stream; PublishError when it cannot go in one script push."""
    info = StreamInfo(
        sd_hash=stream.sd_hash,
        file_name=os.path.basename(request.path),
        size=os.path.getsize(request.path),
        source_hash=stream.source_hash,
        title=request.title,
        description=request.description,
        author=request.author,
        release_time=request.release_time,
        tags=list(request.tags),
    )
    value = unsigned_value(stream_claim(info))
    try:
        claim_name_script(request.name.encode(), value, CLAIM_ADDRESS_HASH160)
    except TxError as e:
        raise PublishError(str(e)) from None
    return value


def pick_output(unspent: Any) -> dict[str, Any]:
    """The smallest spendable output worth at least the claim plus the fee."""
    need = CLAIM_AMOUNT + FEE
    candidates = [
        u
        for u in (unspent if isinstance(unspent, list) else [])
        if isinstance(u, dict) and u.get("spendable") and Decimal(str(u.get("amount", 0))) >= need
    ]
    if not candidates:
        raise PublishError(f"lbrycrd has no spendable output of at least {need} LBC to pay for the claim")
    return min(candidates, key=lambda u: Decimal(str(u["amount"])))


async def build_signed_tx(lbrycrd: Lbrycrd, name: str, value: bytes) -> str:
    """Steps 1-5 of claims.md §4: the signed transaction's hex."""
    await lbrycrd.call("getblockchaininfo")
    utxo = pick_output(await lbrycrd.call("listunspent", 1))
    change = Decimal(str(utxo["amount"])) - CLAIM_AMOUNT - FEE
    raw_hex = await lbrycrd.call(
        "createrawtransaction", [{"txid": utxo["txid"], "vout": utxo["vout"]}], {CLAIM_ADDRESS: change}, 0
    )
    try:
        tx = parse_transaction(bytes.fromhex(raw_hex))
    except (TxError, ValueError, TypeError) as e:
        raise PublishError(f"lbrycrd's createrawtransaction answer is not a transaction: {e}") from None
    script = claim_name_script(name.encode(), value, CLAIM_ADDRESS_HASH160)
    tx.outputs.append(TxOut(int(CLAIM_AMOUNT * DEWEYS_PER_LBC), script))
    signed = await lbrycrd.call("signrawtransaction", tx.serialize().hex())
    if not isinstance(signed, dict) or not signed.get("complete"):
        raise PublishError("lbrycrd could not sign the whole transaction (complete is false)")
    return str(signed["hex"])


async def reflect(address: str, path: str, stream: PreparedStream) -> int:
    """Send the stream with handshake v0, sd blob first; any refused blob raises. Blobs sent."""
    host, port = parse_address(address)
    producer = BlobProducer(path, stream.sd)
    try:
        async with ReflectorClient(host, port, version=0, timeout=180.0) as client:
            result = await client.send_blob(stream.sd_hash, stream.sd_bytes, is_sd=True)
            for blob_hash in stream.sd.content_hashes:
                await client.send_blob(blob_hash, await producer.get(blob_hash), result=result)
    finally:
        producer.close()
    return result.sent + result.already_present


async def broadcast(lbrycrd: Lbrycrd, signed_hex: str) -> str:
    """sendrawtransaction as reflector.go does: `[hex, false]`, or `[hex, max fee]` on newer lbrycrd."""
    try:
        await lbrycrd.call("getinfo")
        params: list[Any] = [signed_hex, False]
    except LbrycrdError as e:
        if e.code != METHOD_NOT_FOUND:
            raise
        await lbrycrd.call("getnetworkinfo")
        params = [signed_hex, 10_000_000]
    return str(await lbrycrd.call("sendrawtransaction", *params))


async def publish(
    request: PublishRequest, lbrycrd: Lbrycrd, echo: Callable[[str], None] = lambda s: None
) -> Published:
    """Encode, build, sign, reflect, broadcast; PublishError / LbrycrdError / ReflectorError on failure."""
    if not os.path.isfile(request.path):
        raise PublishError(f"{request.path}: not a readable file")
    stream = await asyncio.to_thread(prepare_stream, request.path)
    value = claim_value(request, stream)
    signed_hex = await build_signed_tx(lbrycrd, request.name, value)
    echo(f"reflecting stream {stream.sd_hash} to {request.reflector}")
    reflected = await reflect(request.reflector, request.path, stream)
    txid = await broadcast(lbrycrd, signed_hex)
    decoded = await lbrycrd.call("decoderawtransaction", signed_hex)
    return Published(txid, decoded, stream.sd_hash, reflected)


def publish_output(published: Published) -> str:
    """`TX: <indented JSON>` then `TXID: <id>`, as reflector.go prints them."""
    tx_json = json.dumps(published.decoded, indent=2, default=float)  # lbrycrd amounts are Decimals
    return f"TX: {tx_json}\nTXID: {published.txid}"
