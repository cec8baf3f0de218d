"""The sans-IO HTTP/1.1 request codec: fixed cases and hypothesis fuzzing."""

from __future__ import annotations

import random
from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prism.http.h1 import (
    HttpParseError,
    RequestParser,
    http_date,
    parse_query,
    parse_range,
    plan_blob_response,
    render_head,
)
from tests.hostile import NUMERALS

H = "ab" * 48


def test_pipelined_requests_split_anywhere_parse_the_same():
    data = (
        f"GET /blob?hash={H}&edge_token=t HTTP/1.1\r\nHost: x\r\nRange: bytes=1-2\r\n\r\n"
        f"HEAD /blob?hash={H} HTTP/1.1\r\nConnection: close\r\n\r\n"
    ).encode()
    for cut in range(len(data)):
        p = RequestParser()
        reqs = p.feed(data[:cut]) + p.feed(data[cut:])
        assert [r.method for r in reqs] == ["GET", "HEAD"]
        assert reqs[0].query == {"hash": H, "edge_token": "t"}
        assert reqs[0].headers["range"] == "bytes=1-2"
        assert reqs[0].keep_alive and not reqs[1].keep_alive
        assert p.pending == 0


def test_http10_defaults_to_close():
    (r,) = RequestParser().feed(b"GET /blob HTTP/1.0\r\n\r\n")
    assert not r.keep_alive
    (r,) = RequestParser().feed(b"GET /blob HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert r.keep_alive


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /blob\r\n\r\n", 400),
        (b"GET blob HTTP/1.1\r\n\r\n", 400),
        (b"GET /blob HTTP/3.0\r\n\r\n", 505),
        (b"get /blob HTTP/1.1\r\n\r\n", 400),
        (b"GET /blob HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
        (b"GET /blob HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET /blob HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET /blob HTTP/1.1\r\nContent-Length: 3\r\n\r\n", 413),
        (b"GET /blob HTTP/1.1\nContent-Length: 3\n\n", 413),
        (b"GET /blob\n\n", 400),
    ],
)
def test_malformed_requests(raw, status):
    with pytest.raises(HttpParseError) as e:
        RequestParser().feed(raw)
    assert e.value.status == status


def test_oversized_head_is_refused_before_it_ends():
    p = RequestParser()
    with pytest.raises(HttpParseError) as e:
        p.feed(b"GET /" + b"a" * 20000)
    assert e.value.status == 431


def test_bare_lf_requests_are_accepted_as_nginx_does():
    p = RequestParser()
    reqs = p.feed(
        f"GET /blob?hash={H} HTTP/1.1\nHost: x\nRange: bytes=1-2\n\nHEAD /blob HTTP/1.1\r\n\n".encode()
    )
    assert [r.method for r in reqs] == ["GET", "HEAD"]
    assert reqs[0].headers == {"host": "x", "range": "bytes=1-2"} and reqs[0].query == {"hash": H}
    assert p.pending == 0


@pytest.mark.parametrize(
    "raw",
    [
        "GET /blob HTTP/1.1\r\nContent-Length: \u00b2\r\n\r\n".encode("utf-8"),
        "GET /blob HTTP/1.1\r\nContent-Length: \u00b2\r\n\r\n".encode("latin-1"),
        "GET /blob HTTP/1.1\r\nContent-Length: \u0663\r\n\r\n".encode("utf-8"),
        b"GET /blob HTTP/1.1\r\nContent-Length: 1" + b"0" * 5000 + b"\r\n\r\n",
        b"GET /blob HTTP/1.1\r\nX: a\rb\r\n\r\n",
    ],
)
def test_odd_numerals_and_bare_cr_are_the_codecs_own_errors(raw):
    with pytest.raises(HttpParseError) as e:
        RequestParser().feed(raw)
    assert e.value.status in (400, 413)


def test_long_zero_content_length_is_zero():
    (r,) = RequestParser().feed(b"GET /blob HTTP/1.1\r\nContent-Length: " + b"0" * 5000 + b"\r\n\r\n")
    assert r.method == "GET"


EOL = st.sampled_from(["\r\n", "\n"])


@given(NUMERALS, NUMERALS, EOL)
def test_hostile_numerals_and_line_ends_only_ever_raise_http_parse_error(length, rng, eol):
    raw = f"GET /blob?hash={H} HTTP/1.1{eol}Content-Length: {length}{eol}Range: bytes={rng}-{eol}{eol}"
    for encoding in ("utf-8", "latin-1"):
        try:
            data = raw.encode(encoding)
        except UnicodeEncodeError:
            continue
        try:
            for req in RequestParser().feed(data):
                plan_blob_response(req.headers, 1000, H, "v")
        except HttpParseError:
            pass


