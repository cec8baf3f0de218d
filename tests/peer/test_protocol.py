"""The sans-IO peer codec: byte-exact against lbry-wire.md §3/§6.4 and reflector.md §4.2, and fuzzed."""

import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prism.blob import sha384_hex
from prism.peer.protocol import (
    BLOB_NOT_FOUND,
    GO_HEADER_LIMIT,
    MAX_REQUEST_SIZE,
    NEED_DATA,
    RATE_ACCEPTED,
    RATE_TOO_LOW,
    BlobComplete,
    BlobData,
    BlobRequest,
    BlobResponse,
    IncomingBlob,
    PeerLocalError,
    PeerProtocolError,
    RequestParser,
    ResponseParser,
    decode_request,
    encode_availability_request,
    encode_found_header,
    encode_request,
    encode_response,
    rate_answer,
)
from tests.hostile import NUMERALS, json_with
from tests.peer.vectors import (
    GO_ADDRESS,
    SD_BYTES,
    SD_HASH,
    SDK_ADDRESS,
    go_found_header,
    go_missing_header,
    sdk_found_header,
    sdk_missing_header,
    sdk_request,
)

H1 = sha384_hex(b"one")
H2 = sha384_hex(b"two")


# --- client request bytes -----------------------------------------------------------------


def test_client_request_is_lbry_sdk_bytes() -> None:
    expected = sdk_request(SD_HASH)
    assert len(expected) == 295
    assert encode_request(SD_HASH) == expected


def test_availability_request_is_lbry_sdk_sub_request() -> None:
    assert encode_availability_request([H1]) == (
        b'{"requested_blobs": ["' + H1.encode() + b'"], "lbrycrd_address": true}'
    )


# --- parsing both server forms ------------------------------------------------------------


def drain_body(parser: ResponseParser) -> tuple[bytes, bool]:
    """The body bytes buffered so far, and whether the blob is complete."""
    body = b""
    while isinstance(event := parser.next_event(), BlobData):
        body += event.data
    return body, isinstance(event, BlobComplete)


def test_parse_lbry_sdk_found_response_with_body_in_same_read() -> None:
    header = sdk_found_header(SD_HASH, 536)
    assert len(header) == 368
    wire = header + SD_BYTES
    assert len(wire) == 904
    parser = ResponseParser()
    parser.receive_data(wire)
    response = parser.next_event()
    assert response == BlobResponse(
        lbrycrd_address=SDK_ADDRESS,
        available_blobs=(SD_HASH,),
        blob_data_payment_rate=RATE_ACCEPTED,
        incoming_blob=IncomingBlob(SD_HASH, 536),
    )
    assert response.body_length == 536
    assert drain_body(parser) == (SD_BYTES, True)
    assert parser.next_event() is NEED_DATA and parser.buffered == 0


def test_parse_reflector_go_found_response() -> None:
    header = go_found_header(SD_HASH, 536)
    assert len(header) == 358
    parser = ResponseParser()
    parser.receive_data(header + SD_BYTES[:100])
    response = parser.next_event()
    assert response == BlobResponse(GO_ADDRESS, (SD_HASH,), RATE_ACCEPTED, IncomingBlob(SD_HASH, 536))
    assert drain_body(parser) == (SD_BYTES[:100], False)
    parser.receive_data(SD_BYTES[100:])
    assert drain_body(parser) == (SD_BYTES[100:], True)


def test_body_read_by_the_shell_itself() -> None:
    parser = ResponseParser()
    parser.receive_data(go_found_header(SD_HASH, 536) + SD_BYTES[:100])
    assert isinstance(parser.next_event(), BlobResponse)
    assert drain_body(parser) == (SD_BYTES[:100], False)
    assert parser.in_body and parser.body_remaining == 436
    with pytest.raises(PeerLocalError):
        parser.body_bytes_received(437)
    parser.body_bytes_received(436)
    assert parser.next_event() == BlobComplete(IncomingBlob(SD_HASH, 536))
    assert not parser.in_body
    with pytest.raises(PeerLocalError):
        parser.body_bytes_received(1)


