"""`prism resolve` against the stand-in hub (tests/hub/standin.py) serving the real claim transaction."""

from __future__ import annotations

import base64
import json

import pytest

from tests.claim import vectors as v
from tests.conftest import run_prism
from tests.helpers import running
from tests.hub.standin import StandInHub


async def _resolve(*args: str) -> tuple[int, str, str]:
    return await run_prism("resolve", *args)


@pytest.fixture
async def hub() -> StandInHub:
    hub = StandInHub()
    txid = hub.add_transaction(bytes.fromhex(v.CLAIM_TX))
    hub.claims["lbry://cats"] = (txid, 0)
    hub.blocked["lbry://bad"] = "content was blocked"
    hub.invalid.add("lbry://odd")
    return hub


async def test_resolve_prints_the_claim(hub: StandInHub) -> None:
    async with running(hub):
        code, out, err = await _resolve(hub.address, "lbry://cats")
    assert code == 0, err
    claim = json.loads(out)
    stream = claim["Type"]["Stream"]
    assert claim["title"] == "Macaroni" and list(claim)[:3] == ["Type", "title", "description"]
    assert bytes.fromhex(v.MACARONI_SD) == base64.b64decode(stream["source"]["sd_hash"])
    assert stream["source"]["media_type"] == "image/jpeg" and stream["license"] == "All rights reserved."
    assert list(stream)[:7] == ["source", "author", "license", "license_url", "release_time", "fee", "Type"]
    assert stream["fee"] is None and claim["tags"] is None
    assert out.startswith('{\n  "Type": {\n    "Stream": {\n')


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("lbry://nope", 'Error: NOT_FOUND: Could not find claim at "lbry://nope".\n'),
        ("lbry://bad", "Error: BLOCKED: content was blocked\n"),
        ("lbry://odd", "Error: INVALID: Invalid LBRY URL\n"),
    ],
)
async def test_hub_errors_exit_1_with_the_hubs_text(hub: StandInHub, url: str, message: str) -> None:
    async with running(hub):
        code, out, err = await _resolve(hub.address, url)
    assert (code, out, err) == (1, "", message)


async def test_invalid_url_is_refused_before_connecting(hub: StandInHub) -> None:
    async with running(hub):
        code, _, err = await _resolve(hub.address, "lbry://a b")
    assert code == 1 and err.startswith("Error: Invalid LBRY URL") and hub.connections == 0


async def test_unreachable_hub() -> None:
    code, _, err = await _resolve("127.0.0.1:1", "cats")
    assert code == 1 and "no wallet server answered" in err
