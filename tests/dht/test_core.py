"""The sans-IO node core, driven with a fake clock and no sockets."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from prism.dht import messages as m
from prism.dht.config import DhtConfig
from prism.dht.core import NodeCore
from prism.dht.routing import Contact

A = ("10.0.0.1", 4444)
B = ("10.0.0.2", 4444)


def make_core(node_id: bytes | None = None, **kw) -> NodeCore:
    cfg = DhtConfig(allow_private_peers=True, **kw)
    return NodeCore(node_id or os.urandom(48), 3333, cfg, now=0.0)


def ask(core: NodeCore, sender: bytes, method: bytes, args, addr=A, now=1.0, legacy=False) -> m.Message:
    rpc = os.urandom(20)
    core.datagram_received(m.encode_request(rpc, sender, method, args, legacy=legacy), addr, now)
    out = core.take_datagrams()
    assert len(out) == 1 and out[0][1] == addr
    msg = m.decode_message(out[0][0])
    assert msg.rpc_id == rpc and msg.node_id == core.node_id
    return msg


def test_ping_and_unknown_method():
    core = make_core()
    assert ask(core, os.urandom(48), m.PING, m.ping_args()).result == b"pong"
    err = ask(core, os.urandom(48), b"bogus", [])
    assert isinstance(err, m.ErrorMessage)
    assert err.exc_type == b"<class 'AttributeError'>" and err.message == b"Invalid method: bogus"


def test_requests_from_own_id_are_ignored():
    core = make_core()
    core.datagram_received(m.encode_request(os.urandom(20), core.node_id, m.PING, []), A, 1.0)
    assert core.take_datagrams() == []


def test_private_addresses_refused_unless_allowed():
    core = NodeCore(os.urandom(48), 3333, DhtConfig(), now=0.0)
    core.datagram_received(
        m.encode_request(os.urandom(20), os.urandom(48), m.PING, []), ("127.0.0.1", 5000), 1.0
    )
    core.datagram_received(
        m.encode_request(os.urandom(20), os.urandom(48), m.PING, []), ("192.168.1.2", 5000), 1.0
    )
    assert core.take_datagrams() == [] and core.stats.refused_address == 2
    core.datagram_received(
        m.encode_request(os.urandom(20), os.urandom(48), m.PING, []), ("8.8.8.8", 5000), 1.0
    )
    assert len(core.take_datagrams()) == 1


def test_store_needs_a_token_bound_to_the_requester_not_the_key():
    core = make_core()
    me = os.urandom(48)
    key1, key2 = os.urandom(48), os.urandom(48)
    fv = ask(core, me, m.FIND_VALUE, m.find_value_args(key1))
    token = m.parse_find_value_result(fv.result, key1).token
    assert token is not None and len(token) == 48
    # the same token serves any key (lbry-sdk and reflector.go cache it per node)
    for key in (key1, key2):
        assert ask(core, me, m.STORE, m.store_args_flat(key, token, 5567, me)).result == b"OK"
    # another node id, another port or another IP: invalid
    for sender, addr in ((os.urandom(48), A), (me, ("10.0.0.1", 4445)), (me, B)):
        err = ask(core, sender, m.STORE, m.store_args_flat(key1, token, 5567, me), addr=addr)
        assert isinstance(err, m.ErrorMessage) and err.message == b"Invalid token"
        assert err.exc_type == b"<class 'ValueError'>"
    # a never-issued token
    err = ask(core, me, m.STORE, m.store_args_flat(key1, os.urandom(48), 5567, me))
    assert isinstance(err, m.ErrorMessage) and err.message == b"Invalid token"


def test_token_valid_for_current_and_previous_secret():
    core = make_core(token_rotation=300.0)
    me, key = os.urandom(48), os.urandom(48)
    token = m.parse_find_value_result(ask(core, me, m.FIND_VALUE, m.find_value_args(key)).result, key).token
    assert ask(core, me, m.STORE, m.store_args_flat(key, token, 5567, me), now=350.0).result == b"OK"
    err = ask(core, me, m.STORE, m.store_args_flat(key, token, 5567, me), now=650.0)
    assert isinstance(err, m.ErrorMessage)


def test_peers_keyed_by_announcing_node_and_expire_after_24h():
    core = make_core()
    key = os.urandom(48)
    zero = b"\0" * 48
    senders = [os.urandom(48) for _ in range(3)]
    for n, s in enumerate(senders):
        addr = (f"10.0.1.{n + 1}", 4444)
        tok = m.parse_find_value_result(ask(core, s, m.FIND_VALUE, [key], addr=addr).result, key).token
        # reflector.go's announcer puts 48 zero bytes as publisher: still one entry per announcing node
        reply = ask(core, s, m.STORE, m.store_args_legacy(key, tok, 5567 + n, zero), addr=addr, legacy=True)
        assert reply.result == b"OK"
    stored = core.peers.get(key, 2.0)
    assert sorted(p.node_id for p in stored) == sorted(senders)
    asker = os.urandom(48)
    res = m.parse_find_value_result(
        ask(core, asker, m.FIND_VALUE, m.find_value_args(key), now=3.0).result, key
    )
    assert {p[2] for p in res.peers} == set(senders) and res.pages == 1
    # the requester's own announcement is left out of answers to it
    own = m.parse_find_value_result(ask(core, senders[0], m.FIND_VALUE, m.find_value_args(key)).result, key)
    assert {p[2] for p in own.peers} == set(senders[1:])
    assert core.peers.get(key, 86400.0 - 1) and core.peers.get(key, 86401.5) == []
    core.handle_timer(86402.0)
    assert len(core.peers) == 0


def test_find_value_answer_forms_and_pages_within_1400_bytes():
    core = make_core()
    key = os.urandom(48)
    for n in range(20):
        core.peers.add(key, os.urandom(48), f"10.1.0.{n + 1}", 5567, 0.0)
    for n in range(8):
        core.routing.add(Contact(os.urandom(48), f"10.2.0.{n + 1}", 4444), 0.0)
    pages = []
    for page in range(3):
        fv = ask(core, os.urandom(48), m.FIND_VALUE, m.find_value_args(key, page))
        res = m.parse_find_value_result(fv.result, key)
        assert res.pages == 3 and res.protocol_version == 1
        assert (len(res.contacts) > 0) == (page == 0)
        pages.append(res.peers)
    assert [len(p) for p in pages] == [8, 8, 4]
    assert len({p[2] for pg in pages for p in pg}) == 20
    # reflector.go form: no protocolVersion asked, none given
    go = ask(core, os.urandom(48), m.FIND_VALUE, [key])
    assert set(go.result) == {key, b"token"} and len(go.result[key]) == 8
    for data, _ in [(m.encode_response_raw(os.urandom(20), core.node_id, core.find_value_result(
            key, 0, 1, os.urandom(48), b"t" * 48, 1.0)), None)]:  # fmt: skip
        assert len(data) <= m.MSG_SIZE_LIMIT


def test_find_node_excludes_requester_and_returns_k_closest():
    core = make_core()
    contacts = [Contact(os.urandom(48), f"10.3.0.{n + 1}", 4444) for n in range(40)]
    for c in contacts:
        core.routing.add(c, 0.0)
    target = os.urandom(48)
    requester = core.routing.closest(target, 1)[0]
    res = ask(core, requester.node_id, m.FIND_NODE, m.find_node_args(target))
    ids = [t[0] for t in m.parse_contact_triples(res.result)]
    assert len(ids) == 8 and requester.node_id not in ids
    assert ids == [c.node_id for c in core.routing.closest(target, 8, exclude=requester.node_id)]


def test_bad_arguments_get_value_error():
    core = make_core()
    err = ask(core, os.urandom(48), m.FIND_NODE, [b"short"])
    assert isinstance(err, m.ErrorMessage) and err.exc_type == b"<class 'ValueError'>"
    err = ask(core, os.urandom(48), m.STORE, [os.urandom(48)])
    assert isinstance(err, m.ErrorMessage)


def wire(a: NodeCore, a_addr, b: NodeCore, b_addr, now: float) -> None:
    """Deliver queued datagrams between two cores until both are quiet."""
    for _ in range(10):
        moved = False
        for src, src_addr, dst, dst_addr in ((a, a_addr, b, b_addr), (b, b_addr, a, a_addr)):
            for data, to in src.take_datagrams():
                if to == dst_addr:
                    dst.datagram_received(data, src_addr, now)
                    moved = True
        if not moved:
            return


def test_responses_matched_by_ip_and_responders_added():
    a, b = make_core(), make_core()
    rpc = a.send_request(B, m.PING, m.ping_args(), 0.0)
    wire(a, A, b, B, 0.1)
    (ev,) = a.take_events()
    assert ev.rpc_id == rpc and ev.response is not None and ev.response.result == b"pong"
    assert b.node_id in a.routing and a.node_id not in b.routing  # b only queues a ping back
    # a response from another IP than the request went to is ignored
    rpc2 = a.send_request(B, m.PING, m.ping_args(), 1.0)
    ((data, _),) = a.take_datagrams()
    req = m.decode_message(data)
    a.datagram_received(m.encode_response(req.rpc_id, b.node_id, b"pong"), ("10.9.9.9", 4444), 1.1)
    assert a.take_events() == [] and a.stats.unmatched == 1
    # same IP, other port: accepted for a response (lbry-sdk checks the IP only)
    a.datagram_received(m.encode_response(rpc2, b.node_id, b"pong"), ("10.0.0.2", 9999), 1.2)
    assert len(a.take_events()) == 1


def test_error_must_match_ip_and_port():
    a = make_core()
    rpc = a.send_request(B, m.STORE, m.store_args_flat(os.urandom(48), b"x" * 48, 1, a.node_id), 0.0)
    a.take_datagrams()
    a.datagram_received(
        m.encode_error(rpc, os.urandom(48), m.VALUE_ERROR, m.INVALID_TOKEN), ("10.0.0.2", 1), 0.1
    )
    assert a.take_events() == []
    a.datagram_received(m.encode_error(rpc, os.urandom(48), m.VALUE_ERROR, m.INVALID_TOKEN), B, 0.2)
    (ev,) = a.take_events()
    assert ev.error is not None and ev.error.message == b"Invalid token"


def test_timeout_after_rpc_timeout_counts_a_failure():
    a = make_core()
    peer = Contact(os.urandom(48), *B)
    a.routing.add(peer, 0.0)
    a.send_request(B, m.PING, m.ping_args(), 0.0, expect_id=peer.node_id)
    assert a.get_timer() == 5.0
    a.handle_timer(4.9)
    assert a.take_events() == []
    a.handle_timer(5.0)
    (ev,) = a.take_events()
    assert ev.timed_out and peer.failures == 1 and a.pending_count == 0


def test_unknown_requester_is_pinged_later_and_added_when_it_answers():
    a, b = make_core(maybe_ping_delay=0.5), make_core()
    b.send_request(A, m.PING, m.ping_args(), 0.0)
    wire(a, A, b, B, 0.0)
    assert b.node_id not in a.routing and a.maybe_ping_count == 1
    a.handle_timer(0.6)
    wire(a, A, b, B, 0.6)
    assert b.node_id in a.routing and a.maybe_ping_count == 0


def test_pending_requests_are_bounded():
    a = make_core(max_pending=4)
    for _ in range(4):
        a.send_request(B, m.PING, m.ping_args(), 0.0)
    try:
        a.send_request(B, m.PING, m.ping_args(), 0.0)
    except Exception as e:  # DhtBusyError
        assert "too many" in str(e)
    else:
        raise AssertionError("expected DhtBusyError")


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_core_never_raises(data):
    core = make_core()
    core.datagram_received(data, A, 1.0)
    for out, _ in core.take_datagrams():
        assert len(out) <= m.MSG_SIZE_LIMIT


_VALID = [
    m.encode_request(b"r" * 20, b"n" * 48, m.PING, m.ping_args()),
    m.encode_request(b"r" * 20, b"n" * 48, m.FIND_NODE, m.find_node_args(b"k" * 48)),
    m.encode_request(b"r" * 20, b"n" * 48, m.FIND_VALUE, m.find_value_args(b"k" * 48, 1)),
    m.encode_request(b"r" * 20, b"n" * 48, m.STORE, m.store_args_flat(b"k" * 48, b"t" * 48, 3333, b"n" * 48)),
    m.encode_request(
        b"r" * 20, b"n" * 48, m.STORE, m.store_args_legacy(b"k" * 48, b"t" * 32, 3333, b"n" * 48), legacy=True
    ),
]


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(_VALID), st.data())
def test_fuzz_core_with_mutated_requests(base, data):
    core = make_core()
    pos = data.draw(st.integers(0, len(base) - 1))
    noise = data.draw(st.binary(min_size=1, max_size=6))
    core.datagram_received(base[:pos] + noise + base[pos + len(noise) :], A, 1.0)
    for out, _ in core.take_datagrams():
        assert len(out) <= m.MSG_SIZE_LIMIT
        m.decode_message(out)


def _fill_far_bucket(core: NodeCore) -> list[Contact]:
    """Our 8 closest contacts, then a full bucket of 8 far ones (it may not split)."""
    own = int.from_bytes(core.node_id, "big")

    def at(bit: int, n: int) -> Contact:
        d = (1 << bit) | int.from_bytes(os.urandom(47), "big") % (1 << bit)
        return Contact((own ^ d).to_bytes(48, "big"), f"10.4.{bit % 256}.{n + 1}", 4444)

    for n in range(8):
        core.routing.add(at(20, n), 0.0)
    far = [at(383, n) for n in range(8)]
    for c in far:
        core.routing.add(c, 0.0)
    newcomer = at(383, 100)
    return [*far, newcomer]


def _answer_as(core: NodeCore, contact: Contact, now: float) -> None:
    rpc = core.send_request(contact.addr, m.PING, m.ping_args(), now)
    core.take_datagrams()
    core.datagram_received(m.encode_response(rpc, contact.node_id, b"pong"), contact.addr, now)
    core.take_events()


def test_full_bucket_challenges_its_stale_head_and_newcomer_replaces_it_if_silent():
    core = make_core()
    *far, newcomer = _fill_far_bucket(core)
    _answer_as(core, newcomer, 100.0)  # bucket full and may not split: the stale head is pinged
    assert newcomer.node_id not in core.routing
    ((ping, to),) = core.take_datagrams()
    assert to == far[0].addr and m.decode_message(ping).method == m.PING
    core.handle_timer(106.0)  # no answer
    assert far[0].node_id not in core.routing and newcomer.node_id in core.routing


def test_stale_head_that_answers_keeps_its_place():
    core = make_core()
    *far, newcomer = _fill_far_bucket(core)
    _answer_as(core, newcomer, 100.0)
    ((ping, to),) = core.take_datagrams()
    req = m.decode_message(ping)
    core.datagram_received(m.encode_response(req.rpc_id, far[0].node_id, b"pong"), to, 100.5)
    core.handle_timer(106.0)
    assert far[0].node_id in core.routing and newcomer.node_id not in core.routing
    # a head that replied within the last minute is not challenged at all
    _answer_as(core, Contact(newcomer.node_id, newcomer.ip, newcomer.port), 101.0)
    assert [d for d, a in core.take_datagrams() if a == far[0].addr] == []


def test_requester_refused_by_a_full_bucket_is_not_pinged_again_while_good():
    core = make_core(maybe_ping_delay=0.5)
    *far, newcomer = _fill_far_bucket(core)
    for c in far:  # the bucket's contacts answered lately: nobody is challenged
        core.routing.add(c, 99.0)
    core.datagram_received(
        m.encode_request(os.urandom(20), newcomer.node_id, m.PING, []), newcomer.addr, 100.0
    )
    core.take_datagrams()
    assert core.maybe_ping_count == 1
    core.handle_timer(100.6)
    ((ping, to),) = core.take_datagrams()
    assert to == newcomer.addr
    rpc = m.decode_message(ping).rpc_id
    core.datagram_received(m.encode_response(rpc, newcomer.node_id, b"pong"), newcomer.addr, 100.7)
    assert newcomer.node_id not in core.routing and core.take_datagrams() == []
    # its next requests are answered, but no ping follows: two full tables would ping each other forever
    for t in (101.0, 102.0, 500.0):
        ask(core, newcomer.node_id, m.PING, m.ping_args(), addr=newcomer.addr, now=t)
        assert core.maybe_ping_count == 0
    # another node id at that address, or the same one after the good period, is pinged as usual
    ask(core, os.urandom(48), m.PING, m.ping_args(), addr=newcomer.addr, now=501.0)
    assert core.maybe_ping_count == 1
    core.handle_timer(502.0)
    core.take_datagrams()
    ask(core, newcomer.node_id, m.PING, m.ping_args(), addr=newcomer.addr, now=100.7 + 900.0)
    assert core.maybe_ping_count == 1


def test_node_that_timed_out_twice_is_silent_for_lookups_until_it_answers_or_time_passes():
    core = make_core()
    gone = os.urandom(48)
    for t in (0.0, 10.0):
        assert gone not in core.silent
        core.send_request(B, m.PING, m.ping_args(), t, expect_id=gone)
        core.handle_timer(t + 5.0)
    assert gone in core.silent
    core.handle_timer(15.0 + 300.0)  # housekeeping forgets it SILENT_FOR seconds after its last timeout
    assert gone not in core.silent
    for t in (400.0, 410.0):
        core.send_request(B, m.PING, m.ping_args(), t, expect_id=gone)
        core.handle_timer(t + 5.0)
    assert gone in core.silent
    rpc = core.send_request(B, m.PING, m.ping_args(), 420.0, expect_id=gone)
    core.take_datagrams()
    core.datagram_received(m.encode_response(rpc, gone, b"pong"), B, 420.1)
    assert gone not in core.silent
