"""*sans-IO* a claim value in every form lbry.go accepts, in its order (claims.md §1.1).

1. v2 protobuf: version byte 0x00 (or any byte but 0x01), or 0x01 + 20-byte channel id
   (byte-reversed) + 64-byte signature, then a `Claim`;
2. the whole value as a legacy v1 protobuf claim;
3. legacy JSON metadata 0.0.1, 0.0.2, 0.0.3.
After a protobuf parse a channel's public key must be a secp256k1 key, or the next form is
tried. Every failure ends in one `ClaimError` naming each form and why it did not fit.
"""

from __future__ import annotations

from dataclasses import dataclass

from prism.claim.keys import PublicKeyError, parse_public_key
from prism.claim.legacy import MigrationError, json_version, load_json, migrate_json, migrate_v1_protobuf
from prism.claim.schema import Message, decode
from prism.claim.wire import WireError

UNSIGNED, SIGNED = 0x00, 0x01
SIGNED_HEADER = 85
CLAIM_TYPES = ("stream", "channel", "collection", "repost")


class ClaimError(ValueError):
    """A value that is no claim in any form; the message says which forms were tried and why."""


@dataclass
class DecodedClaim:
    """A claim value decoded (and, for legacy forms, migrated) to a v2 `Claim`."""

    claim: Message
    form: str
    """How it was read: "v2", "legacy v1 protobuf", "legacy JSON v1", "legacy JSON v2", "legacy JSON v3"."""
    channel_id: str | None = None
    """The signing channel's claim id in display order (hex), for signed claims."""
    signature: bytes | None = None

    @property
    def kind(self) -> str | None:
        """stream, channel, collection, repost, or None."""
        return self.claim.which("type")

    @property
    def inner(self) -> Message | None:
        kind = self.kind
        return self.claim.sub(kind) if kind else None

    @property
    def sd_hash(self) -> str | None:
        """The stream's sd hash as hex; None for other claim types."""
        if self.kind != "stream":
            return None
        stream = self.claim.sub("stream")
        source = stream.sub("source") if stream else None
        sd = source.get("sd_hash") if source else None
        return sd.hex() if isinstance(sd, bytes) else ""


def decode_claim_hex(text: str) -> DecodedClaim:
    """Decode a hex claim value (surrounding whitespace ignored)."""
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError:
        raise ClaimError("the claim value is not hex") from None
    return decode_claim(raw)


def decode_claim(value: bytes) -> DecodedClaim:
    """Decode a claim value in lbry.go's order of forms."""
    reasons: list[str] = []
    for attempt in (_protobuf, _json):
        try:
            return attempt(value)
        except (ClaimError, WireError, MigrationError, PublicKeyError) as e:
            reasons.append(str(e))
    raise ClaimError("claim value has no matching version: " + "; ".join(reasons))


def _protobuf(value: bytes) -> DecodedClaim:
    if not value:
        raise ClaimError("protobuf: the value is empty")
    if value[0] == SIGNED and len(value) < SIGNED_HEADER:
        raise ClaimError(
            f"v2 signed: {len(value)} bytes, fewer than the {SIGNED_HEADER} of the signature header"
        )
    signed = value[0] == SIGNED
    payload = value[SIGNED_HEADER:] if signed else value[1:]
    try:
        decoded = DecodedClaim(decode("Claim", payload), "v2")
        if signed:
            decoded.channel_id = value[1:21][::-1].hex()
            decoded.signature = value[21:SIGNED_HEADER]
    except WireError as v2_error:
        decoded = _legacy_protobuf(value, v2_error)
    _check_channel_key(decoded)
    return decoded


def _legacy_protobuf(value: bytes, v2_error: WireError) -> DecodedClaim:
    try:
        legacy = decode("LegacyClaim", value)
    except WireError as e:
        raise ClaimError(f"v2 protobuf: {v2_error}; legacy v1 protobuf: {e}") from None
    decoded = DecodedClaim(migrate_v1_protobuf(legacy), "legacy v1 protobuf")
    sig = legacy.sub("publisherSignature")
    if sig is not None:
        cert_id, signature = sig.get("certificateId"), sig.get("signature")
        decoded.channel_id = cert_id.hex() if isinstance(cert_id, bytes) else None
        decoded.signature = signature if isinstance(signature, bytes) else None
    return decoded


def _check_channel_key(decoded: DecodedClaim) -> None:
    if decoded.kind != "channel":
        return
    channel = decoded.claim.sub("channel")
    key = channel.get("public_key") if channel else None
    try:
        parse_public_key(key if isinstance(key, bytes) else b"")
    except PublicKeyError as e:
        raise ClaimError(f"{decoded.form} channel: {e}") from None


def _json(value: bytes) -> DecodedClaim:
    try:
        obj = load_json(value)
    except MigrationError as e:
        raise ClaimError(f"legacy JSON: {e}") from None
    for version in (1, 2, 3):
        if json_version(obj, version):
            return DecodedClaim(migrate_json(obj, version), f"legacy JSON v{version}")
    raise ClaimError(f"legacy JSON: unknown version {obj.get('ver')!r}")
