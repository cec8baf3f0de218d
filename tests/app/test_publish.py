"""`prism publish` against the stand-in lbrycrd (tests/app/standin_lbrycrd.py) and a `prism test`
reflector: the stream is reflected before the broadcast, and the claim output decodes with
`prism decode` to the file's sd hash, size, name and the flags."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from prism.app.lbrycrd import LbrycrdError, conf_path, url_from_conf
from prism.claim.legacy import base58_decode
from prism.hub.tx import parse_claim_script, parse_transaction
from prism.store.peer import PeerStore
from tests.app.standin_lbrycrd import StandInLbrycrd
from tests.conftest import prism_cmd, prism_env, run_prism
from tests.helpers import running


@pytest.fixture
async def test_reflector() -> AsyncIterator[tuple[int, int]]:
    """A `prism test` process on ports 0: (receiver port, peer port)."""
    proc = await asyncio.create_subprocess_exec(
        *prism_cmd(
            "--conf", "none", "test", "--host", "127.0.0.1", "--receiver-port", "0", "--tcp-peer-port", "0"
        ),
        env=prism_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    ports: list[str] = []
    while len(ports) != 2:
        line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        assert line, "prism test exited"
        if line.startswith("prism test:"):
            ports = re.findall(r"port (\d+)", line)
    try:
        yield int(ports[0]), int(ports[1])
    finally:
        proc.terminate()
        await proc.wait()


def test_the_hard_coded_address_pays_to_the_hash160_of_claims_md() -> None:
    from prism.app.publish import CLAIM_ADDRESS, CLAIM_ADDRESS_HASH160

    assert base58_decode(CLAIM_ADDRESS)[1:21] == CLAIM_ADDRESS_HASH160


def test_lbrycrd_conf(tmp_path: Path) -> None:
    conf = tmp_path / "lbrycrd.conf"
    conf.write_text("# comment\nrpcuser=alice\nrpcpassword=s3cret\nrpcport=19245\n")
    assert url_from_conf(str(conf)) == "http://alice:s3cret@localhost:19245"
    conf.write_text("rpcuser=alice\n")
    with pytest.raises(LbrycrdError, match="rpcpassword"):
        url_from_conf(str(conf))
    assert conf_path("/h", regtest=True) == "/h/.lbrycrd_regtest/lbrycrd.conf"
    assert conf_path("/h", regtest=False) == "/h/.lbrycrd/lbrycrd.conf"


@pytest.mark.parametrize("modern", [False, True])
async def test_publish_reflects_then_broadcasts_a_claim_that_decodes(
    tmp_path: Path, test_reflector: tuple[int, int], modern: bool
) -> None:
    receiver_port, peer_port = test_reflector
    src = tmp_path / "holiday clip.mp4"
    src.write_bytes(bytes(range(256)) * 12_000)  # 3 MB: two content blobs
    lbrycrd = StandInLbrycrd(modern=modern)
    lbrycrd.unspent = [
        {"txid": "aa" * 32, "vout": 0, "amount": Decimal("5.0"), "spendable": True},
        {"txid": "bb" * 32, "vout": 1, "amount": Decimal("0.5"), "spendable": True},
        {"txid": "cc" * 32, "vout": 2, "amount": Decimal("0.01"), "spendable": True},  # too small
        {"txid": "dd" * 32, "vout": 3, "amount": Decimal("0.1"), "spendable": False},
    ]
    reflected_at_broadcast: list[bool] = []

    async def check_reflected(raw: bytes) -> None:
        value = parse_claim_script(parse_transaction(raw).outputs[1].script).value
        sd_hash = json.loads((await run_prism("decode", "--json", value.hex()))[1])["sd_hash"]
        peer = PeerStore(f"127.0.0.1:{peer_port}", 5)
        try:
            reflected_at_broadcast.append(await peer.has(sd_hash))
        finally:
            await peer.close()

    lbrycrd.before_broadcast = check_reflected
    async with running(lbrycrd):
        code, out, err = await run_prism(
            "publish", str(src), "--name", "holiday", "--title", "Holiday <3", "--description", "by the sea",
            "--author", "Ann", "--tags", "beach,summer", "--tags", "sea", "--release-time", "1700000000",
            "--reflector", f"127.0.0.1:{receiver_port}", "--lbrycrd", lbrycrd.url,
        )  # fmt: skip
    assert code == 0, err
    assert reflected_at_broadcast == [True]
    methods = [m for m, _ in lbrycrd.calls]
    expected_tail = ["getinfo", "getnetworkinfo"] if modern else ["getinfo"]
    assert methods == [
        "getblockchaininfo", "listunspent", "createrawtransaction", "signrawtransaction",
        *expected_tail, "sendrawtransaction", "decoderawtransaction",
    ]  # fmt: skip
    assert lbrycrd.calls[1][1] == [1]
    create = lbrycrd.calls[2][1]
    assert create[0] == [{"txid": "bb" * 32, "vout": 1}]  # the smallest output that pays
    assert create[1] == {"bSzpgkTnAoiT2YAhUShPpfpajPESfNXVTu": Decimal("0.4898")} and create[2] == 0
    assert lbrycrd.calls[-2][1][1] == (10_000_000 if modern else False)

    tx_text, txid_line = out.rsplit("\nTXID: ", 1)
    decoded_tx = json.loads(tx_text.removeprefix("TX: "))
    raw = bytes.fromhex(lbrycrd.broadcast[0])
    assert txid_line.strip() == decoded_tx["txid"]
    tx = parse_transaction(raw)
    assert tx.version == 1 and [o.value for o in tx.outputs] == [48_980_000, 1_000_000]
    claim = parse_claim_script(tx.outputs[1].script)
    assert claim.name == b"holiday"
    code, decode_out, err = await run_prism("decode", "--json", claim.value.hex())
    assert code == 0, err
    d = json.loads(decode_out)
    stream = d["claim"]["stream"]
    assert d["claim"]["title"] == "Holiday <3" and d["claim"]["description"] == "by the sea"
    assert d["claim"]["tags"] == ["beach", "summer", "sea"]
    assert stream["source"]["name"] == "holiday clip.mp4" and stream["source"]["size"] == str(
        src.stat().st_size
    )
    assert stream["source"]["mediaType"] == "video/mp4" and "video" in stream
    assert stream["author"] == "Ann" and stream["releaseTime"] == "1700000000"
    code, plain, _ = await run_prism("decode", claim.value.hex())
    assert plain.rstrip().endswith(f"SD hash as hex: {d['sd_hash']}")


async def test_a_claim_over_520_bytes_is_refused_before_lbrycrd(tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_bytes(b"hello")
    lbrycrd = StandInLbrycrd()
    async with running(lbrycrd):
        code, out, err = await run_prism(
            "publish", str(src), "--name", "a", "--description", "x" * 600, "--lbrycrd", lbrycrd.url
        )
    assert code == 1 and out == "" and "520-byte" in err and err.count("\n") == 1
    assert lbrycrd.calls == []


async def test_lbrycrd_errors_exit_1(tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_bytes(b"hello")
    lbrycrd = StandInLbrycrd()
    async with running(lbrycrd):
        code, _, err = await run_prism("publish", str(src), "--name", "a", "--lbrycrd", lbrycrd.url)
        assert code == 1 and "no spendable output" in err
        bad = lbrycrd.url.replace("rpcpass", "wrong")
        code, _, err = await run_prism("publish", str(src), "--name", "a", "--lbrycrd", bad)
        assert code == 1 and err.startswith("Error: lbrycrd") and err.count("\n") == 1
