"""*sans-IO* the two JSON shapes reflector.go prints claims in (claims.md §1.4, §2.4).

`jsonpb` is gogo/protobuf's jsonpb with a 2-space indent (what `decode` prints);
`go_struct_json` is Go's `json.MarshalIndent` of the generated structs (what `resolve`
prints). Both escape strings as Go's encoding/json does.
"""

from __future__ import annotations

import base64
from typing import Union

from prism.claim.schema import Field, Message, Value

JSON = Union[None, bool, int, float, str, list["JSON"], dict[str, "JSON"]]  # noqa: UP007 - a recursive alias needs Union

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_HTML = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def go_json_string(s: str) -> str:
    """`s` quoted as Go's json.Marshal quotes it (HTML characters escaped, non-ASCII raw)."""
    out = ['"']
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch in _HTML:
            out.append(_HTML[ch])
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        elif "\ud800" <= ch <= "\udfff":
            out.append("\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _b64(b: bytes) -> str:
    return '"' + base64.b64encode(b).decode("ascii") + '"'


# -- jsonpb -----------------------------------------------------------------------------------
INDENT = "  "


def jsonpb(msg: Message, indent: str = "") -> str:
    """gogo jsonpb's Marshaler{Indent: "  "} output for `msg` (zero values left out)."""
    parts = []
    for f in msg.schema.fields:
        v = msg.values.get(f.name)
        if v is None or _is_zero(v):
            continue
        parts.append(f'{indent}{INDENT}"{f.json_name}": {_jsonpb_value(f, v, indent)}')
    return "{\n" + ",\n".join(parts) + "\n" + indent + "}"


def _is_zero(v: Value) -> bool:
    return False if isinstance(v, Message) else not v


def _jsonpb_value(f: Field, v: Value, indent: str) -> str:
    if isinstance(v, list):
        inner = indent + INDENT + INDENT
        items = [f"\n{inner}{_jsonpb_value(f, item, indent + INDENT)}" for item in v]
        return "[" + ",".join(items) + f"\n{indent}{INDENT}]"
    if isinstance(v, Message):
        return jsonpb(v, indent + INDENT)
    if f.kind == "enum":
        assert isinstance(v, int) and f.enum is not None
        name = f.enum.get(v)
        return f'"{name}"' if name is not None else str(v)
    if isinstance(v, bytes):
        return _b64(v)
    if isinstance(v, str):
        return go_json_string(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if f.kind in ("int64", "uint64"):
        return f'"{v}"'
    return repr(v) if isinstance(v, float) else str(v)


# -- Go struct JSON ---------------------------------------------------------------------------
def go_struct(msg: Message | None) -> JSON:
    """The generated Go struct as encoding/json sees it: every field, snake_case, oneofs wrapped."""
    if msg is None:
        return None
    out: dict[str, JSON] = {}
    for f in msg.schema.fields:
        if f.oneof:
            if f.oneof.capitalize() in out:
                continue
            chosen = msg.which(f.oneof)
            out[f.oneof.capitalize()] = (
                None if chosen is None else {_go_name(chosen): go_struct(msg.sub(chosen))}
            )
            continue
        out[f.name] = _go_value(f, msg.values.get(f.name))
    return out


def _go_name(proto_name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in proto_name.split("_"))


def _go_value(f: Field, v: Value | None) -> JSON:
    if f.repeated:
        if not v:
            return None
        assert isinstance(v, list)
        return [_go_value(Field(f.number, f.name, f.kind, message=f.message), item) for item in v]
    if f.kind == "message":
        return go_struct(v if isinstance(v, Message) else None)
    if f.kind == "bytes":
        return base64.b64encode(v).decode("ascii") if isinstance(v, bytes) and v else None
    if v is None:
        return "" if f.kind == "string" else (False if f.kind == "bool" else 0)
    assert isinstance(v, bool | int | float | str)
    return v


def go_marshal_indent(value: JSON, indent: str = "") -> str:
    """Go's json.MarshalIndent(value, "", "  ")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return go_json_string(value)
    inner = indent + INDENT
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(inner + go_marshal_indent(v, inner) for v in value) + "\n" + indent + "]"
    if not value:
        return "{}"
    items = [f"{inner}{go_json_string(k)}: {go_marshal_indent(v, inner)}" for k, v in value.items()]
    return "{\n" + ",\n".join(items) + "\n" + indent + "}"
