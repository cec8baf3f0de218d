"""Codec tests: byte-exact against lbry-wire.md §6.4 and reflector.md §4.3, plus fuzzing."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prism.reflector.protocol import (
    NEED_DATA,
    BlobComplete,
    BlobData,
    BlobOffer,
    ClientConnection,
    Handshake,
    OfferAnswer,
    ReceivedAnswer,
    ReceiverConnection,
    ReceiverState,
    ReflectorLocalError,
    ReflectorProtocolError,
    VersionAnswer,
)
from tests.hostile import NUMERALS, json_with

# The stream of lbry-wire.md §6.1.
SD_HASH = "ee87f57509159a2a8b52ef539e0d96da41f1f740cf18ea88b43a8ba5cc4d989b05babfdf960fee390dafcd5d5e08daac"
BLOB0 = "96f9722a1d2ccf0430419ef33da0ba6bff03ec8623b6e0ce602030810d8b85476110072eb64180bfd90ea09c80049524"
BLOB0_BYTES = bytes.fromhex("235c2aa210dec94688a29859b71049d7")

SDK_SERVER_FIRST = b'{"version": 1}{"send_sd_blob": true}{"received_sd_blob": true}{"send_blob": true}{"received_blob": true}'
GO_SERVER_FIRST = (
    b'{"version":1}{"send_sd_blob":true}{"received_sd_blob":true}{"send_blob":true}{"received_blob":true}'
)


def feed_client(conn: ClientConnection, data: bytes) -> list:
    conn.receive_data(data)
    events = []
    while (ev := conn.next_event()) is not NEED_DATA:
        events.append(ev)
    return events


def test_client_bytes_match_lbry_sdk_transcript() -> None:
    c = ClientConnection()
    assert c.send_handshake() == b'{"version": 1}'
    assert feed_client(c, b'{"version": 1}') == [VersionAnswer(1)]
    offer = c.send_offer(SD_HASH, 536, is_sd=True)
    assert offer == ('{"sd_blob_hash": "' + SD_HASH + '", "sd_blob_size": 536}').encode()
    assert feed_client(c, b'{"send_sd_blob": true}') == [OfferAnswer(True, True, ())]
    c.body_sent()
    assert feed_client(c, b'{"received_sd_blob": true}') == [ReceivedAnswer(True, True)]
    offer = c.send_offer(BLOB0, 16)
    assert offer == ('{"blob_hash": "' + BLOB0 + '", "blob_size": 16}').encode()
    assert feed_client(c, b'{"send_blob": true}') == [OfferAnswer(True, False, ())]
    c.body_sent()
    assert feed_client(c, b'{"received_blob": true}') == [ReceivedAnswer(True, False)]


@pytest.mark.parametrize("server_bytes", [SDK_SERVER_FIRST, GO_SERVER_FIRST])
@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_client_parses_both_server_forms_in_any_split(server_bytes: bytes, chunk: int) -> None:
    c = ClientConnection()
    c.send_handshake(1)
    got: list = []
    pos = 0
    steps = [
        lambda: c.send_offer(SD_HASH, 536, is_sd=True),
        c.body_sent,
        lambda: c.send_offer(BLOB0, 16),
        c.body_sent,
    ]
    while pos < len(server_bytes):
        c.receive_data(server_bytes[pos : pos + chunk])
        pos += chunk
        while (ev := c.next_event()) is not NEED_DATA:
            got.append(ev)
            if steps:
                steps.pop(0)()
    assert got == [
        VersionAnswer(1),
        OfferAnswer(True, True, ()),
        ReceivedAnswer(True, True),
        OfferAnswer(True, False, ()),
        ReceivedAnswer(True, False),
    ]


@pytest.mark.parametrize(
    "answer",
    [
        b'{"send_sd_blob": false, "needed_blobs": []}',  # lbry-sdk, second upload
        b'{"send_sd_blob":false}',  # reflector.go omits an empty list
    ],
)
def test_client_reads_already_reflected_in_both_forms(answer: bytes) -> None:
    c = ClientConnection()
    c.send_handshake()
    feed_client(c, b'{"version": 1}')
    c.send_offer(SD_HASH, 536, is_sd=True)
    assert feed_client(c, answer) == [OfferAnswer(False, True, ())]


@pytest.mark.parametrize(
    "answer",
    [
        ('{"send_sd_blob": false, "needed_blobs": ["' + BLOB0 + '"]}').encode(),
        ('{"send_sd_blob":false,"needed_blobs":["' + BLOB0 + '"]}').encode(),
    ],
)
def test_client_reads_needed_blobs(answer: bytes) -> None:
    c = ClientConnection()
    c.send_handshake()
    feed_client(c, b'{"version":1}')
    c.send_offer(SD_HASH, 536, is_sd=True)
    assert feed_client(c, answer) == [OfferAnswer(False, True, (BLOB0,))]


def test_client_v0_offer_accepts_v1_answer() -> None:
    c = ClientConnection()
    assert c.send_handshake(0) == b'{"version": 0}'
    assert feed_client(c, b'{"version": 1}') == [VersionAnswer(1)]


@pytest.mark.parametrize(
    "answer",
    [b'{"version": 2}', b'{"send_blob": true}', b"[1]", b'{"version": "1"}', b"nonsense"],
)
def test_client_rejects_bad_handshake_answers(answer: bytes) -> None:
    c = ClientConnection()
    c.send_handshake()
    with pytest.raises(ReflectorProtocolError):
        feed_client(c, answer)


def test_client_rejects_bad_needed_blobs() -> None:
    c = ClientConnection()
    c.send_handshake()
    feed_client(c, b'{"version":1}')
    c.send_offer(SD_HASH, 536, is_sd=True)
    with pytest.raises(ReflectorProtocolError):
        feed_client(c, b'{"send_sd_blob":false,"needed_blobs":["../etc/passwd"]}')


# -- receiver ----------------------------------------------------------------------------


def events_of(conn: ReceiverConnection) -> list:
    out = []
    while (ev := conn.next_event()) is not NEED_DATA:
        out.append(ev)
        if isinstance(ev, BlobComplete | Handshake | BlobOffer):
            break
    return out


def test_receiver_output_is_reflector_go_form() -> None:
    """Feed lbry-sdk's client bytes (§6.4); the answers are reflector.go's compact bytes."""
    r = ReceiverConnection()
    out = b""
    r.receive_data(b'{"version": 1}')
    assert events_of(r) == [Handshake(1)]
    out += r.send_version(1)
    r.receive_data(('{"sd_blob_hash": "' + SD_HASH + '", "sd_blob_size": 536}').encode())
    assert events_of(r) == [BlobOffer(SD_HASH, 536, True)]
    out += r.send_offer_answer(True)
    sd = b"x" * 536
    r.receive_data(sd)
    assert events_of(r) == [BlobData(sd), BlobComplete(BlobOffer(SD_HASH, 536, True))]
    out += r.send_received(True)
    r.receive_data(('{"blob_hash": "' + BLOB0 + '", "blob_size": 16}').encode() + BLOB0_BYTES)
    assert events_of(r) == [BlobOffer(BLOB0, 16, False)]
    out += r.send_offer_answer(True)
    assert events_of(r) == [BlobData(BLOB0_BYTES), BlobComplete(BlobOffer(BLOB0, 16, False))]
    out += r.send_received(True)
    assert out == GO_SERVER_FIRST


def test_receiver_second_upload_and_needed_blobs_bytes() -> None:
    r = ReceiverConnection()
    r.receive_data(b'{"version":0}')
    events_of(r)
    assert r.send_version(0) == b'{"version":0}'
    r.receive_data(('{"sd_blob_hash":"' + SD_HASH + '","sd_blob_size":536}').encode())
    events_of(r)
    assert r.send_offer_answer(False) == b'{"send_sd_blob":false}'
    r.receive_data(('{"sd_blob_hash":"' + SD_HASH + '","sd_blob_size":536}').encode())
    events_of(r)
    assert (
        r.send_offer_answer(False, [BLOB0])
        == ('{"send_sd_blob":false,"needed_blobs":["' + BLOB0 + '"]}').encode()
    )
    r.receive_data(('{"blob_hash":"' + BLOB0 + '","blob_size":16}').encode())
    events_of(r)
    assert r.send_offer_answer(False) == b'{"send_blob":false}'
    r.receive_data(('{"blob_hash":"' + BLOB0 + '","blob_size":16}').encode())
    events_of(r)
    r.send_offer_answer(True)
    assert r.send_received(False) == b'{"received_blob":false}'
    assert r.state is ReceiverState.CLOSED


def offer_bytes(h: object, size: object, sd: bool = False) -> bytes:
    if sd:
        return json.dumps({"sd_blob_hash": h, "sd_blob_size": size}).encode()
    return json.dumps({"blob_hash": h, "blob_size": size}).encode()


@pytest.mark.parametrize(
    "raw, reason",
    [
        (offer_bytes("abc", 10), "invalid blob hash"),
        (offer_bytes(BLOB0.upper(), 10), "invalid blob hash"),
        (offer_bytes(BLOB0, 0), "positive"),
        (offer_bytes(BLOB0, -1), "positive"),
        (offer_bytes(BLOB0, 3 * 1024 * 1024), "at most 2097152"),
        (offer_bytes(BLOB0, 2097153), "at most 2097152"),
        (offer_bytes(BLOB0, 1.5), "integer"),
        (offer_bytes(BLOB0, "16"), "integer"),
        (offer_bytes(BLOB0, True), "integer"),
        (offer_bytes(SD_HASH, 0, sd=True), "positive"),
        (b'{"sd_blob_hash":"","sd_blob_size":5}', "blob hash is empty"),
        (b'{"blob_hash":"' + BLOB0.encode() + b'"}', "missing blob_size"),
        (b'{"foo":1}', "not a blob offer"),
        (b"[]", "expected a JSON object"),
        (b"{not json}", "invalid json"),
    ],
)
def test_receiver_refuses_bad_offers(raw: bytes, reason: str) -> None:
    r = ReceiverConnection()
    r.receive_data(b'{"version":1}')
    events_of(r)
    r.send_version(1)
    r.receive_data(raw)
    with pytest.raises(ReflectorProtocolError, match=reason):
        r.next_event()


def test_receiver_accepts_size_limits() -> None:
    for size in (1, 2097152):
        r = ReceiverConnection()
        r.receive_data(b'{"version":1}')
        events_of(r)
        r.send_version(1)
        r.receive_data(offer_bytes(BLOB0, size))
        assert r.next_event() == BlobOffer(BLOB0, size, False)


@pytest.mark.parametrize("raw", [b'{"version":2}', b'{"version":-1}', b'{"v":1}', b'{"version":"1"}'])
def test_receiver_refuses_bad_handshakes(raw: bytes) -> None:
    r = ReceiverConnection()
    r.receive_data(raw)
    with pytest.raises(ReflectorProtocolError):
        r.next_event()


def test_receiver_keeps_bytes_after_json() -> None:
    """reflector.go may lose bytes read past an object; prism keeps them."""
    r = ReceiverConnection()
    r.receive_data(b'  {"version": 1}' + offer_bytes(BLOB0, 16) + BLOB0_BYTES[:5])
    assert r.next_event() == Handshake(1)
    r.send_version(1)
    assert r.next_event() == BlobOffer(BLOB0, 16, False)
    r.send_offer_answer(True)
    assert r.next_event() == BlobData(BLOB0_BYTES[:5])
    assert r.next_event() is NEED_DATA
    r.receive_data(BLOB0_BYTES[5:])
    assert r.next_event() == BlobData(BLOB0_BYTES[5:])
    assert r.next_event() == BlobComplete(BlobOffer(BLOB0, 16, False))


def test_body_read_by_shell() -> None:
    r = ReceiverConnection()
    r.receive_data(b'{"version":1}' + offer_bytes(BLOB0, 16))
    r.next_event()
    r.send_version(1)
    r.next_event()
    r.send_offer_answer(True)
    assert r.next_event() is NEED_DATA
    r.body_bytes_received(16)
    assert isinstance(r.next_event(), BlobComplete)


# -- fuzzing -----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), splits=st.lists(st.integers(0, 400), max_size=8))
def test_fuzz_receiver_arbitrary_bytes(data: bytes, splits: list[int]) -> None:
    """Arbitrary bytes in arbitrary pieces: only events or ReflectorProtocolError, never a crash."""
    r = ReceiverConnection()
    cuts = sorted({0, len(data), *(s for s in splits if s <= len(data))})
    try:
        for a, b in itertools.pairwise(cuts):
            r.receive_data(data[a:b])
            while True:
                ev = r.next_event()
                if ev is NEED_DATA:
                    break
                if isinstance(ev, Handshake):
                    r.send_version(ev.version)
                elif isinstance(ev, BlobOffer):
                    r.send_offer_answer(True)
                elif isinstance(ev, BlobComplete):
                    r.send_received(True)
    except ReflectorProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=400),
    splits=st.lists(st.integers(0, 400), max_size=8),
    version_first=st.booleans(),
)
def test_fuzz_client_arbitrary_bytes(data: bytes, splits: list[int], version_first: bool) -> None:
    c = ClientConnection()
    c.send_handshake()
    if version_first:
        data = b'{"version": 1}' + data
    cuts = sorted({0, len(data), *(s for s in splits if s <= len(data))})
    try:
        for a, b in itertools.pairwise(cuts):
            c.receive_data(data[a:b])
            while (ev := c.next_event()) is not NEED_DATA:
                if isinstance(ev, VersionAnswer | ReceivedAnswer):
                    c.send_offer(SD_HASH, 536, is_sd=True)
                elif isinstance(ev, OfferAnswer) and ev.send:
                    c.body_sent()
                elif isinstance(ev, OfferAnswer):
                    c.send_offer(BLOB0, 16)
    except ReflectorProtocolError:
        pass


_offer_json = st.builds(
    lambda sd, size: offer_bytes(SD_HASH if sd else BLOB0, size, sd),
    st.booleans(),
    st.integers(1, 64),
)


@settings(max_examples=200, deadline=None)
@given(
    offers=st.lists(st.tuples(st.booleans(), st.integers(1, 64)), min_size=1, max_size=5),
    splits=st.lists(st.integers(0, 2000), max_size=12),
    spaced_form=st.booleans(),
)
def test_fuzz_valid_conversation_any_split(
    offers: list[tuple[bool, int]], splits: list[int], spaced_form: bool
) -> None:
    """A valid pipelined upload split anywhere gives the same events and the same body bytes."""
    stream = b'{"version": 1}' if spaced_form else b'{"version":1}'
    bodies = []
    for i, (sd, size) in enumerate(offers):
        stream += offer_bytes(SD_HASH if sd else BLOB0, size, sd)
        body = bytes([i]) * size
        bodies.append(body)
        stream += body
    r = ReceiverConnection()
    cuts = sorted({0, len(stream), *(s for s in splits if s <= len(stream))})
    got_offers: list[BlobOffer] = []
    got_bodies: list[bytes] = []
    current = b""
    for a, b in itertools.pairwise(cuts):
        r.receive_data(stream[a:b])
        while (ev := r.next_event()) is not NEED_DATA:
            if isinstance(ev, Handshake):
                r.send_version(1)
            elif isinstance(ev, BlobOffer):
                got_offers.append(ev)
                r.send_offer_answer(True)
            elif isinstance(ev, BlobData):
                current += ev.data
            elif isinstance(ev, BlobComplete):
                got_bodies.append(current)
                current = b""
                r.send_received(True)
    assert [(o.is_sd, o.size) for o in got_offers] == offers
    assert got_bodies == bodies
    assert r.state is ReceiverState.OFFER


def test_local_misuse_is_a_local_error_not_a_protocol_error() -> None:
    r = ReceiverConnection()
    with pytest.raises(ReflectorLocalError):
        r.send_version(1)  # nothing to answer yet
    r.receive_data(b'{"version":1}' + offer_bytes(BLOB0, 16))
    r.next_event()
    r.send_version(1)
    r.next_event()
    with pytest.raises(ReflectorLocalError):
        r.send_offer_answer(False, [BLOB0])  # needed_blobs only answer an sd offer
    with pytest.raises(ReflectorLocalError):
        r.body_bytes_received(1)  # not in a body
    c = ClientConnection()
    with pytest.raises(ReflectorLocalError):
        c.send_handshake(7)
    c.send_handshake(1)
    with pytest.raises(ReflectorLocalError):
        c.send_offer(BLOB0, 16)  # before the version answer
    feed_client(c, b'{"version":1}')
    with pytest.raises(ReflectorLocalError):
        c.send_offer("abc", 16)
    with pytest.raises(ReflectorLocalError):
        c.body_sent()
    assert not issubclass(ReflectorLocalError, ReflectorProtocolError)


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(["blob_size", "sd_blob_size"]), numeral=NUMERALS, version=NUMERALS)
def test_fuzz_receiver_numerals_only_raise_codec_error(key: str, numeral: str, version: str) -> None:
    r = ReceiverConnection()
    hash_key = "sd_blob_hash" if key == "sd_blob_size" else "blob_hash"
    r.receive_data(json_with("version", version))
    r.receive_data(json_with(hash_key, '"' + "ab" * 48 + '"', f', "{key}": {numeral}'))
    try:
        if isinstance(r.next_event(), Handshake):
            r.send_version(1)
            r.next_event()
    except ReflectorProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(["version", "send_blob", "send_sd_blob", "received_blob"]), numeral=NUMERALS)
def test_fuzz_client_numerals_only_raise_codec_error(key: str, numeral: str) -> None:
    c = ClientConnection()
    c.send_handshake(1)
    c.receive_data(json_with(key, numeral))
    try:
        c.next_event()
    except ReflectorProtocolError:
        pass
