"""The wallet-server client against the stand-in hub over real TCP, and the pure parts."""

from __future__ import annotations

import asyncio
import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prism.claim.schema import decode
from prism.claim.wire import encode_field
from prism.hub.client import HubClient
from prism.hub.protocol import HubError, decode_outputs, parse_response, resolved_outpoint
from prism.hub.tx import (
    TxError,
    claim_at,
    claim_name_script,
    parse_claim_script,
    parse_transaction,
    push,
    txid_of,
)
from prism.hub.url import UrlError, parse_url
from tests.claim import vectors as v
from tests.helpers import running
from tests.hostile import NUMERALS
from tests.hub.standin import StandInHub, error_outputs, found_outputs

RAW_TX = bytes.fromhex(v.CLAIM_TX)


def test_the_real_transaction() -> None:
    tx = parse_transaction(RAW_TX)
    assert txid_of(RAW_TX) == v.CLAIM_TXID and tx.serialize() == RAW_TX
    assert [o.value for o in tx.outputs] == [10_000_000, 189_977_100]
    claim = claim_at(RAW_TX, 0)
    assert claim.name == b"cats" and len(claim.value) == 220
    with pytest.raises(TxError, match="no claim found in output"):
        claim_at(RAW_TX, 1)
    with pytest.raises(TxError, match="nout not found"):
        claim_at(RAW_TX, 2)
    with pytest.raises(TxError, match="truncated"):
        parse_transaction(RAW_TX[:-1])


def test_push_forms_and_update_script() -> None:
    for n in (0, 75, 76, 255, 256, 520):
        data = bytes(range(256)) * 3
        script = bytes([0xB7]) + push(b"n") + push(b"\x01" * 20) + push(data[:n]) + b"\x6d\x6d"
        parsed = parse_claim_script(script)
        assert parsed.value == data[:n] and parsed.claim_id == "01" * 20
    with pytest.raises(TxError, match="520-byte"):
        claim_name_script(b"n", b"x" * 521, b"\0" * 20)


def test_synthetic_outputs_of_claims_md_match_the_stand_in() -> None:
    assert found_outputs(v.CLAIM_TXID, 0, 1000, "cats#6") == v.OUTPUTS_FOUND
    assert error_outputs("NOT_FOUND", 'Could not find claim at "lbry://nope".') == v.OUTPUTS_NOT_FOUND
    assert resolved_outpoint(decode_outputs(v.OUTPUTS_FOUND)) == (v.CLAIM_TXID, 0)
    with pytest.raises(HubError, match=r'^NOT_FOUND: Could not find claim at "lbry://nope"\.$'):
        resolved_outpoint(decode_outputs(v.OUTPUTS_NOT_FOUND))
    two = base64.b64decode(v.OUTPUTS_FOUND) * 2
    with pytest.raises(HubError, match="expected 1 output, got 2"):
        resolved_outpoint(decode("Outputs", two))


def test_both_error_shapes() -> None:
    with pytest.raises(HubError, match=r"^bad thing \(code 2\)$"):
        parse_response(b'{"jsonrpc":"2.0","id":3,"error":{"code":2,"message":"bad thing"}}')
    with pytest.raises(HubError, match=r"^bad thing \(code 2\)$"):
        parse_response(b'{"id":3,"error":{"message":{"code":2,"message":"bad thing"}}}')
    assert parse_response(b'{"jsonrpc":"2.0","id":3,"result":"x"}') == (3, "x")


@pytest.mark.parametrize(
    "url", ["lbry://cats", "cats#6", "@chan/vid:ab12", "@chan$2", "cat*s", "lbry://@c:1/x$3"]
)
def test_valid_urls(url: str) -> None:
    parse_url(url)


@pytest.mark.parametrize(
    "url", ["", "lbry://", "a b", "cats#XYZ", "c$0", "@", "x/y", "ca<t", "c#1#2", "n\x00", "c$" + "9" * 5000]
)
def test_invalid_urls(url: str) -> None:
    with pytest.raises(UrlError, match="Invalid LBRY URL"):
        parse_url(url)


@settings(max_examples=200, deadline=None)
@given(NUMERALS)
def test_url_sequence_numerals_only_raise_url_error(numeral: str) -> None:
    try:
        parse_url(f"lbry://@chan${numeral}/video${numeral}")
    except UrlError:
        pass


async def test_client_resolves_and_fetches_over_tcp() -> None:
    hub = StandInHub()
    txid = hub.add_transaction(RAW_TX)
    hub.claims["lbry://cats"] = (txid, 0)
    async with running(hub), HubClient([hub.address]) as client:
        txid, nout = resolved_outpoint(await client.resolve("lbry://cats"))
        decoded = await client.claim_in_tx(txid, nout)
        assert decoded.claim.get("title") == "Macaroni" and decoded.sd_hash == v.MACARONI_SD
        listed = await client.claims_in_tx(txid)
        assert [c["name"] for c in listed] == ["cats"]
        with pytest.raises(HubError, match="no such transaction"):
            await client.transaction_get("00" * 32)
    methods = [m for m, _ in hub.requests]
    assert methods[0] == "server.version" and "blockchain.transaction.get" in methods


async def test_a_mute_hub_is_skipped_within_a_second() -> None:
    mute, good = StandInHub(mute=True), StandInHub(nested_errors=True)
    async with running(mute), running(good):
        loop = asyncio.get_running_loop()
        started = loop.time()
        client = HubClient([mute.address, good.address], shuffle=lambda order: None)
        await client.connect()
        assert client.address == good.address and loop.time() - started < 2.5
        with pytest.raises(HubError, match=r"no such transaction .* \(code 1\)"):
            await client.transaction_get("11" * 32)
        await client.close()


async def test_request_timeout_and_no_server() -> None:
    with pytest.raises(HubError, match="no wallet server answered"):
        await HubClient(["127.0.0.1:1"]).connect()
    hub = StandInHub()
    async with running(hub):
        client = HubClient([hub.address], request_timeout=0.3)
        await client.connect()
        hub.mute = True
        with pytest.raises(HubError, match=r"did not answer blockchain\.transaction\.get within 0\.3 s"):
            await client.transaction_get("22" * 32)
        await client.close()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_prisms_errors(data: bytes) -> None:
    for parse in (parse_transaction, lambda d: claim_at(d, 0), lambda d: parse_claim_script(d)):
        try:
            parse(data)
        except TxError:
            pass
    try:
        resolved_outpoint(decode_outputs(base64.b64encode(data).decode()))
    except HubError:
        pass
    try:
        parse_response(data)
    except HubError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(RAW_TX) - 1), st.integers(0, 255))
def test_mutated_transaction_raises_only_tx_error(pos: int, byte: int) -> None:
    raw = bytearray(RAW_TX)
    raw[pos] = byte
    try:
        claim_at(bytes(raw), 0)
    except TxError:
        pass


def test_deeply_nested_outputs_are_refused() -> None:
    nested = b""
    for _ in range(300):  # Output.claim (7) → ClaimMeta.channel (1) → Output …
        nested = encode_field(7, encode_field(1, nested))
    with pytest.raises(HubError, match="nested more than"):
        decode_outputs(base64.b64encode(encode_field(1, nested)).decode())
