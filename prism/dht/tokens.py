"""Store tokens: 48 bytes, bound to the requester (node id, IP, UDP port), never to a key.

A token is SHA-384(secret ‖ requester id ‖ IPv4 bytes ‖ UDP port). The 64-byte secret rotates every
`rotate_every` seconds; tokens made with the current or the previous secret are accepted.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
from collections.abc import Callable

TOKEN_LENGTH = 48
SECRET_LENGTH = 64
TOKEN_ROTATION = 300.0


class TokenManager:
    """Issues and checks tokens; time is passed in, so it is deterministic under a fake clock."""

    def __init__(
        self,
        now: float,
        rotate_every: float = TOKEN_ROTATION,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._random = random_bytes
        self.rotate_every = rotate_every
        self._current = random_bytes(SECRET_LENGTH)
        self._previous = random_bytes(SECRET_LENGTH)
        self._next_rotation = now + rotate_every

    def _rotate(self, now: float) -> None:
        while now >= self._next_rotation:
            self._previous, self._current = self._current, self._random(SECRET_LENGTH)
            self._next_rotation += self.rotate_every
            if now - self._next_rotation > self.rotate_every:
                # idle for several periods: both secrets are stale, start afresh
                self._previous = self._random(SECRET_LENGTH)
                self._next_rotation = now + self.rotate_every

    @staticmethod
    def _make(secret: bytes, node_id: bytes, ip: str, port: int) -> bytes:
        return hashlib.sha384(secret + node_id + socket.inet_aton(ip) + port.to_bytes(2, "big")).digest()

    def issue(self, node_id: bytes, ip: str, port: int, now: float) -> bytes:
        if now >= self._next_rotation:
            self._rotate(now)
        return self._make(self._current, node_id, ip, port)

    def verify(self, token: bytes, node_id: bytes, ip: str, port: int, now: float) -> bool:
        if now >= self._next_rotation:
            self._rotate(now)
        if len(token) != TOKEN_LENGTH:
            return False
        return hmac.compare_digest(
            token, self._make(self._current, node_id, ip, port)
        ) or hmac.compare_digest(token, self._make(self._previous, node_id, ip, port))
