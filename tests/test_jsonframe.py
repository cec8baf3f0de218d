"""The JSON object framer both codecs share: split anywhere, strings with braces, limits, fuzzing."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prism.jsonframe import JsonFramer
from tests.hostile import NUMERALS, json_with


class FrameError(Exception):
    pass


def reflector_framer(max_size: int) -> JsonFramer:
    """A framer with the reflector codec's settings."""
    return JsonFramer(max_size, "message", FrameError, skip_whitespace=True, allow_constants=True)


def test_json_buffer_handles_braces_and_escapes_in_strings() -> None:
    b = reflector_framer(1000)
    text = b'{"a": "}{\\"}", "b": {"c": [1, {"d": "\\\\"}]}}{"x":1}'
    for i in range(len(text)):
        b.feed(text[i : i + 1])
        obj = b.next_object()
        if obj is not None:
            assert obj == {"a": '}{"}', "b": {"c": [1, {"d": "\\"}]}}
            break
    else:
        raise AssertionError("object never completed")
    assert b.take(100) == b""  # the rest was not fed yet


def test_json_buffer_size_limit() -> None:
    b = reflector_framer(64)
    b.feed(b'{"a": "' + b"x" * 100)
    with pytest.raises(FrameError, match="larger than"):
        b.next_object()
    with pytest.raises(FrameError, match="larger than"):  # a dead framer stays dead
        b.next_object()


def test_peer_settings_refuse_whitespace_and_deep_nesting() -> None:
    strict = JsonFramer(1000, "request", FrameError, max_nesting=2)
    strict.feed(b'{"a": [1]}  {}')
    assert strict.next_object() == {"a": [1]}
    with pytest.raises(FrameError, match="must start with"):
        strict.next_object()
    deep = JsonFramer(1000, "request", FrameError, max_nesting=2)
    deep.feed(b'{"a": [[1]]}x')  # not the whole buffer: scanned, and refused at the third level
    with pytest.raises(FrameError, match="nests deeper than 2"):
        deep.next_object()


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    obj=st.dictionaries(st.text(max_size=6), _json_values, max_size=4),
    trailing=st.binary(max_size=40),
    splits=st.lists(st.integers(0, 400), max_size=6),
    spaced_form=st.booleans(),
)
def test_fuzz_json_framing_keeps_trailing_bytes(
    obj: dict, trailing: bytes, splits: list[int], spaced_form: bool
) -> None:
    """Any JSON object, split anywhere and followed by any bytes: the object, then the bytes intact."""
    raw = (json.dumps(obj) if spaced_form else json.dumps(obj, separators=(",", ":"))).encode()
    data = raw + trailing
    buf = reflector_framer(4096)
    got = None
    for a, b in itertools.pairwise(sorted({0, len(data), *(s for s in splits if s <= len(data))})):
        buf.feed(data[a:b])
        if got is None:
            got = buf.next_object()
            if got is None:
                assert b < len(raw)  # complete only once the closing brace arrived
    if got is None:
        got = buf.next_object()
    assert got == obj
    assert buf.take(len(trailing)) == trailing


@settings(max_examples=200, deadline=None)
@given(numeral=NUMERALS, constants=st.booleans(), cut=st.integers(0, 10_000))
def test_fuzz_numerals_only_raise_the_codec_error(numeral: str, constants: bool, cut: int) -> None:
    framer = JsonFramer(64 * 1024, "message", FrameError, allow_constants=constants)
    data = json_with("n", numeral)
    framer.feed(data[:cut])
    try:
        framer.next_object()
        framer.feed(data[cut:])
        framer.next_object()
    except FrameError:
        pass
