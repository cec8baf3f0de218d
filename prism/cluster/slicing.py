"""Sans-IO: who is alive, this node's position among them, and the slice of the key space it announces.

reflector.go fires `OnMembershipChange(n, total)` 1 s after the last join/leave/failed event (`n`: the
1-based position of our name among the alive names sorted ascending). Unlike reflector.go (spec §11.16)
the slices here are cut from the full 384-bit key space, nothing is sliced while membership settles after
start, and fewer than `min_members` alive members means announcing nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

KEY_BITS = 384
KEY_SPACE = 1 << KEY_BITS
HEX_DIGITS = KEY_BITS // 4
DEBOUNCE = 1.0
SETTLE = 3.0
"""Seconds after start before the first slice: the seed's member list arrives, joins are seen."""


@dataclass(frozen=True, slots=True)
class KeyRange:
    """Keys `start` to `end`, both included."""

    start: int
    end: int

    def __contains__(self, key: object) -> bool:
        if isinstance(key, bytes):
            key = int.from_bytes(key, "big")
        return isinstance(key, int) and self.start <= key <= self.end

    @property
    def size(self) -> int:
        return self.end - self.start + 1

    @property
    def start_hex(self) -> str:
        return f"{self.start:0{HEX_DIGITS}x}"

    @property
    def end_hex(self) -> str:
        return f"{self.end:0{HEX_DIGITS}x}"

    def __str__(self) -> str:
        return f"{self.start_hex[:8]}…-{self.end_hex[:8]}…"


FULL_RANGE = KeyRange(0, KEY_SPACE - 1)


def slice_of(n: int, total: int) -> KeyRange:
    """Slice n (1-based) of `total` equal slices of the whole key space; together they cover it once."""
    if not 1 <= n <= total:
        raise ValueError(f"position {n} is not in 1..{total}")
    return KeyRange((n - 1) * KEY_SPACE // total, n * KEY_SPACE // total - 1)


class HashRangeError(ValueError):
    """A `--hash-range` that is not START-END in hex."""


def parse_hash_range(text: str) -> KeyRange:
    """`START-END` in short hex, each left-padded with zeros to 96 digits (reflector.go's `--hash-range`)."""
    parts = text.split("-")
    if len(parts) != 2 or not all(parts) or any(len(p) > HEX_DIGITS for p in parts):
        raise HashRangeError(
            f"--hash-range {text!r}: want START-END in hex, each at most {HEX_DIGITS} digits"
        )
    try:
        start, end = (int(p.zfill(HEX_DIGITS), 16) for p in parts)
    except ValueError:
        raise HashRangeError(f"--hash-range {text!r}: START and END must be hex") from None
    if start > end:
        raise HashRangeError(f"--hash-range {text!r}: START is after END")
    return KeyRange(start, end)


def position(me: str, alive: list[str]) -> tuple[int, int]:
    """(n, total): our 1-based position among the sorted alive names (0 if we are not among them)."""
    names = sorted(set(alive))
    return (names.index(me) + 1 if me in names else 0), len(names)


@dataclass(frozen=True, slots=True)
class Assignment:
    """What this node announces: `range` None means nothing (too few members, or not a member)."""

    n: int
    total: int
    range: KeyRange | None
    members: tuple[str, ...] = ()
    """The alive names, sorted."""


class SlicePlan:
    """Membership changes in, slice assignments out, debounced.

    Feed `membership(now, alive_names)` on each change; `due()` says when to call `take(now)`, which
    returns the new assignment (or None when nothing changed).
    """

    def __init__(
        self,
        me: str,
        now: float,
        *,
        debounce: float = DEBOUNCE,
        settle: float = SETTLE,
        min_members: int = 1,
        fixed: KeyRange | None = None,
    ) -> None:
        self.me = me
        self.debounce = debounce
        self.not_before = now + settle
        self.min_members = min_members
        self.fixed = fixed
        """--hash-range: announce this range whatever the position."""
        self.alive: list[str] = []
        self.current: Assignment | None = None
        self._due: float | None = None

    def membership(self, now: float, alive: list[str]) -> None:
        """The alive members now; the assignment follows `debounce` seconds after the last change."""
        self.alive = sorted(set(alive))
        self._due = max(now + self.debounce, self.not_before)

    def due(self) -> float | None:
        return self._due

    def take(self, now: float) -> Assignment | None:
        """The new assignment once due (None before, or when it is the same as the current one)."""
        if self._due is None or now < self._due:
            return None
        self._due = None
        n, total = position(self.me, self.alive)
        chosen: KeyRange | None = None
        if n and total >= self.min_members:
            chosen = self.fixed or slice_of(n, total)
        new = Assignment(n, total, chosen, tuple(self.alive))
        if new == self.current:
            return None
        self.current = new
        return new


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """A node's view of the cluster, read once per metrics scrape."""

    members: int
    """Alive members."""
    position: int
    """This node's 1-based position among them (0: none)."""
    slice_hashes: int
    """Stored hashes of this node's slice, being announced."""