@given(st.binary(max_size=2000))
def test_random_bytes_only_ever_raise_http_parse_error(data):
    p = RequestParser()
    try:
        p.feed(data)
    except HttpParseError:
        pass


@given(st.integers(1, 5000), st.integers(0, 6000), st.integers(0, 6000))
def test_ranges_stay_inside_the_blob(size, a, b):
    for header in (f"bytes={a}-{b}", f"bytes={a}-", f"bytes=-{b}"):
        try:
            span = parse_range(header, size)
        except ValueError:
            continue
        if span is not None:
            start, end = span
            assert 0 <= start <= end < size


def test_render_head():
    head = render_head(200, [("Content-Length", "3")], False, "Sun, 06 Nov 1994 08:49:37 GMT")
    assert head.startswith(b"HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n")
    assert head.endswith(b"Content-Length: 3\r\nConnection: close\r\n\r\n")


VIA = '{"trace":[]}'


def test_plan_whole_blob():
    plan = plan_blob_response({}, 1000, H, VIA)
    assert (plan.status, plan.start, plan.count) == (200, 0, 1000)
    assert plan.headers == [
        ("Content-Type", "application/octet-stream"),
        ("Content-Disposition", f"filename={H}"),
        ("ETag", f'"{H}"'),
        ("Cache-Control", "public, max-age=31536000, immutable"),
        ("Accept-Ranges", "bytes"),
        ("Via", VIA),
        ("Content-Length", "1000"),
    ]


@pytest.mark.parametrize("inm", [f'"{H}"', f'W/"x", "{H}"', " * "])
def test_plan_not_modified_has_no_body_and_no_length(inm):
    plan = plan_blob_response({"if-none-match": inm, "range": "bytes=0-1"}, 1000, H, VIA)
    assert (plan.status, plan.count) == (304, 0)
    assert [k for k, _ in plan.headers] == ["ETag", "Cache-Control", "Accept-Ranges", "Via"]


def test_plan_other_etag_is_a_full_answer():
    assert plan_blob_response({"if-none-match": '"other"'}, 1000, H, VIA).status == 200


@pytest.mark.parametrize(
    ("header", "status", "start", "count", "content_range"),
    [
        ("bytes=100-199", 206, 100, 100, "bytes 100-199/1000"),
        ("bytes=-10", 206, 990, 10, "bytes 990-999/1000"),
        ("bytes=990-", 206, 990, 10, "bytes 990-999/1000"),
        ("bytes=900-5000", 206, 900, 100, "bytes 900-999/1000"),
        ("bytes=0-", 200, 0, 1000, None),
        ("bytes=0-1,5-6", 200, 0, 1000, None),
        ("items=1-2", 200, 0, 1000, None),
    ],
)
def test_plan_ranges(header, status, start, count, content_range):
    plan = plan_blob_response({"range": header}, 1000, H, VIA)
    assert (plan.status, plan.start, plan.count) == (status, start, count)
    assert dict(plan.headers).get("Content-Range") == content_range
    assert dict(plan.headers)["Content-Length"] == str(count)


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=-0"])
def test_plan_unsatisfiable_range_is_416(header):
    plan = plan_blob_response({"range": header}, 1000, H, VIA)
    assert (plan.status, plan.count) == (416, 0)
    assert plan.headers == [("Content-Range", "bytes */1000"), ("Content-Length", "0")]


def test_http_date():
    assert http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT"


def test_parse_query_reads_fields_as_parse_qsl_does() -> None:
    rng = random.Random(7)
    alphabet = "ab=&;x é\x00?#%2+"
    for _ in range(20000):
        qs = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        assert parse_query(qs) == dict(parse_qsl(qs, keep_blank_values=True)), qs


def test_one_whole_head_per_read_and_heads_split_across_reads_parse_alike() -> None:
    head = b"GET /blob?hash=" + b"a" * 96 + b"&edge_token=t HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n"
    whole = RequestParser().feed(memoryview(head))
    parser = RequestParser()
    pieces = [parser.feed(head[i : i + 7]) for i in range(0, len(head), 7)]
    assert whole == [r for p in pieces for r in p]
    assert (
        whole[0].query == {"hash": "a" * 96, "edge_token": "t"} and whole[0].headers["range"] == "bytes=0-9"
    )
    assert RequestParser().feed(head + head) == whole * 2  # two in one read: the buffered way
