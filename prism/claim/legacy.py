"""*sans-IO* legacy claim forms migrated to v2 as lbry.go does (claims.md §1.1 step 6).

Legacy v1 protobuf claims and the JSON metadata of versions 0.0.1, 0.0.2 and 0.0.3. JSON is
read with Go's encoding/json rules that decide whether a value parses: keys match case-
insensitively, unknown keys are ignored, a value of the wrong type is an error.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

from prism.claim.schema import CURRENCIES, LANGUAGES, Message, new

BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
MAX_FLOAT32 = 3.4028234663852886e38


class MigrationError(ValueError):
    """The legacy value parsed but cannot become a v2 claim."""


def base58_decode(text: str) -> bytes:
    """btcutil's base58.Decode: no checksum check, an invalid character gives empty bytes."""
    n = 0
    for ch in text:
        i = BASE58.find(ch)
        if i < 0:
            return b""
        n = n * 58 + i
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * (len(text) - len(text.lstrip("1"))) + body


def deweys(amount: float) -> int:
    """`uint64(float32(amount) * 1e8)`, the multiplication done in float32 as Go does."""
    product = struct.unpack("<f", struct.pack("<f", _f32(amount) * 100000000.0))[0]
    if not math.isfinite(product) or product <= 0:
        return 0  # Go's conversion of a negative or NaN float is undefined; prism says 0
    return min(int(product), (1 << 64) - 1)


def _f32(x: float) -> float:
    value: float = struct.unpack("<f", struct.pack("<f", x))[0]
    return value


def language_value(name: str) -> int:
    """The Language enum number for a code (`en`); 0 when unknown.

    claims.md maps the English name "English" to `en` as well (lbry-sdk does; lbry.go looks
    names up as codes only and would give UNKNOWN_LANGUAGE).
    """
    if name == "English":
        return LANGUAGES.index("en")
    return LANGUAGES.index(name) if name in LANGUAGES[1:] else 0


# -- v1 protobuf ------------------------------------------------------------------------------
def migrate_v1_protobuf(legacy: Message) -> Message:
    """A parsed LegacyClaim as a v2 Claim."""
    claim_type = legacy.get("claimType")
    if claim_type == 2:
        cert = legacy.sub("certificate")
        key = cert.get("publicKey") if cert else None
        return new("Claim", channel=new("Channel", **({"public_key": key} if key is not None else {})))
    if claim_type != 1:
        raise MigrationError(f"unknown v1 claim type {claim_type!r}")
    stream = legacy.sub("stream")
    if stream is None:
        return new("Claim", stream=new("Stream"))
    md, src = stream.sub("metadata"), stream.sub("source")
    assert md is not None and src is not None  # required fields, checked by decode
    out = new(
        "Stream", source=new("Source", media_type=src.get("contentType") or "", sd_hash=_b(src, "source"))
    )
    fee = md.sub("fee")
    if fee is not None:
        amount = fee.get("amount")
        assert isinstance(amount, float)
        out.set("fee", new("Fee", amount=deweys(amount), address=_b(fee, "address"), currency=_currency(fee)))
    for key, name in (("license_url", "licenseUrl"), ("license", "license"), ("author", "author")):
        out.set(key, md.get(name) or "")
    claim = new("Claim", stream=out, thumbnail=new("Source", url=md.get("thumbnail") or ""))
    if md.get("nsfw"):
        claim.set("tags", ["mature"])
    lang = md.get("language")
    claim.set(
        "languages",
        [new("Language", language=lang if isinstance(lang, int) and lang < len(LANGUAGES) else 0)],
    )
    claim.set("title", md.get("title") or "")
    claim.set("description", md.get("description") or "")
    return claim


def _b(msg: Message, name: str) -> bytes:
    v = msg.get(name)
    return v if isinstance(v, bytes) else b""


def _currency(fee: Message) -> int:
    c = fee.get("currency")
    return c if isinstance(c, int) and 0 <= c < len(CURRENCIES) else 0


