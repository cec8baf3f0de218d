"""Flood a DHT node with garbage and with valid requests from many fake node ids (run as a separate process).

python tests/dht/flooder.py HOST PORT SECONDS RATE
"""

from __future__ import annotations

import os
import random
import socket
import sys
import time


def benc_request(rpc: bytes, node: bytes, method: bytes, args: bytes) -> bytes:
    return b"di0ei0ei1e20:" + rpc + b"i2e48:" + node + b"i3e%d:" % len(method) + method + b"i4e" + args + b"e"


def datagrams(rng: random.Random, n: int) -> list[bytes]:
    out = []
    pv = b"d15:protocolVersioni1ee"
    for _ in range(n):
        rpc, node, key = rng.randbytes(20), rng.randbytes(48), rng.randbytes(48)
        kind = rng.randrange(10)
        if kind == 0:
            out.append(rng.randbytes(rng.randrange(0, 1500)))
        elif kind == 1:
            good = benc_request(rpc, node, b"findNode", b"l48:" + key + pv + b"e")
            out.append(good[: rng.randrange(len(good))])
        elif kind == 2:
            out.append(b"l" * 2000 + b"e" * 2000)
        elif kind == 3:
            out.append(b"di0ei0ei1e99999999:" + rng.randbytes(100))
        elif kind == 4:
            out.append(benc_request(rpc, node, b"ping", b"l" + pv + b"e"))
        elif kind == 5:
            out.append(benc_request(rpc, node, b"findNode", b"l48:" + key + pv + b"e"))
        elif kind == 6:
            out.append(
                benc_request(rpc, node, b"findValue", b"l48:" + key + b"d1:pi0e15:protocolVersioni1eee")
            )
        elif kind == 7:
            args = b"l48:" + key + b"48:" + rng.randbytes(48) + b"i3333e48:" + node + b"i0e" + pv + b"e"
            out.append(benc_request(rpc, node, b"store", args))
        elif kind == 8:  # responses nobody asked for
            out.append(b"di0ei1ei1e20:" + rpc + b"i2e48:" + node + b"i3e4:ponge")
        else:
            out.append(benc_request(rpc, node, b"x" * rng.randrange(1, 200), b"le"))
    return out


def main() -> None:
    host, port, seconds, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    pool = datagrams(rng, 3000)
    socks = []
    for _ in range(64):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    start = time.perf_counter()
    sent = 0
    while True:
        now = time.perf_counter()
        if now - start >= seconds:
            break
        due = int((now - start) * rate)
        while sent < due:
            try:
                socks[sent % len(socks)].sendto(pool[sent % len(pool)], (host, port))
            except (BlockingIOError, OSError):
                pass
            sent += 1
        time.sleep(0.002)
    print(sent)


if __name__ == "__main__":
    main()
