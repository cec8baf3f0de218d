"""The trace of one `get` through a store chain (reflector.go's BlobTrace, sent as the `Via` header).

JSON form, byte-compatible with reflector.go Classic:
``{"stacks":[{"timing":<ns>,"origin_name":"<store>","host_name":"<host>"},...]}``
"""

from __future__ import annotations

import functools
import json
import socket
from dataclasses import dataclass, field


def _host_name() -> str:
    try:
        return socket.gethostname() or "unknown"
    except OSError:
        return "unknown"


HOST_NAME = _host_name()


class TraceError(ValueError):
    """A `Via` header could not be parsed as a trace."""


@dataclass(frozen=True, slots=True)
class Stack:
    """One layer's contribution: how long it took (ns), its store name and host."""

    timing: int
    origin_name: str
    host_name: str = HOST_NAME


@dataclass(frozen=True, slots=True)
class BlobTrace:
    """An immutable list of stacks, innermost store first."""

    stacks: tuple[Stack, ...] = field(default_factory=tuple)

    @classmethod
    def new(cls, elapsed_ns: int, origin_name: str) -> BlobTrace:
        return cls((Stack(int(elapsed_ns), origin_name),))

    def stack(self, elapsed_ns: int, origin_name: str) -> BlobTrace:
        """A new trace with one more layer appended."""
        return BlobTrace((*self.stacks, Stack(int(elapsed_ns), origin_name)))

    def path(self) -> str:
        """The layers the blob passed, innermost (the one that had it) first: `disk>db-backed>caching`."""
        return ">".join(s.origin_name for s in self.stacks) or "-"

    def to_json(self) -> str:
        parts = [f'{{"timing":{s.timing},{_names_json(s.origin_name, s.host_name)}}}' for s in self.stacks]
        return '{"stacks":[' + ",".join(parts) + "]}"

    @classmethod
    def from_json(cls, text: str | bytes) -> BlobTrace:
        try:
            obj = json.loads(text)
            stacks = obj["stacks"]
            if stacks is None:
                return cls()
            return cls(
                tuple(
                    Stack(int(s["timing"]), str(s["origin_name"]), str(s.get("host_name", "unknown")))
                    for s in stacks
                )
            )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise TraceError(f"invalid trace: {e}") from None

    def __str__(self) -> str:
        lines = []
        prev = 0
        for i, s in enumerate(self.stacks):
            delta = s.timing - prev
            lines.append(
                f"[{i}]({s.host_name}) origin: {s.origin_name} - timing: {s.timing}ns - delta: {delta}ns"
            )
            prev = s.timing
        return "\n".join(lines)


@functools.lru_cache(maxsize=256)
def _names_json(origin_name: str, host_name: str) -> str:
    # A chain has a handful of store names: each stack's names are encoded once, not per request.
    return f'"origin_name":{_go_json_string(origin_name)},"host_name":{_go_json_string(host_name)}'


def _go_json_string(value: str) -> str:
    # Go's encoder escapes <, > and & as \u003c etc. and never escapes non-ASCII.
    out = json.dumps(value, ensure_ascii=False)
    return out.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
