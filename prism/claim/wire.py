"""*sans-IO* protobuf wire format: varints, tags and length-delimited fields, both ways.

prism decodes LBRY's claim messages by hand rather than through a generated module: the
schemas are a few dozen fields, and a hand decoder lets every malformed input end in one
`WireError` instead of whatever a protobuf runtime raises.
"""

from __future__ import annotations

VARINT, FIXED64, LEN, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5
MAX_FIELD = (1 << 29) - 1


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it."""
    result = 0
    for shift in range(0, 70, 7):
        if pos >= len(data):
            raise WireError("truncated varint")
        b = data[pos]
        pos += 1
        if shift == 63 and b > 1:
            raise WireError("varint overflows 64 bits")
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
    raise WireError("varint longer than 10 bytes")


def iter_fields(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """Every (field number, wire type, value) of a message; groups are skipped as unknown fields."""
    out: list[tuple[int, int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        number, wtype = key >> 3, key & 7
        if number == 0 or number > MAX_FIELD:
            raise WireError(f"invalid field number {number}")
        if wtype == START_GROUP:
            pos = _skip_group(data, pos, number)
            continue
        value, pos = _read_value(data, pos, wtype)
        out.append((number, wtype, value))
    return out


def _read_value(data: bytes, pos: int, wtype: int) -> tuple[int | bytes, int]:
    if wtype == VARINT:
        return read_varint(data, pos)
    if wtype in (FIXED64, FIXED32):
        size = 8 if wtype == FIXED64 else 4
        if pos + size > len(data):
            raise WireError("truncated fixed-width field")
        return int.from_bytes(data[pos : pos + size], "little"), pos + size
    if wtype == LEN:
        length, pos = read_varint(data, pos)
        if length > len(data) - pos:
            raise WireError("length-delimited field runs past the end")
        return data[pos : pos + length], pos + length
    raise WireError(f"invalid wire type {wtype}")


def _skip_group(data: bytes, pos: int, number: int) -> int:
    depth = [number]
    while depth:
        key, pos = read_varint(data, pos)
        n, wtype = key >> 3, key & 7
        if n == 0:
            raise WireError("invalid field number 0")
        if wtype == START_GROUP:
            depth.append(n)
        elif wtype == END_GROUP:
            if depth.pop() != n:
                raise WireError("mismatched end of group")
        else:
            _, pos = _read_value(data, pos, wtype)
    return pos


def encode_varint(value: int) -> bytes:
    """`value` (0 ≤ value < 2**64; negative int64s as their two's complement) as a varint."""
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_field(number: int, value: int | bytes) -> bytes:
    """One field: an int as a varint, bytes as length-delimited."""
    if isinstance(value, int):
        return encode_varint(number << 3 | VARINT) + encode_varint(value)
    return encode_varint(number << 3 | LEN) + encode_varint(len(value)) + value
