"""The sans-IO HTTP/1.1 response reader: framings, keep-alive, and hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prism.http.h1client import ResponseError, ResponseReader, request_bytes
from tests.hostile import NUMERALS


def read(data: bytes, method: str = "GET", max_body: int = 1 << 20, eof: bool = False) -> ResponseReader:
    r = ResponseReader(method, max_body=max_body)
    r.feed(data)
    if eof:
        r.eof()
    return r


def test_content_length_body_split_anywhere_reads_the_same():
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nVia: x\r\n\r\nhello"
    for cut in range(len(data) + 1):
        r = ResponseReader(max_body=100)
        r.feed(data[:cut])
        r.feed(data[cut:])
        assert r.complete and r.keep_alive and not r.extra
        assert r.head is not None and r.head.status == 200 and r.head.get("via") == "x"
        assert bytes(r.body) == b"hello"


def test_body_goes_straight_into_the_allocated_buffer():
    given_out: list[bytearray] = []

    def alloc(n: int) -> bytearray:
        given_out.append(bytearray(n))
        return given_out[-1]

    r = ResponseReader(max_body=100, alloc=alloc)
    r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
    view = r.recv_buffer()
    assert len(view) == 4
    view[:3] = b"abc"
    r.received(3)
    assert not r.complete
    r.recv_buffer()[:1] = b"d"
    r.received(1)
    assert r.complete and r.body is given_out[0] and r.body == b"abcd"


def test_chunked_body_split_anywhere():
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n"
    for cut in range(len(data) + 1):
        r = ResponseReader(max_body=100)
        r.feed(data[:cut])
        assert not r.complete or cut == len(data)
        r.feed(data[cut:])
        assert r.complete and r.keep_alive and bytes(r.body) == b"abcde"


def test_close_delimited_body_ends_at_eof_and_closes():
    r = read(b"HTTP/1.1 200 OK\r\n\r\nsome", eof=False)
    assert not r.complete
    r.feed(b" more")
    r.eof()
    assert r.complete and not r.keep_alive and bytes(r.body) == b"some more"


@pytest.mark.parametrize(
    ("head", "keep"),
    [
        ("HTTP/1.1 200 OK\r\nContent-Length: 0", True),
        ("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0", False),
        ("HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\nContent-Length: 0", False),
        ("HTTP/1.0 200 OK\r\nContent-Length: 0", False),
        ("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0", True),
    ],
)
def test_keep_alive_decision(head: str, keep: bool):
    r = read(head.encode() + b"\r\n\r\n")
    assert r.complete and r.keep_alive is keep


def test_head_204_304_have_no_body_whatever_the_length():
    assert read(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", method="HEAD").complete
    assert read(b"HTTP/1.1 204 No Content\r\nContent-Length: 99\r\n\r\n").complete
    assert read(b"HTTP/1.1 304 Not Modified\r\n\r\n").complete


def test_interim_100_is_skipped():
    r = read(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
    assert r.complete and r.head is not None and r.head.status == 200 and bytes(r.body) == b"x"


def test_bytes_after_the_body_spoil_the_connection():
    r = read(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1")
    assert r.complete and r.extra and not r.keep_alive and bytes(r.body) == b"x"
    r = read(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
    r.feed(b"junk")
    assert r.extra and not r.keep_alive


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", "head longer"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000, "head longer"),
        (b"HTTP/2 200 OK\r\n\r\n", "bad status line"),
        (b"garbage\r\n\r\n", "bad status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "bad status code"),
        (b"HTTP/1.1 \xb2\xb2\xb2 OK\r\n\r\n", "bad status code"),
        (b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", "bad header line"),
        (b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", "bad header line"),
        (b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n", "folding"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "conflicting"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", "conflicting"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n", "more than the 1000"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "unsupported Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 2000, "chunk-size line longer"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n", "body longer"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxYZ", "not followed by CRLF"),
        (b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 1001, "body longer"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "101"),
    ],
)
def test_hostile_responses_raise_clear_errors(data: bytes, match: str):
    with pytest.raises(ResponseError, match=match):
        read(data, max_body=1000)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "closed before a response"),
        (b"HTTP/1.1 200 OK\r\nContent-", "middle of the response head"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "after 3 of 10 body bytes"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "middle of a chunked body"),
    ],
)
def test_truncated_responses_raise_at_eof(data: bytes, match: str):
    r = read(data)
    with pytest.raises(ResponseError, match=match):
        r.eof()


def test_both_framings_read_chunked_and_do_not_keep_the_connection():
    r = read(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n")
    assert r.complete and not r.keep_alive and bytes(r.body) == b"x"


@given(NUMERALS)
def test_any_numeral_as_content_length_is_a_length_or_a_clear_error(numeral: str):
    data = f"HTTP/1.1 200 OK\r\nContent-Length: {numeral}\r\n\r\n".encode("utf-8", "surrogatepass")
    try:
        r = read(data, max_body=1 << 20)
    except ResponseError:
        return
    assert numeral.isascii() and numeral.isdigit()
    assert len(r.body) == int(numeral)


@given(st.binary(max_size=300), st.integers(1, 50))
def test_random_bytes_never_raise_anything_but_response_error(data: bytes, step: int):
    r = ResponseReader(max_body=1000)
    try:
        for i in range(0, len(data), step):
            r.feed(data[i : i + step])
        r.eof()
    except ResponseError:
        pass


def test_request_bytes_refuses_line_breaks():
    assert request_bytes("GET", "/blob?hash=a", "h:1", [("User-Agent", "p")]) == (
        b"GET /blob?hash=a HTTP/1.1\r\nHost: h:1\r\nUser-Agent: p\r\n\r\n"
    )
    with pytest.raises(ValueError, match="line break"):
        request_bytes("GET", "/x\r\nEvil: 1", "h:1")
