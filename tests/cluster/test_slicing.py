"""Slices of the full key space and the debounced, settled, guarded assignment (fake clock)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prism.cluster.slicing import (
    FULL_RANGE,
    KEY_SPACE,
    Assignment,
    HashRangeError,
    KeyRange,
    SlicePlan,
    parse_hash_range,
    position,
    slice_of,
)


@given(st.integers(min_value=1, max_value=200))
def test_slices_cover_the_key_space_once(total: int) -> None:
    slices = [slice_of(n, total) for n in range(1, total + 1)]
    assert slices[0].start == 0 and slices[-1].end == KEY_SPACE - 1
    for a, b in itertools.pairwise(slices):
        assert b.start == a.end + 1
    sizes = {s.size for s in slices}
    assert max(sizes) - min(sizes) <= 1


def test_slice_membership_of_keys() -> None:
    third = slice_of(2, 3)
    assert bytes.fromhex("80" + "00" * 47) in third
    assert bytes.fromhex("ff" * 48) not in third and bytes(48) not in third
    assert bytes(48) in FULL_RANGE
    with pytest.raises(ValueError):
        slice_of(4, 3)


def test_hash_range_is_left_padded_hex() -> None:
    r = parse_hash_range("0-ff")
    assert r == KeyRange(0, 255) and r.end_hex == "0" * 94 + "ff"
    for bad in ("ff", "1-2-3", "zz-ff", "ff-0", "-1", "0-" + "f" * 97):
        with pytest.raises(HashRangeError):
            parse_hash_range(bad)


def test_position_is_among_sorted_alive_names() -> None:
    assert position("b", ["c", "a", "b"]) == (2, 3)
    assert position("z", ["a"]) == (0, 1)


def test_debounced_after_the_settle_period_and_only_on_change() -> None:
    plan = SlicePlan("b", now=100.0, debounce=1.0, settle=5.0)
    plan.membership(100.5, ["b"])
    assert plan.due() == 105.0  # nothing is sliced while membership settles
    plan.membership(102.0, ["a", "b"])
    assert plan.take(104.9) is None
    assert plan.take(105.0) == Assignment(2, 2, slice_of(2, 2), ("a", "b"))
    assert plan.due() is None
    plan.membership(110.0, ["a", "b", "c"])
    plan.membership(110.6, ["a", "b"])  # a join and a leave within the debounce: one look, no change
    assert plan.due() == pytest.approx(111.6)
    assert plan.take(111.0) is None and plan.take(111.6) is None
    plan.membership(120.0, ["b", "c"])
    assert plan.take(121.0) == Assignment(1, 2, slice_of(1, 2), ("b", "c"))


def test_min_members_and_not_a_member_announce_nothing() -> None:
    plan = SlicePlan("a", now=0.0, settle=0.0, min_members=3)
    plan.membership(0.0, ["a", "b"])
    assert plan.take(1.0) == Assignment(1, 2, None, ("a", "b"))
    plan.membership(2.0, ["a", "b", "c"])
    assert plan.take(3.0) == Assignment(1, 3, slice_of(1, 3), ("a", "b", "c"))
    plan.membership(4.0, ["b", "c"])  # our own agent lost us
    assert plan.take(5.0) == Assignment(0, 2, None, ("b", "c"))


def test_a_fixed_hash_range_wins_over_the_position() -> None:
    fixed = parse_hash_range("0-ff")
    plan = SlicePlan("a", now=0.0, settle=0.0, fixed=fixed)
    plan.membership(0.0, ["a", "b"])
    assignment = plan.take(1.0)
    assert assignment is not None and assignment.range == fixed
