import hashlib
import random
import re

import pytest

from prism.blob import (
    MAX_BLOB_SIZE,
    BlobSizeError,
    HashMismatchError,
    InvalidHashError,
    is_valid_hash,
    sha384_hex,
    validate_hash,
    validate_size,
    verify_blob,
)

GOOD = hashlib.sha384(b"x").hexdigest()


@pytest.mark.parametrize(
    "bad",
    [
        "",
        GOOD.upper(),
        GOOD[:-1],
        GOOD + "0",
        "../" + GOOD[3:],
        GOOD[:95] + "g",
        GOOD[:95] + ",",
        GOOD[:95] + "\u0661",  # an Arabic-Indic digit one
        GOOD[:95] + "\uff41",  # a fullwidth "a"
        None,
        5,
        b"ab",
    ],
)
def test_invalid_hashes_rejected(bad: object) -> None:
    assert not is_valid_hash(bad)
    with pytest.raises(InvalidHashError):
        validate_hash(bad)


def test_is_valid_hash_agrees_with_its_definition() -> None:
    rng = random.Random(7)
    alphabet = "0123456789abcdefABCDEFg/.\u0661\uff41"
    for _ in range(20_000):
        value = "".join(rng.choice(alphabet if rng.random() < 0.2 else "0123456789abcdef") for _ in range(96))
        assert is_valid_hash(value) == (re.fullmatch("[0-9a-f]{96}", value) is not None)


def test_valid_hash() -> None:
    assert validate_hash(GOOD) == GOOD
    assert sha384_hex(b"x") == GOOD


@pytest.mark.parametrize("size", [0, -1, MAX_BLOB_SIZE + 1, 1.5, "10", True])
def test_bad_sizes(size: object) -> None:
    with pytest.raises(BlobSizeError):
        validate_size(size)


def test_verify_blob() -> None:
    verify_blob(GOOD, b"x")
    with pytest.raises(HashMismatchError):
        verify_blob(GOOD, b"y")
    with pytest.raises(BlobSizeError):
        verify_blob(sha384_hex(b""), b"")
