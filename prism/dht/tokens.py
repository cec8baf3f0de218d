"""Store tokens, both ways: those this node issues and checks, and those other nodes gave it.

A token issued here is 48 bytes, SHA-384(secret ‖ requester id ‖ IPv4 bytes ‖ UDP port), never bound to a
key. The 64-byte secret rotates every `rotate_every` seconds; tokens made with the current or the previous
secret are accepted. Tokens received in other nodes' findValue answers are kept in a `TokenCache` and used
by the store-retry rule `StoreAttempts`. All of it is sans-IO: time is passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prism.dht.messages import store_args_flat, store_args_legacy

TOKEN_LENGTH = 48
SECRET_LENGTH = 64
TOKEN_ROTATION = 300.0
TOKEN_CACHE_SIZE = 4096
"""Tokens remembered from other nodes' findValue answers, at most."""
STORE_TRIES = 2
"""A store is tried once, and once more with a fresh token if the first was refused as invalid."""


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


@dataclass(frozen=True, slots=True)
class ReceivedToken:
    """A token another node gave us, with the protocol version its findValue answer carried."""

    token: bytes
    protocol_version: int | None
    expires: float

    @property
    def legacy(self) -> bool:
        """No protocolVersion in the answer: a reflector.go node, which only knows the legacy store."""
        return self.protocol_version is None

    def store_args(self, key: bytes, peer_port: int, own_id: bytes) -> list[Any]:
        """The store arguments in the layout this node reads (flat for lbry-sdk, legacy for reflector.go)."""
        make = store_args_legacy if self.legacy else store_args_flat
        return make(key, self.token, peer_port, own_id)


class TokenCache:
    """Tokens received from other nodes, by node id, each reused for `ttl` seconds; at most `size`."""

    def __init__(self, ttl: float, size: int = TOKEN_CACHE_SIZE) -> None:
        self.ttl = ttl
        self.size = size
        self._tokens: dict[bytes, ReceivedToken] = {}

    def __len__(self) -> int:
        return len(self._tokens)

    def put(self, node_id: bytes, token: bytes, protocol_version: int | None, now: float) -> None:
        tokens = self._tokens
        if len(tokens) >= self.size:
            for nid in [nid for nid, t in tokens.items() if t.expires < now]:
                del tokens[nid]
            if len(tokens) >= self.size:
                tokens.clear()
        tokens[node_id] = ReceivedToken(token, protocol_version, now + self.ttl)

    def get(self, node_id: bytes, now: float) -> ReceivedToken | None:
        """The token to use with this node now, or None (none received, or expired)."""
        t = self._tokens.get(node_id)
        return None if t is None or t.expires < now else t

    def latest(self, node_id: bytes) -> ReceivedToken | None:
        """The last token received from this node, expired or not."""
        return self._tokens.get(node_id)

    def drop(self, node_id: bytes) -> None:
        self._tokens.pop(node_id, None)


def is_invalid_token_error(exc_type: bytes, message: bytes) -> bool:
    """lbry-sdk's `Invalid token` or reflector.go's `invalid-token`."""
    text = (exc_type + b" " + message).lower()
    return b"invalid token" in text or b"invalid-token" in text


class StoreAttempts:
    """The store-retry rule for one contact: reuse its cached token, else fetch one first (findValue);
    after an "invalid token" error drop that token, fetch a fresh one and try once more."""

    def __init__(self, cache: TokenCache, node_id: bytes, tries: int = STORE_TRIES) -> None:
        self.cache = cache
        self.node_id = node_id
        self.tries_left = tries
        self._retrying = False

    def next_try(self) -> bool:
        """Start a try; False when none is left."""
        if self.tries_left <= 0:
            return False
        self.tries_left -= 1
        return True

    def cached_token(self, now: float) -> ReceivedToken | None:
        """The token to store with right away; None means: ask the contact for one first."""
        return None if self._retrying else self.cache.get(self.node_id, now)

    def fetched_token(self) -> ReceivedToken | None:
        """The token the contact just gave (None: its answer carried none, so give up)."""
        return self.cache.latest(self.node_id)

    def should_retry(self, exc_type: bytes, message: bytes) -> bool:
        """After an error reply: True to try again with a fresh token (the refused one is dropped)."""
        if not is_invalid_token_error(exc_type, message):
            return False
        self.cache.drop(self.node_id)
        self._retrying = True
        return self.tries_left > 0
