from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prism.dht.bencode import BencodeError, DhtCodecError, decode, encode
from tests.hostile import NUMERALS


def test_integer_and_string_keys_decode():
    assert decode(b"di0ei1ei1e3:abce") == {0: 1, 1: b"abc"}
    assert decode(b"d1:0i1e1:13:abce") == {b"0": 1, b"1": b"abc"}


def test_encode_sorts_integer_keys_numerically_and_string_keys_bytewise():
    assert encode({10: 1, 2: 2}) == b"di2ei2ei10ei1ee"
    assert encode({b"token": 1, b"contacts": 2, b"p": 3}) == b"d8:contactsi2e1:pi3e5:tokeni1ee"


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"i",
        b"i01e",
        b"i-0e",
        b"ie",
        b"5:abc",
        b"l",
        b"d",
        b"di0e",
        b"d1:ai1e1:ai2ee",
        b"x",
        b"i1ei2e",
        b"01:a",
        b":a",
        b"dlee",
        b"l" * 100 + b"e" * 100,
    ],
)
def test_malformed_input_raises_codec_error(bad):
    with pytest.raises(BencodeError):
        decode(bad)


def test_never_a_dict_but_last():
    with pytest.raises(BencodeError):
        encode([{b"a": 1}, b"x"])
    with pytest.raises(BencodeError):
        encode({b"a": {b"x": 1}, b"c": 2})
    assert encode([b"x", {b"a": 1}]) == b"l1:xd1:ai1eee"
    assert encode({b"c": 2, b"d": {b"x": 1}}) == b"d1:ci2e1:dd1:xi1eee"
    # only the legacy store (for reflector.go) may break the rule, explicitly
    assert encode([{b"a": 1}, b"x"], allow_inner_dicts=True) == b"ld1:ai1ee1:xe"


def test_mixed_key_kinds_refused():
    with pytest.raises(BencodeError):
        encode({1: 1, b"a": 2})


values = st.recursive(
    st.integers(min_value=-(2**64), max_value=2**64) | st.binary(max_size=60),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.binary(max_size=8), inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_roundtrip(value):
    assert decode(encode(value, allow_inner_dicts=True)) == value


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_decoder_raises_only_codec_errors(data):
    try:
        decode(data)
    except DhtCodecError:
        pass


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=40), st.integers(min_value=0, max_value=200))
def test_fuzz_mutated_valid_datagrams(noise, cut):
    base = bytes.fromhex(
        "6469306569306569316532303a303132333435363738393a3b3c3d3e3f4041424369326534383a"
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f"
        "693365343a70696e676934656c6431353a70726f746f636f6c56657273696f6e693165656565"
    )
    data = base[:cut] + noise + base[cut + len(noise) :]
    try:
        decode(data)
    except DhtCodecError:
        pass


@settings(max_examples=300, deadline=None)
@given(NUMERALS)
def test_fuzz_numerals_only_raise_codec_errors(numeral):
    raw = numeral.encode()
    for data in (b"i" + raw + b"e", raw + b":abc", b"di1e" + raw + b":xe", b"li" + raw + b"ee"):
        try:
            decode(data)
        except DhtCodecError:
            pass