def test_bytes_after_the_body_are_the_next_header() -> None:
    parser = ResponseParser()
    parser.receive_data(go_found_header(SD_HASH, 536) + SD_BYTES + go_missing_header())
    assert isinstance(parser.next_event(), BlobResponse)
    assert drain_body(parser) == (SD_BYTES, True)
    missing = parser.next_event()
    assert isinstance(missing, BlobResponse) and missing.body_length == 0
    assert parser.next_event() is NEED_DATA


@pytest.mark.parametrize(
    "wire", [sdk_missing_header(), go_missing_header()], ids=["lbry-sdk", "reflector.go"]
)
def test_parse_both_missing_forms(wire: bytes) -> None:
    parser = ResponseParser()
    parser.receive_data(wire)
    response = parser.next_event()
    assert isinstance(response, BlobResponse)
    assert response.available_blobs == ()
    assert response.body_length == 0
    if response.incoming_blob is not None:
        assert response.incoming_blob.error == BLOB_NOT_FOUND


def test_response_split_at_every_byte_including_inner_brace() -> None:
    wire = sdk_found_header(SD_HASH, 536) + SD_BYTES
    for cut in range(1, 380):
        parser = ResponseParser()
        parser.receive_data(wire[:cut])
        first = parser.next_event()
        if cut < 368:
            assert first is NEED_DATA, cut
            parser.receive_data(wire[cut:])
            first = parser.next_event()
            body = drain_body(parser)
        else:
            body = drain_body(parser)
            parser.receive_data(wire[cut:])
            more = drain_body(parser)
            body = (body[0] + more[0], more[1])
        assert isinstance(first, BlobResponse) and first.incoming_blob == IncomingBlob(SD_HASH, 536)
        assert body == (SD_BYTES, True)


def test_response_errors_are_codec_errors() -> None:
    for bad in (
        b" {}",
        b"[1]",
        b'{"incoming_blob": 5}',
        b'{"incoming_blob": {"blob_hash": "x", "length": -1}}',
    ):
        parser = ResponseParser()
        parser.receive_data(bad)
        with pytest.raises(PeerProtocolError):
            parser.next_event()


# --- server output, byte-exact in reflector.go's form -------------------------------------


def test_server_found_header_is_reflector_go_bytes() -> None:
    assert encode_found_header(SD_HASH, 536) == go_found_header(SD_HASH, 536)
    assert encode_response([SD_HASH], RATE_ACCEPTED, IncomingBlob(SD_HASH, 536)) == go_found_header(
        SD_HASH, 536
    )
    assert len(encode_found_header(SD_HASH, 2097152)) <= GO_HEADER_LIMIT


def test_server_missing_header_is_reflector_go_bytes() -> None:
    wire = encode_response([], RATE_ACCEPTED, IncomingBlob("", 0, BLOB_NOT_FOUND))
    assert wire == go_missing_header()
    assert len(wire) <= GO_HEADER_LIMIT


def test_server_availability_only_answer_matches_go_test_example() -> None:
    # reflector.go's test: {"lbrycrd_address":true,"requested_blobs":[a,b]} with both present.
    assert encode_response([H1, H2]) == (
        b'{"lbrycrd_address":"' + GO_ADDRESS.encode() + b'","available_blobs":["' + H1.encode() + b'","'
        b"" + H2.encode() + b'"]}'
    )
    assert encode_response([]) == b'{"lbrycrd_address":"' + GO_ADDRESS.encode() + b'","available_blobs":[]}'


def test_server_rate_answers() -> None:
    assert rate_answer(0.0) == RATE_ACCEPTED and rate_answer(-0.5) == RATE_TOO_LOW
    assert encode_response([], RATE_TOO_LOW).endswith(
        b'"available_blobs":[],"blob_data_payment_rate":"RATE_TOO_LOW"}'
    )


def test_server_other_errors_are_go_escaped() -> None:
    wire = encode_response([], None, IncomingBlob("", 0, "a <b> & c"))
    assert wire.endswith(
        b'"incoming_blob":{"error":"a \\u003cb\\u003e \\u0026 c","blob_hash":"","length":0}}'
    )
    assert json.loads(wire)["incoming_blob"]["error"] == "a <b> & c"


