"""`prism decode`: vector A byte for byte, every vector decodes, bad input exits 1 with one line."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.claim import vectors as v
from tests.conftest import prism_cmd, prism_env


def _decode(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        prism_cmd("--conf", "none", "decode", *args),
        env=prism_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_vector_a_output_byte_for_byte() -> None:
    r = _decode(v.A)
    assert r.returncode == 0, r.stderr
    assert r.stdout == v.A_DECODE_OUTPUT


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (v.B, '"publicKey": "MFYwEAYHKoZIzj0CAQYFK4EEAAoDQgAEWgND'),
        (
            v.C,
            "SD hash as hex: 2eb61ea475017e28c013616a56c1219ba90dc35fffff453d9675146f648f66634e0d1516528d37aba9f5801229d9f218",
        ),
        (
            v.D_V1.hex(),
            "SD hash as hex: bbd1f68374ff9a1044a90d7dd578ce41979211c386caf19e6f496536db5f2c96b58fe2c7a6677b331419a117873b539f",
        ),
        (
            v.E,
            "SD hash as hex: 1f41eb0312aa7e8a5ce49349bc77d811da975833719d751523b19f123fc3d528d6a94e3446ccddb7b9329f27a9cad7e3",
        ),
        (v.F, '"publicKey": "MFYwEAYHKoZIzj0CAQYFK4EEAAoDQgAE0BU2'),
        (v.G, '{\n  "claimHash": "XLeOQko0+/ebZ/kQdDBCeqYjc+Y="\n}\n'),
    ],
)
def test_every_vector(value: str, expected: str) -> None:
    r = _decode(value)
    assert r.returncode == 0, r.stderr
    assert expected in r.stdout


def test_json_has_the_whole_claim() -> None:
    r = _decode("--json", v.C)
    out = json.loads(r.stdout)
    assert out["channel_id"] == "e67323a67a42307410f9679bf7fb344a428eb75c"
    assert out["claim"]["title"] == "test pub" and len(bytes.fromhex(out["signature"])) == 64


@pytest.mark.parametrize("value", ["zz", "0001", "01" + "00" * 10])
def test_bad_values_exit_1_with_one_line(value: str) -> None:
    r = _decode(value)
    assert r.returncode == 1
    assert r.stdout == "" and r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1
