"""Bencode as the LBRY DHT uses it (lbry-wire.md §5.2, reflector.md §4.6).

Differences from BitTorrent bencode: dictionary keys may be integers (lbry-sdk) as well as byte strings
(reflector.go); both decode. On encode, integer keys sort numerically and byte keys bytewise.

lbry-sdk's decoder stops a list or dictionary at an embedded dictionary that is not its last element, so
`encode` refuses such shapes unless `allow_inner_dicts=True` (only the legacy `store` layout aimed at
reflector.go nodes needs that).
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 16
"""Deepest nesting accepted on decode (DHT messages need 4)."""

BencodeValue = int | bytes | list[Any] | dict[Any, Any]


class DhtCodecError(ValueError):
    """Base of every error the DHT codec raises for bad input."""


class BencodeError(DhtCodecError):
    """Bytes that are not a bencoded value of the accepted shape, or a value that cannot be encoded."""


def _decode_int(data: bytes, i: int) -> tuple[int, int]:
    # i points just past the leading 'i'
    end = data.find(b"e", i)
    if end < 0:
        raise BencodeError("unterminated integer")
    raw = data[i:end]
    neg = raw[:1] == b"-"
    digits = raw[1:] if neg else raw
    if not digits.isdigit():  # bytes.isdigit: ASCII 0-9 only, False when empty
        raise BencodeError("malformed integer")
    if (digits[0] == 0x30 and len(digits) > 1) or (neg and digits == b"0"):
        raise BencodeError("non-canonical integer")
    if len(digits) > 32:
        raise BencodeError("integer too long")
    return int(raw), end + 1


def _decode_bytes(data: bytes, i: int) -> tuple[bytes, int]:
    colon = data.find(b":", i, i + 12)
    if colon < 0:
        raise BencodeError("malformed string length")
    raw = data[i:colon]
    if not raw.isdigit() or (raw[0] == 0x30 and len(raw) > 1):
        raise BencodeError("malformed string length")
    start = colon + 1
    end = start + int(raw)
    if end > len(data):
        raise BencodeError("string runs past the end of the data")
    return data[start:end], end


def _decode(data: bytes, i: int, depth: int) -> tuple[Any, int]:
    try:
        c = data[i]
    except IndexError:
        raise BencodeError("unexpected end of data") from None
    if 0x30 <= c <= 0x39:
        return _decode_bytes(data, i)
    if c == 0x69:  # i
        return _decode_int(data, i + 1)
    if depth >= MAX_DEPTH:
        raise BencodeError("nested too deeply")
    if c == 0x6C:  # l
        i += 1
        items: list[Any] = []
        n = len(data)
        while True:
            if i >= n:
                raise BencodeError("unterminated list")
            c = data[i]
            if c == 0x65:  # e
                return items, i + 1
            # strings inline: contact triples and compact peers are lists of them (the hot path)
            item, i = _decode_bytes(data, i) if 0x30 <= c <= 0x39 else _decode(data, i, depth + 1)
            items.append(item)
    if c == 0x64:  # d
        i += 1
        out: dict[Any, Any] = {}
        while True:
            if i >= len(data):
                raise BencodeError("unterminated dictionary")
            k = data[i]
            if k == 0x65:
                return out, i + 1
            if k == 0x69:
                key: Any
                key, i = _decode_int(data, i + 1)
            elif 0x30 <= k <= 0x39:
                key, i = _decode_bytes(data, i)
            else:
                raise BencodeError("dictionary key is neither an integer nor a string")
            if key in out:
                raise BencodeError("duplicate dictionary key")
            if i < len(data) and 0x30 <= data[i] <= 0x39:
                out[key], i = _decode_bytes(data, i)
            else:
                out[key], i = _decode(data, i, depth + 1)
    raise BencodeError(f"unexpected byte 0x{c:02x}")


def decode(data: bytes) -> Any:
    """Decode one complete bencoded value; trailing bytes are an error. Raises only BencodeError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BencodeError("bencode input must be bytes")
    data = bytes(data)
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise BencodeError("trailing bytes after value")
    return value


def _key_sort(key: Any) -> tuple[int, Any]:
    if isinstance(key, bool):
        raise BencodeError("bool is not a dictionary key")
    if isinstance(key, int):
        return (0, key)
    if isinstance(key, str):
        return (1, key.encode())
    if isinstance(key, bytes):
        return (1, key)
    raise BencodeError(f"unsupported dictionary key type {type(key).__name__}")


def _encode(value: Any, out: list[bytes], allow_inner_dicts: bool) -> None:
    if isinstance(value, bytes):
        out.append(b"%d:" % len(value))
        out.append(value)
    elif isinstance(value, str):
        _encode(value.encode(), out, allow_inner_dicts)
    elif isinstance(value, bool):
        raise BencodeError("bool cannot be bencoded")
    elif isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, list | tuple):
        out.append(b"l")
        last = len(value) - 1
        for n, item in enumerate(value):
            if not allow_inner_dicts and n != last and isinstance(item, dict):
                raise BencodeError("a dictionary may only be the last element of a list")
            _encode(item, out, allow_inner_dicts)
        out.append(b"e")
    elif isinstance(value, dict):
        keyed = sorted(((_key_sort(k), v) for k, v in value.items()), key=lambda kv: kv[0])
        if len({kind for (kind, _), _ in keyed}) > 1:
            raise BencodeError("a dictionary mixes integer and string keys")
        out.append(b"d")
        last = len(keyed) - 1
        for n, ((kind, key), v) in enumerate(keyed):
            if not allow_inner_dicts and n != last and isinstance(v, dict):
                raise BencodeError("a dictionary value may only be a dictionary under the last key")
            if kind == 0:
                out.append(b"i%de" % key)
            else:
                out.append(b"%d:" % len(key))
                out.append(key)
            _encode(v, out, allow_inner_dicts)
        out.append(b"e")
    else:
        raise BencodeError(f"cannot bencode {type(value).__name__}")


def encode(value: Any, *, allow_inner_dicts: bool = False) -> bytes:
    """Bencode `value` (int, bytes, str, list/tuple, dict with int or string keys)."""
    out: list[bytes] = []
    _encode(value, out, allow_inner_dicts)
    return b"".join(out)
