"""Opens many QUIC connections to a server, holds them, closes them all (a load process for tests).

Usage: python tests/http/h3_flood.py PORT COUNT. Prints `open <n>` once every connection is up,
then waits for a line on stdin, closes them all at once, prints `closed` and exits.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import sys

from prism.http.quic import (
    H3_ALPN,
    QuicConfiguration,
    QuicConnection,
    QuicConnectionProtocol,
    open_udp_endpoint,
)

IN_FLIGHT = 32
"""Handshakes at once: well under the server's cap, so none is refused."""


async def open_one(
    port: int, gate: asyncio.Semaphore
) -> tuple[asyncio.BaseTransport, QuicConnectionProtocol]:
    async with gate:
        config = QuicConfiguration(is_client=True, alpn_protocols=list(H3_ALPN), verify_mode=ssl.CERT_NONE)
        quic = QuicConnection(configuration=config)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        transport, proto = await open_udp_endpoint(lambda: QuicConnectionProtocol(quic), sock)
        assert isinstance(proto, QuicConnectionProtocol)
        proto.connect(("127.0.0.1", port))
        await asyncio.wait_for(proto.wait_connected(), 30)
        return transport, proto


async def main(port: int, count: int) -> None:
    gate = asyncio.Semaphore(IN_FLIGHT)
    conns = await asyncio.gather(*(open_one(port, gate) for _ in range(count)))
    print("open", len(conns), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for _, proto in conns:
        proto.close()
    await asyncio.sleep(1.0)  # let the CONNECTION_CLOSE packets leave
    for transport, _ in conns:
        transport.close()
    print("closed", flush=True)


if __name__ == "__main__":
    os.nice(10)  # the load generator yields the CPU to the server it measures
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
