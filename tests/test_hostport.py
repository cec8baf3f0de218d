import pytest

from prism.hostport import AddressError, HostPort, parse_host_port, parse_host_port_list


@pytest.mark.parametrize(
    ("value", "default", "want"),
    [
        ("127.0.0.1:5567", None, HostPort("127.0.0.1", 5567)),
        ("reflector.lbry.com:5566", None, HostPort("reflector.lbry.com", 5566)),
        ("[::1]:5569", None, HostPort("::1", 5569)),
        ("reflector.lbry.com", 80, HostPort("reflector.lbry.com", 80)),
        ("[::1]", 5568, HostPort("::1", 5568)),
        (" host:1 ", None, HostPort("host", 1)),
    ],
)
def test_parses(value: str, default: int | None, want: HostPort) -> None:
    assert parse_host_port(value, default_port=default) == want


@pytest.mark.parametrize(
    "value",
    ["", "host", ":5567", "host:", "host:0", "host:65536", "host:x", "::1:5567", "[::1", "[::1]x", "[]:1"],
)
def test_refuses_with_the_value_named(value: str) -> None:
    with pytest.raises(AddressError, match="--flag"):
        parse_host_port(value, what="--flag")


def test_default_port_does_not_rescue_a_trailing_colon() -> None:
    with pytest.raises(AddressError, match="no port"):
        parse_host_port("host:", default_port=80)


def test_str_round_trips() -> None:
    for text in ("a:1", "[::1]:2"):
        assert str(parse_host_port(text)) == text


def test_list() -> None:
    got = parse_host_port_list(["a:1,b:2", " ", "[::1]:3"])
    assert got == [HostPort("a", 1), HostPort("b", 2), HostPort("::1", 3)]
    assert parse_host_port_list("x", default_port=4444) == [HostPort("x", 4444)]