# -- JSON -------------------------------------------------------------------------------------
JSON_VERSIONS = {"0.0.1": 1, "0.0.2": 2, "0.0.3": 3}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_json(value: bytes) -> dict[str, Any]:
    """The value as a JSON object (Go's json.Unmarshal into a struct)."""
    try:
        obj = json.loads(value.decode("utf-8", "replace"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise MigrationError(f"not JSON ({str(e).split(':')[0]})") from None
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        raise MigrationError("not a JSON object")
    return obj


def _lookup(obj: dict[str, Any], key: str) -> Any:
    if key in obj:
        return obj[key]
    for k, v in obj.items():
        if k.lower() == key.lower():
            return v
    return None


def _str(obj: dict[str, Any], key: str) -> str | None:
    v = _lookup(obj, key)
    if v is not None and not isinstance(v, str):
        raise MigrationError(f"JSON field {key!r} is not a string")
    return v


def _obj(obj: dict[str, Any], key: str) -> dict[str, Any] | None:
    v = _lookup(obj, key)
    if v is not None and not isinstance(v, dict):
        raise MigrationError(f"JSON field {key!r} is not an object")
    return v


def json_version(obj: dict[str, Any], version: int) -> bool:
    """Does `obj` claim to be JSON metadata `version` (1 also when `ver` is absent)?"""
    ver = _str(obj, "ver") or ""
    return JSON_VERSIONS.get(ver) == version or (version == 1 and ver == "")


def migrate_json(obj: dict[str, Any], version: int) -> Message:
    """JSON metadata of `version` (1, 2 or 3) as a v2 stream Claim."""
    _check_types(obj)
    sources = _obj(obj, "sources") or {}
    sd_hex = _str(sources, "lbry_sd_hash") or ""
    try:
        sd_hash = bytes.fromhex(sd_hex)
    except ValueError:
        raise MigrationError(f"V{version} metadata: lbry_sd_hash is not hex") from None
    content_type = _str(obj, "content-type" if version < 3 else "content_type") or ""
    stream = new("Stream", source=new("Source", media_type=content_type, sd_hash=sd_hash))
    fee = _obj(obj, "fee")
    if fee is not None:
        stream.set("fee", _json_fee(fee))
    stream.set("author", _str(obj, "author") or "")
    stream.set("license", _str(obj, "license") or "")
    license_url = _str(obj, "license_url") if version > 1 else None
    if license_url is not None:
        stream.set("license_url", license_url)
    claim = new("Claim", stream=stream, title=_str(obj, "title") or "")
    claim.set("description", _str(obj, "description") or "")
    claim.set("languages", [new("Language", language=language_value(_str(obj, "language") or ""))])
    thumbnail = _str(obj, "thumbnail")
    if thumbnail is not None:
        claim.set("thumbnail", new("Source", url=thumbnail))
    if version > 1 and _lookup(obj, "nsfw") is True:
        claim.set("tags", ["mature"])
    return claim


def _check_types(obj: dict[str, Any]) -> None:
    for key in ("title", "description", "author", "language", "license", "thumbnail", "pubkey"):
        _str(obj, key)
    nsfw = _lookup(obj, "nsfw")
    if nsfw is not None and not isinstance(nsfw, bool):
        raise MigrationError("JSON field 'nsfw' is not a boolean")
    contact = _lookup(obj, "contact")
    if contact is not None and (not isinstance(contact, int) or isinstance(contact, bool)):
        raise MigrationError("JSON field 'contact' is not an integer")


def _json_fee(fee: dict[str, Any]) -> Message:
    infos = {name: _obj(fee, name) for name in ("LBC", "BTC", "USD")}
    amount, currency, address = 0.0, CURRENCIES.index("LBC"), ""
    for name in ("BTC", "LBC", "USD"):
        info = infos[name]
        if info is not None:
            raw = _lookup(info, "amount")
            if raw is not None and (isinstance(raw, bool) or not isinstance(raw, int | float)):
                raise MigrationError("JSON fee amount is not a number")
            if raw is not None and abs(raw) > MAX_FLOAT32:
                raise MigrationError("JSON fee amount does not fit a float32")
            amount, currency, address = float(raw or 0), CURRENCIES.index(name), _str(info, "address") or ""
            break
    return new("Fee", amount=deweys(amount), currency=currency, address=base58_decode(address))