# --- request parser -----------------------------------------------------------------------


def test_request_parser_reads_lbry_sdk_and_go_requests() -> None:
    parser = RequestParser()
    parser.receive_data(sdk_request(SD_HASH))
    parser.receive_data(b'{"requested_blob":"' + H1.encode() + b'"}')
    parser.receive_data(b'{"lbrycrd_address":false,"requested_blobs":["' + H2.encode() + b'"]}')
    first = parser.next_request()
    assert first == BlobRequest((SD_HASH,), True, 0.0, SD_HASH) and first.is_plain_download
    assert parser.next_request() == BlobRequest(None, None, None, H1)
    assert parser.next_request() == BlobRequest((H2,), False, None, None)
    assert parser.next_request() is None
    assert parser.buffered == 0


def test_request_split_across_reads_and_strings_with_braces() -> None:
    wire = b'{"x": "}}{\\"{", "requested_blob": "' + H1.encode() + b'"}' + sdk_request(H2)
    for cut in range(len(wire)):
        parser = RequestParser()
        got = []
        for piece in (wire[:cut], wire[cut:]):
            parser.receive_data(piece)
            while (r := parser.next_request()) is not None:
                got.append(r)
        assert [r.requested_blob for r in got] == [H1, H2], cut


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b" {}", "must start with '{'"),
        (b"GET / HTTP/1.1\r\n", "must start with '{'"),
        (b"{}\n{}", "must start with '{'"),
        (b"{]", "invalid json"),
        (b'{"requested_blob": 5}', "not a string"),
        (b'{"requested_blob": "abc"}', "invalid blob hash"),
        (b'{"requested_blob": "' + H1.upper().encode() + b'"}', "invalid blob hash"),
        (b'{"requested_blobs": "' + H1.encode() + b'"}', "not a list"),
        (b'{"requested_blobs": ["zz"]}', "invalid blob hash"),
        (b'{"lbrycrd_address": "yes"}', "not a boolean"),
        (b'{"blob_data_payment_rate": true}', "not a number"),
        (b'{"blob_data_payment_rate": NaN}', "invalid json"),
        (b'{"a": "\xff"}', "invalid json"),
        (b"{" + b"[" * 40 + b"]" * 40 + b"}", "nests deeper"),
    ],
)
def test_bad_requests_raise_codec_error(wire: bytes, reason: str) -> None:
    parser = RequestParser()
    parser.receive_data(wire)
    with pytest.raises(PeerProtocolError) as e:
        while parser.next_request() is not None:
            pass
    assert reason in e.value.reason
    with pytest.raises(PeerProtocolError):  # a dead parser stays dead
        parser.next_request()


def test_empty_requested_blob_means_no_download_and_unknown_keys_are_ignored() -> None:
    assert decode_request(b'{"requested_blob": "", "future_key": [1]}') == BlobRequest()


def test_request_limit_is_64_kib_not_512_bytes() -> None:
    many = [sha384_hex(bytes([i])) for i in range(200)]  # ~20 KB: reflector.go's 512-byte bug refuses this
    wire = json.dumps({"requested_blobs": many, "lbrycrd_address": True}).encode()
    assert 512 < len(wire) < MAX_REQUEST_SIZE
    parser = RequestParser()
    parser.receive_data(wire)
    assert parser.next_request() == BlobRequest(tuple(many), True)

    too_big = b'{"x": "' + b"a" * MAX_REQUEST_SIZE + b'"}'
    parser = RequestParser()
    parser.receive_data(too_big)
    with pytest.raises(PeerProtocolError, match="too large"):
        parser.next_request()
    # and the same when it trickles in: refused as soon as the limit is passed
    parser = RequestParser()
    with pytest.raises(PeerProtocolError, match="too large"):
        for i in range(0, len(too_big), 1000):
            parser.receive_data(too_big[i : i + 1000])
            parser.next_request()
    assert parser.buffered < MAX_REQUEST_SIZE + 1000


def test_eof_in_the_middle_of_a_request() -> None:
    parser = RequestParser()
    parser.check_eof()
    parser.receive_data(b'{"requested_blob"')
    assert parser.next_request() is None
    with pytest.raises(PeerProtocolError, match="middle of a request"):
        parser.check_eof()


