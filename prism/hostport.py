"""The one parser of `host:port` addresses: every flag, config key and seed list uses it."""

from __future__ import annotations

import socket
from typing import NamedTuple


class AddressError(ValueError):
    """An address that is not `HOST:PORT`; the message names the value and what is wrong."""


class HostPort(NamedTuple):
    """A parsed address; `host` has no brackets, even for an IPv6 literal."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_host_port(value: str, *, default_port: int | None = None, what: str = "address") -> HostPort:
    """`HOST:PORT`, `[V6]:PORT`, or (when `default_port` is given) a bare `HOST` / `[V6]`.

    `what` names the value in the error ("--upstream-reflector", "seed", ...).
    """
    text = value.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise AddressError(f"{what} {value!r} is not HOST:PORT (write an IPv6 address as [::1]:5567)")
        port_text = rest[1:] if rest else ""
    elif text.count(":") > 1:
        raise AddressError(f"{what} {value!r} is not HOST:PORT (put an IPv6 address in brackets: [::1]:5567)")
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise AddressError(f"{what} {value!r} has no host: want HOST:PORT")
    if not port_text:
        if default_port is None or text.endswith(":"):
            raise AddressError(f"{what} {value!r} has no port: want HOST:PORT")
        return HostPort(host, default_port)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise AddressError(f"{what} {value!r} has a bad port {port_text!r}: want a number from 1 to 65535")
    return HostPort(host, int(port_text))


def parse_host_port_list(
    values: str | list[str] | tuple[str, ...], *, default_port: int | None = None, what: str = "address"
) -> list[HostPort]:
    """Comma-separated addresses (or several such strings) into a list, in order; empty items are skipped."""
    items = [values] if isinstance(values, str) else list(values)
    return [
        parse_host_port(part, default_port=default_port, what=what)
        for item in items
        for part in item.split(",")
        if part.strip()
    ]


def bind_socket(host: str, port: int, kind: socket.SocketKind = socket.SOCK_STREAM) -> socket.socket:
    """A non-blocking socket bound to `host`:`port`, for every TCP and UDP server.

    An IPv6 host listens dual-stack (IPV6_V6ONLY off, like nginx's `ipv6only=off`), so `--host ::`
    answers on `[::1]` and `127.0.0.1` alike. A TCP socket reuses the address (a restart does not
    wait for TIME_WAIT); the caller listens.
    """
    family, _, proto, _, addr = socket.getaddrinfo(host or None, port, type=kind, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(addr)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def listening_address(sock: socket.socket) -> HostPort:
    """Where a bound socket listens, for logs (`[::]:5567`, `0.0.0.0:5567`)."""
    host, port = sock.getsockname()[:2]
    return HostPort(host, port)
