"""The serf RPC codec: requests to bytes, bytes (in any split) to responses and stream events."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from prism.cluster.codec import Member, Response, SerfCodec, SerfCodecError, StreamEvent

MEMBER = {"Name": "abc", "Addr": b"\x7f\x00\x00\x01", "Port": 17946, "Status": "alive", "Tags": {"r": "1"}}


def pack(*objs: object) -> bytes:
    return b"".join(msgpack.packb(o) for o in objs)


def test_requests_are_a_header_and_an_optional_body() -> None:
    codec = SerfCodec()
    seq, data = codec.request("handshake", {"Version": 1})
    assert seq == 0
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    assert list(unpacker) == [{"Command": "handshake", "Seq": 0}, {"Version": 1}]
    seq, data = codec.request("members")
    assert seq == 1 and msgpack.unpackb(data) == {"Command": "members", "Seq": 1}
    with pytest.raises(ValueError):
        codec.request("event")


def test_responses_with_and_without_bodies_split_anywhere() -> None:
    codec = SerfCodec()
    codec.request("handshake", {"Version": 1})
    codec.request("members")
    codec.request("members")
    codec.request("join", {"Existing": ["x:1"], "Replay": False})
    wire = pack(
        {"Seq": 0, "Error": ""},
        {"Seq": 1, "Error": ""},
        {"Members": [MEMBER]},
        {"Seq": 2, "Error": "Handshake required"},  # no body follows an error here
        {"Seq": 3, "Error": "no route"},
        {"Num": 0},  # join answers with a body even on error
    )
    events = []
    for i in range(len(wire)):  # one byte at a time: framing must not depend on reads
        events += codec.receive(wire[i : i + 1])
    assert events == [
        Response(0, ""),
        Response(1, "", {"Members": [MEMBER]}),
        Response(2, "Handshake required"),
        Response(3, "no route", {"Num": 0}),
    ]
    [member] = [Member.from_wire(m) for m in events[1].body["Members"]]  # type: ignore[index]
    assert member == Member("abc", "127.0.0.1", 17946, "alive", {"r": "1"})


def test_a_stream_yields_events_until_its_stop_is_acknowledged() -> None:
    codec = SerfCodec()
    seq, _ = codec.request("stream", {"Type": "member-join"})
    join = {"Event": "member-join", "Members": [MEMBER]}
    assert codec.receive(pack({"Seq": seq, "Error": ""})) == [Response(seq, "")]
    assert codec.receive(pack({"Seq": seq, "Error": ""}, join) * 2) == [StreamEvent(seq, join)] * 2
    stop, _ = codec.request("stop", {"Stop": seq})
    # an event sent before the stop was handled still arrives
    events = codec.receive(pack({"Seq": seq, "Error": ""}, join, {"Seq": stop, "Error": ""}))
    assert events == [StreamEvent(seq, join), Response(stop, "")]
    with pytest.raises(SerfCodecError):
        codec.receive(pack({"Seq": seq, "Error": ""}))  # the stream is gone: an unknown request


def test_a_refused_stream_has_no_events_and_garbage_is_an_error() -> None:
    codec = SerfCodec()
    seq, _ = codec.request("stream", {"Type": "bogus"})
    assert codec.receive(pack({"Seq": seq, "Error": "Invalid event filter"})) == [
        Response(seq, "Invalid event filter")
    ]
    with pytest.raises(SerfCodecError):
        codec.receive(pack({"Seq": seq, "Error": ""}))
    with pytest.raises(SerfCodecError):
        SerfCodec().receive(pack([1, 2]))


def test_ipv6_and_mapped_addresses() -> None:
    mapped = Member.from_wire({**MEMBER, "Addr": b"\0" * 10 + b"\xff\xff" + b"\x0a\x00\x00\x02"})
    assert mapped.addr == "10.0.0.2"
    v6 = Member.from_wire({**MEMBER, "Addr": b"\0" * 15 + b"\x01"})
    assert v6.addr == "::1"


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=30), st.integers(min_value=0, max_value=3))
def test_members_replies_decode_whatever_the_reads(cuts: list[int], count: int) -> None:
    codec = SerfCodec()
    seqs = [codec.request("members")[0] for _ in range(count)]
    wire = b"".join(pack({"Seq": s, "Error": ""}, {"Members": [MEMBER] * s}) for s in seqs)
    events, at = [], 0
    for cut in [*cuts, len(wire)]:
        events += codec.receive(wire[at : at + cut])
        at += cut
    events += codec.receive(wire[at:])
    assert events == [Response(s, "", {"Members": [MEMBER] * s}) for s in seqs]
