"""*sans-IO* the LBRY protobuf messages prism reads and writes, described by field number.

prism's own description of the messages in lbryio/types (claims.md §1.2, §1.3, §2.2): the
field numbers, kinds and names are facts of the wire format. `decode` and `encode` follow
protobuf-go's rules where they matter for which values parse: a known field with the wrong
wire type is kept as an unknown field, proto3 strings must be UTF-8, proto2 required fields
must be present, a repeated singular message merges, the last member of a oneof wins.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Union

from prism.claim.wire import FIXED32, LEN, VARINT, WireError, encode_field, encode_varint, iter_fields

Value = Union[int, bool, str, bytes, float, "Message", list["Value"]]

LANGUAGES: tuple[str, ...] = tuple(
    "UNKNOWN_LANGUAGE en aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs"
    " cu cv cy da de dv dz ee el eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy"
    " hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo"
    " lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt"
    " qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr"
    " ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu".split()
)
"""ISO 639-1 codes in the order of the Language enum (the same in v1 and v2)."""

CURRENCIES = ("UNKNOWN_CURRENCY", "LBC", "BTC", "USD")
LIST_TYPES = {0: "COLLECTION", 2: "DERIVATION"}
ERROR_CODES = ("UNKNOWN_CODE", "NOT_FOUND", "INVALID", "BLOCKED")
V1_CLAIM_TYPES = ("UNKNOWN_CLAIM_TYPE", "streamType", "certificateType")
V1_KEY_TYPES = ("UNKNOWN_PUBLIC_KEY_TYPE", "NIST256p", "NIST384p", "SECP256k1")
V1_VERSIONS = ("UNKNOWN_VERSION", "_0_0_1", "_0_0_2", "_0_0_3", "_0_1_0")

SCALAR_KINDS = {"string", "bytes", "bool", "uint32", "uint64", "int32", "int64", "sint32", "enum", "float"}


def _enum(names: tuple[str, ...] | Mapping[int, str]) -> Mapping[int, str]:
    return names if isinstance(names, Mapping) else dict(enumerate(names))


@dataclass(frozen=True)
class Field:
    number: int
    name: str
    kind: str
    """A scalar kind of SCALAR_KINDS, or "message" (then `message` names the schema)."""
    repeated: bool = False
    message: str = ""
    enum: Mapping[int, str] | None = None
    oneof: str = ""
    required: bool = False

    @property
    def json_name(self) -> str:
        head, *rest = self.name.split("_")
        return head + "".join(p[:1].upper() + p[1:] for p in rest)


@dataclass(frozen=True)
class Schema:
    name: str
    fields: tuple[Field, ...]
    proto2: bool = False

    def by_number(self, number: int) -> Field | None:
        for f in self.fields:
            if f.number == number:
                return f
        return None

    def by_name(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name!r}")


@dataclass
class Message:
    """A decoded message: the fields present, by name (a oneof holds only its last member)."""

    schema: Schema
    values: dict[str, Value] = field(default_factory=dict)

    def get(self, name: str) -> Value | None:
        return self.values.get(name)

    def sub(self, name: str) -> Message | None:
        v = self.values.get(name)
        return v if isinstance(v, Message) else None

    def set(self, name: str, value: Value) -> Message:
        f = self.schema.by_name(name)
        if f.oneof:
            for other in self.schema.fields:
                if other.oneof == f.oneof:
                    self.values.pop(other.name, None)
        self.values[name] = value
        return self

    def which(self, oneof: str) -> str | None:
        for f in self.schema.fields:
            if f.oneof == oneof and f.name in self.values:
                return f.name
        return None


SCHEMAS: dict[str, Schema] = {}


def message(name: str, *fields: Field, proto2: bool = False) -> Schema:
    schema = Schema(name, fields, proto2)
    SCHEMAS[name] = schema
    return schema


def new(schema_name: str, /, **values: Value) -> Message:
    """A message of schema `schema_name` with these fields set."""
    msg = Message(SCHEMAS[schema_name])
    for k, v in values.items():
        msg.set(k, v)
    return msg


def F(number: int, name: str, kind: str, **kw: object) -> Field:
    if kind not in SCALAR_KINDS:
        return Field(number, name, "message", message=kind, **kw)  # type: ignore[arg-type]  # table kwargs
    return Field(number, name, kind, **kw)  # type: ignore[arg-type]  # table kwargs


# -- v2 claim.proto ---------------------------------------------------------------------------
message(
    "Claim",
    F(1, "stream", "Stream", oneof="type"),
    F(2, "channel", "Channel", oneof="type"),
    F(3, "collection", "ClaimList", oneof="type"),
    F(4, "repost", "ClaimReference", oneof="type"),
    F(8, "title", "string"),
    F(9, "description", "string"),
    F(10, "thumbnail", "Source"),
    F(11, "tags", "string", repeated=True),
    F(12, "languages", "Language", repeated=True),
    F(13, "locations", "Location", repeated=True),
)
message(
    "Stream",
    F(1, "source", "Source"),
    F(2, "author", "string"),
    F(3, "license", "string"),
    F(4, "license_url", "string"),
    F(5, "release_time", "int64"),
    F(6, "fee", "Fee"),
    F(10, "image", "Image", oneof="type"),
    F(11, "video", "Video", oneof="type"),
    F(12, "audio", "Audio", oneof="type"),
    F(13, "software", "Software", oneof="type"),
)
message(
    "Channel",
    F(1, "public_key", "bytes"),
    F(2, "email", "string"),
    F(3, "website_url", "string"),
    F(4, "cover", "Source"),
    F(5, "featured", "ClaimList"),
)
message("ClaimReference", F(1, "claim_hash", "bytes"))
message(
    "ClaimList",
    F(1, "list_type", "enum", enum=LIST_TYPES),
    F(2, "claim_references", "ClaimReference", repeated=True),
)
message(
    "Source",
    F(1, "hash", "bytes"),
    F(2, "name", "string"),
    F(3, "size", "uint64"),
    F(4, "media_type", "string"),
    F(5, "url", "string"),
    F(6, "sd_hash", "bytes"),
    F(7, "bt_infohash", "bytes"),
)
message(
    "Fee",
    F(1, "currency", "enum", enum=_enum(CURRENCIES)),
    F(2, "address", "bytes"),
    F(3, "amount", "uint64"),
)
message("Image", F(1, "width", "uint32"), F(2, "height", "uint32"))
message(
    "Video",
    F(1, "width", "uint32"),
    F(2, "height", "uint32"),
    F(3, "duration", "uint32"),
    F(15, "audio", "Audio"),
)
message("Audio", F(1, "duration", "uint32"))
message("Software", F(1, "os", "string"))
message(
    "Language",
    F(1, "language", "enum", enum=_enum(LANGUAGES)),
    F(2, "script", "enum", enum={}),
    F(3, "region", "enum", enum={}),
)
message(
    "Location",
    F(1, "country", "enum", enum={}),
    F(2, "state", "string"),
    F(3, "city", "string"),
    F(4, "code", "string"),
    F(5, "latitude", "sint32"),
    F(6, "longitude", "sint32"),
)

# -- v1 (legacy, proto2) ----------------------------------------------------------------------
_V = {"enum": _enum(V1_VERSIONS), "required": True}
message(
    "LegacyClaim",
    F(1, "version", "enum", **_V),
    F(2, "claimType", "enum", enum=_enum(V1_CLAIM_TYPES), required=True),
    F(3, "stream", "LegacyStream"),
    F(4, "certificate", "LegacyCertificate"),
    F(5, "publisherSignature", "LegacySignature"),
    proto2=True,
)
message(
    "LegacyStream",
    F(1, "version", "enum", **_V),
    F(2, "metadata", "LegacyMetadata", required=True),
    F(3, "source", "LegacySource", required=True),
    proto2=True,
)
message(
    "LegacySource",
    F(1, "version", "enum", **_V),
    F(2, "sourceType", "enum", enum={0: "UNKNOWN_SOURCE_TYPE", 1: "lbry_sd_hash"}, required=True),
    F(3, "source", "bytes", required=True),
    F(4, "contentType", "string", required=True),
    proto2=True,
)
message(
    "LegacyMetadata",
    F(1, "version", "enum", **_V),
    F(2, "language", "enum", enum=_enum(LANGUAGES), required=True),
    F(3, "title", "string", required=True),
    F(4, "description", "string", required=True),
    F(5, "author", "string", required=True),
    F(6, "license", "string", required=True),
    F(7, "nsfw", "bool", required=True),
    F(8, "fee", "LegacyFee"),
    F(9, "thumbnail", "string"),
    F(10, "preview", "string"),
    F(11, "licenseUrl", "string"),
    proto2=True,
)
message(
    "LegacyFee",
    F(1, "version", "enum", **_V),
    F(2, "currency", "enum", enum=_enum(CURRENCIES), required=True),
    F(3, "address", "bytes", required=True),
    F(4, "amount", "float", required=True),
    proto2=True,
)
message(
    "LegacyCertificate",
    F(1, "version", "enum", **_V),
    F(2, "keyType", "enum", enum=_enum(V1_KEY_TYPES), required=True),
    F(4, "publicKey", "bytes", required=True),
    proto2=True,
)
message(
    "LegacySignature",
    F(1, "version", "enum", **_V),
    F(2, "signatureType", "enum", enum=_enum(V1_KEY_TYPES), required=True),
    F(3, "signature", "bytes", required=True),
    F(4, "certificateId", "bytes", required=True),
    proto2=True,
)

# -- v2 result.proto (the hub's resolve answer) -----------------------------------------------
message(
    "Outputs",
    F(1, "txos", "Output", repeated=True),
    F(2, "extra_txos", "Output", repeated=True),
    F(3, "total", "uint32"),
    F(4, "offset", "uint32"),
    F(5, "blocked", "Blocked", repeated=True),
    F(6, "blocked_total", "uint32"),
)
message(
    "Output",
    F(1, "tx_hash", "bytes"),
    F(2, "nout", "uint32"),
    F(3, "height", "uint32"),
    F(7, "claim", "ClaimMeta", oneof="meta"),
    F(15, "error", "Error", oneof="meta"),
)
message(
    "ClaimMeta",
    F(1, "channel", "Output"),
    F(2, "repost", "Output"),
    F(3, "short_url", "string"),
    F(4, "canonical_url", "string"),
    F(5, "is_controlling", "bool"),
    F(6, "take_over_height", "uint32"),
    F(7, "creation_height", "uint32"),
    F(8, "activation_height", "uint32"),
    F(9, "expiration_height", "uint32"),
    F(10, "claims_in_channel", "uint32"),
    F(11, "reposted", "uint32"),
    F(20, "effective_amount", "uint64"),
    F(21, "support_amount", "uint64"),
    F(22, "trending_group", "uint32"),
)
message(
    "Error", F(1, "code", "enum", enum=_enum(ERROR_CODES)), F(2, "text", "string"), F(3, "blocked", "Blocked")
)
message("Blocked", F(1, "count", "uint32"), F(2, "channel", "Output"))


# -- decoding ---------------------------------------------------------------------------------
MAX_DEPTH = 100
"""Nesting limit: `Output` contains `Output`s, and a hostile answer must not exhaust the stack."""


def decode(name: str, data: bytes, depth: int = 0) -> Message:
    """Parse `data` as message `name`; WireError says why it is not one."""
    if depth > MAX_DEPTH:
        raise WireError(f"messages nested more than {MAX_DEPTH} deep")
    schema = SCHEMAS[name]
    msg = Message(schema)
    for number, wtype, raw in iter_fields(data):
        f = schema.by_number(number)
        if f is None:
            continue
        value = _scalar_or_message(f, wtype, raw, schema.proto2, depth)
        if value is None:
            continue  # a known field with the wrong wire type is an unknown field to protobuf-go
        _store(msg, f, value)
    if schema.proto2:
        missing = [f.name for f in schema.fields if f.required and f.name not in msg.values]
        if missing:
            raise WireError(f"{name}: required field {missing[0]} is missing")
    return msg


def _store(msg: Message, f: Field, value: Value) -> None:
    old = msg.values.get(f.name)
    if f.repeated:
        assert isinstance(old, list) or old is None
        msg.values[f.name] = [*(old or []), value]
    elif isinstance(old, Message) and isinstance(value, Message):
        _merge(old, value)
    else:
        msg.set(f.name, value)


def _merge(into: Message, other: Message) -> None:
    for f in other.schema.fields:
        if f.name in other.values:
            v = other.values[f.name]
            if f.repeated:
                assert isinstance(v, list)
                for item in v:
                    _store(into, f, item)
            else:
                _store(into, f, v)


def _scalar_or_message(f: Field, wtype: int, raw: int | bytes, proto2: bool, depth: int) -> Value | None:
    if f.kind == "float":
        return struct.unpack("<f", raw.to_bytes(4, "little"))[0] if wtype == FIXED32 else None  # type: ignore[union-attr]
    if f.kind in ("string", "bytes", "message"):
        if wtype != LEN:
            return None
        assert isinstance(raw, bytes)
        if f.kind == "message":
            return decode(f.message, raw, depth + 1)
        if f.kind == "bytes":
            return raw
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            if proto2:
                return raw.decode("utf-8", "replace")
            raise WireError(f"field {f.name}: string is not valid UTF-8") from None
    if wtype != VARINT:
        return None
    assert isinstance(raw, int)
    return _varint_value(f.kind, raw)


def _varint_value(kind: str, raw: int) -> int | bool:
    if kind == "bool":
        return raw != 0
    if kind == "uint32":
        return raw & 0xFFFFFFFF
    if kind == "uint64":
        return raw
    if kind == "sint32":
        n = raw & 0xFFFFFFFF
        return (n >> 1) ^ -(n & 1)
    if kind == "int64":
        return raw - (1 << 64) if raw >= 1 << 63 else raw
    n = raw & 0xFFFFFFFF  # int32 and enums
    return n - (1 << 32) if n >= 1 << 31 else n


# -- encoding ---------------------------------------------------------------------------------
def encode(msg: Message) -> bytes:
    """The message in field order; proto3 zero scalars are left out, present sub-messages kept."""
    out = bytearray()
    for f in msg.schema.fields:
        if f.name not in msg.values:
            continue
        v = msg.values[f.name]
        for item in v if isinstance(v, list) else [v]:
            out += _encode_one(f, item, msg.schema.proto2)
    return bytes(out)


def _encode_one(f: Field, v: Value, proto2: bool) -> bytes:
    if isinstance(v, Message):
        return encode_field(f.number, encode(v))
    if f.kind == "float":
        assert isinstance(v, float)
        return encode_varint(f.number << 3 | FIXED32) + struct.pack("<f", v)
    if not proto2 and not f.repeated and not f.oneof and v in (0, "", b"", False):
        return b""
    if isinstance(v, str):
        return encode_field(f.number, v.encode("utf-8"))
    if f.kind == "sint32":
        assert isinstance(v, int)
        return encode_field(f.number, (v << 1) ^ (v >> 31))
    assert isinstance(v, int | bytes)
    return encode_field(f.number, int(v) if isinstance(v, bool) else v)
