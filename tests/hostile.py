"""Hypothesis strategies for hostile input shared by the codec fuzz tests (issue 18 item 3)."""

from __future__ import annotations

from hypothesis import strategies as st

NUMERALS = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.integers(300, 6000).map(lambda n: "9" * n),  # int() refuses more than 4,300 digits
    st.integers(300, 6000).map(lambda n: "1" + "0" * n + ".5"),  # float() overflows
    st.sampled_from(["1e400", "-1e400", "1e-400", "-0", "0" * 5000, "NaN", "Infinity"]),
    st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=8),  # "²", "٣": isdigit() is True
)
"""Number-like text: ordinary, huge, overflowing, and non-ASCII digits."""


def json_with(key: str, numeral: str, rest: str = "") -> bytes:
    """A JSON-looking object whose `key` holds `numeral` as written (may not be valid JSON)."""
    return ('{"' + key + '": ' + numeral + rest + "}").encode()