# --- fuzzing ------------------------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_hashes = st.binary(min_size=0, max_size=4).map(sha384_hex)
_requests = st.builds(
    BlobRequest,
    st.none() | st.lists(_hashes, max_size=3).map(tuple),
    st.none() | st.booleans(),
    st.none() | st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.none() | _hashes,
)


def _request_bytes(r: BlobRequest, compact: bool) -> bytes:
    obj: dict[str, object] = {}
    if r.requested_blobs is not None:
        obj["requested_blobs"] = list(r.requested_blobs)
    if r.lbrycrd_address is not None:
        obj["lbrycrd_address"] = r.lbrycrd_address
    if r.blob_data_payment_rate is not None:
        obj["blob_data_payment_rate"] = r.blob_data_payment_rate
    if r.requested_blob is not None:
        obj["requested_blob"] = r.requested_blob
    return json.dumps(obj, separators=(",", ":") if compact else None).encode()


def _feed_all(parser: RequestParser, data: bytes, cuts: list[int]) -> list[BlobRequest]:
    out = []
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for a, b in itertools.pairwise(points):
        parser.receive_data(data[a:b])
        while (r := parser.next_request()) is not None:
            out.append(r)
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(min_value=0, max_value=700), max_size=8))
def test_fuzz_request_parser_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    parser = RequestParser()
    try:
        _feed_all(parser, data, cuts)
        parser.check_eof()
    except PeerProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from([b"", b"{", b'{"requested_blobs": [', b'{"requested_blob": "']),
    value=_json_values,
    junk=st.binary(max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_fuzz_request_parser_json_like_input(
    prefix: bytes, value: object, junk: bytes, cuts: list[int]
) -> None:
    data = prefix + json.dumps(value).encode() + junk
    parser = RequestParser()
    try:
        _feed_all(parser, data, cuts)
    except PeerProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    requests=st.lists(_requests, min_size=1, max_size=5),
    compact=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=10),
)
def test_fuzz_valid_requests_survive_any_split(
    requests: list[BlobRequest], compact: bool, cuts: list[int]
) -> None:
    wire = b"".join(_request_bytes(r, compact) for r in requests)
    got = _feed_all(RequestParser(), wire, cuts)
    expected = [
        BlobRequest(
            r.requested_blobs,
            r.lbrycrd_address,
            r.blob_data_payment_rate,
            r.requested_blob,
        )
        for r in requests
    ]
    assert got == expected


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=500), cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=6))
def test_fuzz_response_parser_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    parser = ResponseParser()
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    try:
        for a, b in itertools.pairwise(points):
            parser.receive_data(data[a:b])
            while parser.next_event() is not NEED_DATA:
                pass
    except PeerProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    key=st.sampled_from(["blob_data_payment_rate", "requested_blobs", "lbrycrd_address", "requested_blob"]),
    numeral=NUMERALS,
)
def test_fuzz_request_numerals_only_raise_codec_error(key: str, numeral: str) -> None:
    parser = RequestParser()
    parser.receive_data(json_with(key, numeral))
    try:
        parser.next_request()
    except PeerProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(numeral=NUMERALS)
def test_fuzz_response_numerals_only_raise_codec_error(numeral: str) -> None:
    parser = ResponseParser()
    parser.receive_data(
        json_with("incoming_blob", '{"blob_hash": "' + "ab" * 48 + '", "length": ' + numeral + "}")
    )
    try:
        parser.next_event()
    except PeerProtocolError:
        pass


def test_a_4000_digit_payment_rate_is_a_codec_error() -> None:
    parser = RequestParser()
    parser.receive_data(json_with("blob_data_payment_rate", "9" * 4000))
    with pytest.raises(PeerProtocolError, match="blob_data_payment_rate"):
        parser.next_request()


@pytest.mark.parametrize("numeral", ["1e400", "-1e400"])
def test_a_payment_rate_beyond_float64_is_a_codec_error(numeral: str) -> None:
    with pytest.raises(PeerProtocolError, match="out of range"):
        decode_request(json_with("blob_data_payment_rate", numeral))
