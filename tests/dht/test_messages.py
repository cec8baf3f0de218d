"""Byte-exact vectors of lbry-wire.md §6.3 and the reflector.go templates of reflector.md §4.6."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prism.dht import messages as m
from prism.dht.bencode import DhtCodecError
from prism.dht.config import DhtConfig
from prism.dht.core import NodeCore
from prism.dht.routing import Contact

SENDER = bytes(range(48))
RPC = bytes(range(0x30, 0x44))
RESPONDER = b"\xff" * 48
KEY_FF = b"\xff" * 48
KEY_AA = b"\xaa" * 48
TOKEN_BB = b"\xbb" * 48

PING_REQ = bytes.fromhex(
    "6469306569306569316532303a303132333435363738393a3b3c3d3e3f4041424369326534383a"
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f"
    "693365343a70696e676934656c6431353a70726f746f636f6c56657273696f6e693165656565"
)
PING_RESP = bytes.fromhex(
    "6469306569316569316532303a303132333435363738393a3b3c3d3e3f4041424369326534383a"
    + "ff" * 48
    + "693365343a706f6e6765"
)
HEAD_REQ = b"di0ei0ei1e20:" + RPC + b"i2e48:" + SENDER
HEAD_RESP = b"di0ei1ei1e20:" + RPC + b"i2e48:" + RESPONDER
PV = b"d15:protocolVersioni1ee"
FIND_NODE_REQ = HEAD_REQ + b"i3e8:findNodei4el48:" + KEY_FF + PV + b"ee"
FIND_VALUE_REQ = HEAD_REQ + b"i3e9:findValuei4el48:" + KEY_AA + b"d1:pi0e15:protocolVersioni1eeee"
STORE_REQ = (
    HEAD_REQ + b"i3e5:storei4el48:" + KEY_AA + b"48:" + TOKEN_BB + b"i5567e48:" + SENDER + b"i0e" + PV + b"ee"
)
COMPACT = bytes.fromhex("7f00000115bf") + b"\x22" * 48
FIND_VALUE_RESP = (
    HEAD_RESP
    + b"i3ed8:contactsll48:"
    + b"\x11" * 48
    + b"9:127.0.0.1i4444eee1:pi1e15:protocolVersioni1e5:token48:"
    + TOKEN_BB
    + b"48:"
    + KEY_AA
    + b"l54:"
    + COMPACT
    + b"eee"
)
ERROR_RESP = (
    b"di0ei2ei1e20:" + RPC + b"i2e48:" + RESPONDER + b"i3e20:<class 'ValueError'>i4e13:Invalid tokene"
)


def test_sdk_vector_lengths():
    assert (len(PING_REQ), len(PING_RESP), len(FIND_NODE_REQ), len(FIND_VALUE_REQ)) == (125, 97, 180, 187)
    assert (len(STORE_REQ), len(FIND_VALUE_RESP)) == (288, 370)


def test_encode_sdk_requests_byte_exact():
    assert m.encode_request(RPC, SENDER, m.PING, m.ping_args()) == PING_REQ
    assert m.encode_request(RPC, SENDER, m.FIND_NODE, m.find_node_args(KEY_FF)) == FIND_NODE_REQ
    assert m.encode_request(RPC, SENDER, m.FIND_VALUE, m.find_value_args(KEY_AA, 0)) == FIND_VALUE_REQ
    assert (
        m.encode_request(RPC, SENDER, m.STORE, m.store_args_flat(KEY_AA, TOKEN_BB, 5567, SENDER)) == STORE_REQ
    )


def test_encode_sdk_responses_byte_exact():
    assert m.encode_response(RPC, RESPONDER, m.PONG) == PING_RESP
    assert m.encode_error(RPC, RESPONDER, m.VALUE_ERROR, m.INVALID_TOKEN) == ERROR_RESP
    assert m.encode_compact_peer("127.0.0.1", 5567, b"\x22" * 48) == COMPACT
    assert m.decode_compact_peer(COMPACT) == ("127.0.0.1", 5567, b"\x22" * 48)


def test_find_value_response_from_node_state_byte_exact():
    core = NodeCore(RESPONDER, 3333, DhtConfig(allow_private_peers=True))
    core.routing.add(Contact(b"\x11" * 48, "127.0.0.1", 4444), 0.0)
    core.peers.add(KEY_AA, b"\x22" * 48, "127.0.0.1", 5567, 0.0)
    body = core.find_value_result(KEY_AA, 0, 1, SENDER, TOKEN_BB, 1.0)
    assert m.encode_response_raw(RPC, RESPONDER, body) == FIND_VALUE_RESP


def test_empty_find_node_answer_is_93_bytes():
    assert len(m.encode_response_raw(RPC, RESPONDER, b"le")) == 93


def test_decode_sdk_vectors():
    req = m.decode_message(PING_REQ)
    assert req == m.Request(RPC, SENDER, b"ping", [{b"protocolVersion": 1}])
    assert m.decode_message(PING_RESP) == m.Response(RPC, RESPONDER, b"pong")
    fn = m.decode_message(FIND_NODE_REQ)
    assert m.parse_find_args(fn.args) == (KEY_FF, 0, 1)
    fv = m.decode_message(FIND_VALUE_REQ)
    assert m.parse_find_args(fv.args) == (KEY_AA, 0, 1)
    st_ = m.parse_store_args(m.decode_message(STORE_REQ).args)
    assert st_ == m.StoreArgs(KEY_AA, TOKEN_BB, 5567, SENDER, legacy=False)
    res = m.parse_find_value_result(m.decode_message(FIND_VALUE_RESP).result, KEY_AA)
    assert res.token == TOKEN_BB and res.pages == 1 and res.protocol_version == 1
    assert res.contacts == [(b"\x11" * 48, "127.0.0.1", 4444)]
    assert res.peers == [("127.0.0.1", 5567, b"\x22" * 48)]
    assert m.decode_message(ERROR_RESP) == m.ErrorMessage(RPC, RESPONDER, m.VALUE_ERROR, b"Invalid token")


# --- reflector.go templates (reflector.md §4.6) ---------------------------------------------------------

MID = b"M" * 20
NID = b"N" * 48
TARGET = b"T" * 48
GO_TOKEN = b"k" * 32
GO_HEAD_REQ = b"d1:0i0e1:120:" + MID + b"1:248:" + NID
GO_HEAD_RESP = b"d1:0i1e1:120:" + MID + b"1:248:" + NID
GO_PING = GO_HEAD_REQ + b"1:34:ping1:4lee"
GO_PONG = GO_HEAD_RESP + b"1:34:ponge"
GO_FIND_NODE = GO_HEAD_REQ + b"1:38:findNode1:4l48:" + TARGET + b"ee"
GO_FN_RESP = GO_HEAD_RESP + b"1:3ll48:" + b"I" * 48 + b"7:1.2.3.4i4444eeee"
GO_FIND_VALUE = GO_HEAD_REQ + b"1:39:findValue1:4l48:" + TARGET + b"ee"
GO_COMPACT = bytes([1, 2, 3, 4]) + (3333).to_bytes(2, "big") + b"P" * 48
GO_FV_FOUND = GO_HEAD_RESP + b"1:3d48:" + TARGET + b"l54:" + GO_COMPACT + b"e5:token32:" + GO_TOKEN + b"ee"
GO_FV_MISS = (
    GO_HEAD_RESP + b"1:3d8:contactsll48:" + b"I" * 48 + b"7:1.2.3.4i4444eee5:token32:" + GO_TOKEN + b"ee"
)
GO_STORE = (
    GO_HEAD_REQ + b"1:35:store1:4l48:" + TARGET + b"d6:lbryid48:" + NID + b"4:porti3333e5:token32:" + GO_TOKEN
    + b"e48:" + NID + b"i0eee"
)  # fmt: skip
GO_ERROR = b"d1:0i2e1:120:" + MID + b"1:248:" + NID + b"1:313:invalid-token1:4lee"
PY_PING = b"di0ei0ei1e20:" + MID + b"i2e48:" + NID + b"i3e4:pingi4eld15:protocolVersioni1eeee"


def test_decode_go_templates():
    assert m.decode_message(GO_PING) == m.Request(MID, NID, b"ping", [])
    assert m.decode_message(GO_PONG) == m.Response(MID, NID, b"pong")
    assert m.parse_find_args(m.decode_message(GO_FIND_NODE).args) == (TARGET, 0, None)
    assert m.parse_contact_triples(m.decode_message(GO_FN_RESP).result) == [(b"I" * 48, "1.2.3.4", 4444)]
    assert m.parse_find_args(m.decode_message(GO_FIND_VALUE).args) == (TARGET, 0, None)
    found = m.parse_find_value_result(m.decode_message(GO_FV_FOUND).result, TARGET)
    assert found.peers == [("1.2.3.4", 3333, b"P" * 48)] and found.token == GO_TOKEN
    assert found.protocol_version is None
    miss = m.parse_find_value_result(m.decode_message(GO_FV_MISS).result, TARGET)
    assert miss.contacts == [(b"I" * 48, "1.2.3.4", 4444)] and miss.peers == [] and miss.token == GO_TOKEN
    assert m.parse_store_args(m.decode_message(GO_STORE).args) == m.StoreArgs(
        TARGET, GO_TOKEN, 3333, NID, True
    )
    assert m.decode_message(GO_ERROR) == m.ErrorMessage(MID, NID, b"invalid-token", b"")
    assert m.decode_message(PY_PING) == m.Request(MID, NID, b"ping", [{b"protocolVersion": 1}])


def test_encode_go_legacy_store_byte_exact():
    args = m.store_args_legacy(TARGET, GO_TOKEN, 3333, NID)
    assert m.encode_request(MID, NID, m.STORE, args, legacy=True) == GO_STORE


def test_legacy_layout_only_when_asked():
    with pytest.raises(DhtCodecError):
        m.encode_request(MID, NID, m.STORE, m.store_args_legacy(TARGET, GO_TOKEN, 3333, NID))


@pytest.mark.parametrize(
    "data",
    [
        b"di0ei0ei1e19:" + b"x" * 19 + b"i2e48:" + NID + b"i3e4:pingi4elee",  # short rpc id
        b"di0ei0ei1e20:" + MID + b"i2e47:" + NID[:47] + b"i3e4:pingi4elee",  # short node id
        b"di0ei7ei1e20:" + MID + b"i2e48:" + NID + b"i3e4:pingi4elee",  # unknown type
        b"di0ei0ei1e20:" + MID + b"i2e48:" + NID + b"i3ei5ei4elee",  # method not a string
        b"di0ei0ei1e20:" + MID + b"i2e48:" + NID + b"i3e4:pingi4ei1ee",  # args not a list
        b"le",
    ],
)
def test_bad_messages(data):
    with pytest.raises(m.MessageError):
        m.decode_message(data)


@pytest.mark.parametrize(
    "args",
    [
        [],
        [b"x" * 47, b"t", 1, NID],
        [TARGET, b"t", 0, NID],
        [TARGET, b"t", 70000, NID],
        [TARGET, 5, 1, NID],
        [TARGET, b"t", 1],
        [TARGET, {b"port": 1, b"token": b"t"}],
        [TARGET, {b"port": 1}, NID, 0],
    ],
)
def test_bad_store_args(args):
    with pytest.raises(m.MessageError):
        m.parse_store_args(args)


def test_receive_limit_and_big_datagrams():
    # a reflector.go findValue answer with many peers (over 1400 bytes) still decodes
    peers = b"".join(b"54:" + GO_COMPACT for _ in range(60))
    big = GO_HEAD_RESP + b"1:3d48:" + TARGET + b"l" + peers + b"e5:token32:" + GO_TOKEN + b"ee"
    assert 1400 < len(big) <= 4096
    assert len(m.parse_find_value_result(m.decode_message(big).result, TARGET).peers) == 60
    with pytest.raises(m.MessageError):
        m.decode_message(b"d" + b"0" * 9000)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_decode_message(data):
    try:
        m.decode_message(data)
    except DhtCodecError:
        pass


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from([PING_REQ, FIND_VALUE_RESP, STORE_REQ, GO_STORE, GO_FV_FOUND]), st.data())
def test_fuzz_mutated_messages(base, data):
    pos = data.draw(st.integers(0, len(base) - 1))
    noise = data.draw(st.binary(min_size=1, max_size=8))
    mutated = base[:pos] + noise + base[pos + len(noise) :]
    try:
        msg = m.decode_message(mutated)
    except DhtCodecError:
        return
    if isinstance(msg, m.Request):
        for parse in (m.parse_store_args, m.parse_find_args):
            try:
                parse(msg.args)
            except DhtCodecError:
                pass
    elif isinstance(msg, m.Response):
        try:
            m.parse_find_value_result(msg.result, TARGET)
        except DhtCodecError:
            pass
        m.parse_contact_triples(msg.result)


def test_contact_triples_with_bad_addresses_are_skipped():
    bad = [[b"I" * 48, ip, 4444] for ip in (b"1.2.3.4\x00", b"1.2.3", b"\xff", b"1.2.3.4 x", b"::1", b"")]
    assert m.parse_contact_triples([*bad, [b"I" * 48, b"1.2.3.4", 4444]]) == [(b"I" * 48, "1.2.3.4", 4444)]
