"""What `prism decode` and `prism resolve` print (claims.md §1.4, §2.4)."""

from __future__ import annotations

import json

from prism.claim.decode import DecodedClaim
from prism.claim.jsonout import go_marshal_indent, go_struct, jsonpb


def decode_text(decoded: DecodedClaim) -> str:
    """reflector.go's `decode`: the inner stream / channel / repost as jsonpb, then the sd hash of a stream.

    Collections and claims without a type get the whole claim as Go's struct JSON (reflector.go
    prints a Go struct dump there).
    """
    inner = decoded.inner
    if inner is None or decoded.kind == "collection":
        return go_marshal_indent(go_struct(decoded.claim))
    text = jsonpb(inner)
    if decoded.kind == "stream":
        text += f"\nSD hash as hex: {decoded.sd_hash}"
    return text


def decode_json(decoded: DecodedClaim) -> str:
    """prism's `decode --json`: the whole claim and its signature fields, for scripts."""
    out = {
        "form": decoded.form,
        "type": decoded.kind,
        "channel_id": decoded.channel_id,
        "signature": decoded.signature.hex() if decoded.signature is not None else None,
        "sd_hash": decoded.sd_hash,
        "claim": json.loads(jsonpb(decoded.claim)),
    }
    return json.dumps(out, indent=2, ensure_ascii=False)


def resolve_text(decoded: DecodedClaim) -> str:
    """reflector.go's `resolve`: json.MarshalIndent of the claim's Go struct."""
    return go_marshal_indent(go_struct(decoded.claim))


async def resolve_claim(address: str, url: str) -> DecodedClaim:
    """Resolve `url` at the wallet server `address`, fetch the transaction and decode its claim.

    The URL and address are checked before any connection (UrlError, AddressError); the hub's
    answers that are errors raise HubError with the hub's text.
    """
    from prism.hostport import parse_host_port
    from prism.hub.client import HubClient
    from prism.hub.protocol import resolved_outpoint
    from prism.hub.url import parse_url

    parse_url(url)
    parse_host_port(address, what="wallet server")
    async with HubClient([address]) as client:
        txid, nout = resolved_outpoint(await client.resolve(url))
        return await client.claim_in_tx(txid, nout)
