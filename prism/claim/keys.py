"""A channel's public key must be a secp256k1 point (claims.md §1.1 step 5)."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_der_public_key


class PublicKeyError(ValueError):
    """Not a secp256k1 public key."""


def parse_public_key(raw: bytes) -> ec.EllipticCurvePublicKey:
    """A 33-byte compressed point, or DER SubjectPublicKeyInfo, on secp256k1 (as lbry.go's keys package)."""
    if len(raw) == 33:
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), raw)
        except ValueError:
            raise PublicKeyError("the 33-byte public key is not a point on secp256k1") from None
    try:
        key = load_der_public_key(raw)
    except (ValueError, TypeError):
        raise PublicKeyError(f"the {len(raw)}-byte public key is neither compressed nor DER") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256K1):
        raise PublicKeyError("the DER public key is not a secp256k1 key")
    return key


def compressed(key: ec.EllipticCurvePublicKey) -> bytes:
    """The 33-byte compressed form of `key`."""
    return key.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
