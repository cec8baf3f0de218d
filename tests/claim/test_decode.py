"""Every claim form lbry.go accepts decodes to the fields claims.md §1.5 lists; nothing else escapes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prism.claim.decode import ClaimError, decode_claim, decode_claim_hex
from prism.claim.jsonout import go_json_string, jsonpb
from prism.claim.keys import compressed, parse_public_key
from prism.claim.schema import LANGUAGES, Message, decode, encode, new
from tests.claim import vectors as v


def _get(msg: Message | None, *path: str) -> object:
    for name in path[:-1]:
        assert msg is not None
        msg = msg.sub(name)
    assert msg is not None
    return msg.get(path[-1])


def test_vector_a_unsigned_stream() -> None:
    d = decode_claim_hex(v.A)
    assert (d.form, d.kind, d.channel_id) == ("v2", "stream", None)
    c = d.claim
    assert _get(c, "title") == "TUM PE MERNE LAG" and _get(c, "description") == "Desi lock"
    assert [lang.get("language") for lang in c.get("languages")] == [LANGUAGES.index("en")]  # type: ignore[union-attr]
    assert _get(c, "stream", "source", "hash").hex() == (  # type: ignore[union-attr]
        "f1303989f58396694b0c5982c97f7e9d9435841d92aa13f4b80f671c27110c469babc4fbf4bd764155eaac089cfc49e8"
    )
    assert _get(c, "stream", "source", "name") == "TUM PE MERNE LAG.mp4"
    assert _get(c, "stream", "source", "size") == 3287114
    assert _get(c, "stream", "source", "media_type") == "video/mp4"
    assert (
        d.sd_hash
        == "c2c9389731e2a9568f66c78d703736a8c341015ada2e46f5dcc87aa6f08ab17c02df2121d9f6ef74055827a29dfc7580"
    )
    assert _get(c, "stream", "license") == "None"
    assert (_get(c, "stream", "fee", "currency"), _get(c, "stream", "fee", "amount")) == (3, 10)
    assert [_get(c, "stream", "video", k) for k in ("width", "height", "duration")] == [176, 144, 257]
    assert "\n".join(v.A_DECODE_OUTPUT.splitlines()[:-1]) == jsonpb(d.inner)  # type: ignore[arg-type]


def test_vector_b_channel_der_key() -> None:
    d = decode_claim_hex(v.B)
    assert d.kind == "channel"
    key = _get(d.claim, "channel", "public_key")
    assert isinstance(key, bytes) and len(key) == 88
    assert (
        compressed(parse_public_key(key)).hex()
        == "035a0343c155302280da01ae0001b7295241eb03c42a837acf92ccb9680892f7db"
    )
    assert jsonpb(d.inner) == (  # type: ignore[arg-type]
        '{\n  "publicKey": "MFYwEAYHKoZIzj0CAQYFK4EEAAoDQgAEWgNDwVUwIoDaAa4AAbcpUkHrA8Qqg3rPksy5aAiS99tQ/R08FLKL'
        'tZTjBPBfxK58HyIqhdHRo0YbPPuZBvZstQ=="\n}'
    )


def test_vector_c_signed_stream() -> None:
    d = decode_claim_hex(v.C)
    assert d.channel_id == "e67323a67a42307410f9679bf7fb344a428eb75c"
    assert d.signature is not None and len(d.signature) == 64
    assert _get(d.claim, "title") == "test pub"
    assert (
        d.sd_hash
        == "2eb61ea475017e28c013616a56c1219ba90dc35fffff453d9675146f648f66634e0d1516528d37aba9f5801229d9f218"
    )
    assert _get(d.claim, "stream", "source", "name") == "01 - Unmastered Impulses.7z"
    assert _get(d.claim, "stream", "source", "size") == 122
    assert _get(d.claim, "stream", "source", "media_type") == "application/x-ext-7z"
    assert _get(d.claim, "stream", "license") == "None"
    thumbnail = d.claim.sub("thumbnail")
    assert thumbnail is not None and thumbnail.values == {}


def test_vector_d_legacy_json() -> None:
    d1 = decode_claim(v.D_V1)
    assert d1.form == "legacy JSON v1"
    assert (
        d1.sd_hash
        == "bbd1f68374ff9a1044a90d7dd578ce41979211c386caf19e6f496536db5f2c96b58fe2c7a6677b331419a117873b539f"
    )
    assert _get(d1.claim, "stream", "author") == "root" and _get(d1.claim, "stream", "license") == "None"
    assert _get(d1.claim, "stream", "source", "media_type") == "application/octet-stream"
    assert _get(d1.claim, "stream", "fee", "currency") == 1
    assert _get(d1.claim, "stream", "fee", "amount") == 100000000
    assert (
        _get(d1.claim, "stream", "fee", "address").hex()
        == "557aeded875ea71988ee0edfb3bd961b1f01d3e13b2cabc798"
    )  # type: ignore[union-attr]
    assert _get(d1.claim, "thumbnail", "url") == "/home/robert/lbry/speed.jpg"
    assert d1.claim.get("languages")[0].get("language") == LANGUAGES.index("en")  # type: ignore[index]
    d3 = decode_claim(v.D_V3)
    assert d3.form == "legacy JSON v3"
    assert (
        d3.sd_hash
        == "d83db664c6d7d570aa824300f4869e0bfb560e765efa477aebf566467f8d3a57f4f8c704cab1308eb75ff8b7e84e3caf"
    )
    assert _get(d3.claim, "stream", "source", "media_type") == "video/mp4"
    assert d3.claim.get("tags") is None  # nsfw false
    d2 = decode_claim(v.D_V2)
    assert d2.form == "legacy JSON v2"
    assert (
        d2.sd_hash
        == "c5ffee0fa5168e16681b519d9d85446e8d1d818a616bd55540aa7374d2321b51abf2ac3dae1443a03dadcc8f7affaa62"
    )
    assert _get(d2.claim, "stream", "fee", "amount") == 1000000000
    assert (
        _get(d2.claim, "stream", "license_url") == "https://creativecommons.org/licenses/by/3.0/us/legalcode"
    )


def test_json_nsfw_becomes_mature_tag() -> None:
    d = decode_claim(v.D_V3.replace(b'"nsfw": false', b'"nsfw": true'))
    assert d.claim.get("tags") == ["mature"]


def test_vector_e_legacy_protobuf_with_fee() -> None:
    d = decode_claim_hex(v.E)
    assert d.form == "legacy v1 protobuf"
    assert _get(d.claim, "title") == "rpg midi"
    assert (
        d.sd_hash
        == "1f41eb0312aa7e8a5ce49349bc77d811da975833719d751523b19f123fc3d528d6a94e3446ccddb7b9329f27a9cad7e3"
    )
    assert _get(d.claim, "stream", "source", "media_type") == "application/x-zip-compressed"
    assert (_get(d.claim, "stream", "fee", "currency"), _get(d.claim, "stream", "fee", "amount")) == (
        1,
        1500000000,
    )


def test_vector_f_legacy_channel() -> None:
    d = decode_claim_hex(v.F)
    assert (d.form, d.kind) == ("legacy v1 protobuf", "channel")
    key = _get(d.claim, "channel", "public_key")
    assert (
        compressed(parse_public_key(key)).hex()
        == "03d015365a40f3e5c03c87227168e5851f44659837bcf6a3398ae633bc37d04ee1"
    )  # type: ignore[arg-type]


def test_vector_g_repost() -> None:
    d = decode_claim_hex(v.G)
    assert d.kind == "repost"
    assert jsonpb(d.inner) == '{\n  "claimHash": "XLeOQko0+/ebZ/kQdDBCeqYjc+Y="\n}'  # type: ignore[arg-type]


def test_channel_with_a_bad_key_is_refused() -> None:
    value = b"\x00" + encode(new("Claim", channel=new("Channel", public_key=b"\x02" + b"\xff" * 32)))
    with pytest.raises(ClaimError, match=r"secp256k1|point"):
        decode_claim(value)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"", "empty"),
        (b"\x01" + b"\x00" * 20, "fewer than the 85"),
        (b"\x00\x0a\x05ab", "runs past the end"),
        (b"{not json", "not JSON"),
        (b'{"ver": "9.9.9"}', "unknown version"),
        (b'{"title": 5}', "'title' is not a string"),
        (b'{"sources": {"lbry_sd_hash": "zz"}}', "not hex"),
    ],
)
def test_errors_name_the_form_and_why(value: bytes, why: str) -> None:
    with pytest.raises(ClaimError, match=why) as e:
        decode_claim(value)
    assert str(e.value).startswith("claim value has no matching version")


def test_bad_hex() -> None:
    with pytest.raises(ClaimError, match="not hex"):
        decode_claim_hex("0g")


def test_v2_string_must_be_utf8() -> None:
    with pytest.raises(ClaimError, match="UTF-8"):
        decode_claim(b"\x00\x42\x02\xff\xfe")


def test_wrong_wire_type_is_an_unknown_field() -> None:
    # title (8) sent as a varint: protobuf-go keeps it as an unknown field, the claim still parses
    d = decode_claim(b"\x00\x40\x05" + bytes.fromhex(v.A)[1:])
    assert d.claim.get("title") == "TUM PE MERNE LAG"


def test_go_json_escaping() -> None:
    assert go_json_string('a<b>&"\\\n\x01é') == '"a\\u003cb\\u003e\\u0026\\"\\\\\\n\\u0001é"'


def test_empty_message_prints_as_gogo_jsonpb() -> None:
    assert jsonpb(new("Stream")) == "{\n\n}"
    assert jsonpb(new("Stream", video=new("Video"))) == '{\n  "video": {\n\n  }\n}'


def test_roundtrip_of_every_v2_vector() -> None:
    for value in (v.A, v.B, v.C, v.G):
        raw = bytes.fromhex(value)
        header = 85 if raw[0] == 1 else 1
        assert encode(decode("Claim", raw[header:])) == raw[header:]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_claim_error(data: bytes) -> None:
    try:
        decode_claim(data)
    except ClaimError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(bytes.fromhex(v.C)) - 1), st.integers(0, 255))
def test_mutated_vectors_raise_only_claim_error(pos: int, byte: int) -> None:
    raw = bytearray(bytes.fromhex(v.C))
    raw[pos] = byte
    try:
        decode_claim(bytes(raw))
    except ClaimError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.integers(0, 2**64 - 1), st.binary(max_size=48))
def test_built_claims_roundtrip(title: str, size: int, sd: bytes) -> None:
    claim = new("Claim", stream=new("Stream", source=new("Source", size=size, sd_hash=sd)), title=title)
    assert decode("Claim", encode(claim)).values.keys() == claim.values.keys() or title == ""
    again = decode_claim(b"\x00" + encode(claim))
    assert again.kind == "stream" and again.sd_hash == sd.hex()
