"""The blocklist updater against a stand-in list_blocked endpoint (aiohttp on 127.0.0.1) and the
stand-in hub (tests/hub/standin.py), and end to end with MariaDB and `prism send`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from prism.app.blocklist import BlocklistError, BlocklistUpdater, parse_blocked_list, parse_outpoint
from prism.app.reflector import build
from prism.app.send import prepare_stream
from prism.claim.build import StreamInfo, stream_claim, unsigned_value
from prism.config import Config
from prism.hub.tx import Transaction, TxIn, TxOut, claim_name_script
from prism.reflector.client import ReflectorClient
from tests.app.test_reflector_build import options
from tests.claim import vectors as v
from tests.conftest import run_prism, sql
from tests.helpers import ManualSleep, running
from tests.hub.standin import StandInHub


class RecordingBlocklist:
    """A Blocklister that keeps what it was told (the DB-backed store is used end to end below)."""

    def __init__(self) -> None:
        self.blocked: list[str] = []

    async def block(self, blob_hash: str) -> None:
        self.blocked.append(blob_hash)

    async def wants(self, blob_hash: str) -> bool:
        return blob_hash not in self.blocked


def claim_tx(name: bytes, value: bytes, seed: int) -> bytes:
    tx = Transaction(inputs=[TxIn(f"{seed:064x}", 0, b"\x00")])
    tx.outputs.append(TxOut(1_000_000, claim_name_script(name, value, bytes([seed]) * 20)))
    return tx.serialize()


def stream_tx(sd_hash: str, seed: int) -> bytes:
    info = StreamInfo(sd_hash=sd_hash, file_name="movie.mp4", size=10, source_hash="00" * 48)
    return claim_tx(b"movie", unsigned_value(stream_claim(info)), seed)


class ListEndpoint:
    """A stand-in for api.lbry.com/file/list_blocked."""

    def __init__(self, outpoints: list[str]) -> None:
        self.body: object = {"success": True, "error": None, "data": {"outpoints": outpoints}}
        self.status = 200
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        return web.json_response(self.body, status=self.status)


@asynccontextmanager
async def serving(endpoint: ListEndpoint) -> AsyncIterator[ListEndpoint]:
    app = web.Application()
    app.router.add_get("/file/list_blocked", endpoint.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    endpoint.url = f"http://127.0.0.1:{runner.addresses[0][1]}/file/list_blocked"
    try:
        yield endpoint
    finally:
        await runner.cleanup()


def test_list_and_outpoint_parsing() -> None:
    assert parse_blocked_list({"success": True, "data": {"outpoints": ["a:1"]}}) == ["a:1"]
    with pytest.raises(BlocklistError, match="list_blocked API call: nope"):
        parse_blocked_list({"success": False, "error": "nope"})
    with pytest.raises(BlocklistError, match=r"no data\.outpoints"):
        parse_blocked_list({"success": True, "data": []})
    assert parse_outpoint("AB" * 32 + ":3") == ("ab" * 32, 3)
    for bad, why in (("x", "format"), ("ab:1:2", "format"), ("zz:1", "txid"), ("ab" * 32 + ":-1", "nout")):
        with pytest.raises(ValueError, match=why):
            parse_outpoint(bad)


def _hub_with_claims(sd_hashes: list[str]) -> tuple[StandInHub, list[str]]:
    hub = StandInHub()
    macaroni = hub.add_transaction(bytes.fromhex(v.CLAIM_TX))
    channel = hub.add_transaction(claim_tx(b"@chan", bytes.fromhex(v.B), 7))
    streams = [hub.add_transaction(stream_tx(sd, 20 + i)) for i, sd in enumerate(sd_hashes)]
    outpoints = [
        f"{macaroni}:0",  # a stream: blocked
        f"{macaroni}:1",  # no claim in that output: an error, the run goes on
        f"{channel}:0",  # a channel: skipped, not blocked as ""
        "not-an-outpoint",
        f"{'ee' * 32}:0",  # unknown to the hub
        *(f"{txid}:0" for txid in streams),
    ]
    return hub, outpoints


async def test_blocks_exactly_the_streams_past_a_hung_hub_and_keeps_the_last_list() -> None:
    sd = "5a" * 48
    hub, outpoints = _hub_with_claims([sd])
    hung = StandInHub(mute=True)
    store = RecordingBlocklist()
    async with running(hub), running(hung), serving(ListEndpoint(outpoints)) as endpoint:
        hubs = [hung.address, hub.address]
        updater = BlocklistUpdater(store, list_url=endpoint.url, hubs=hubs, shuffle=lambda order: None)
        result = await updater.run_once()
        assert store.blocked == [v.MACARONI_SD, sd] and hung.connections == 1
        assert (result.outpoints, result.blocked, result.skipped, result.errors) == (6, 2, 1, 3)
        endpoint.status = 500
        again = await updater.run_once()
        assert again.blocked == 2 and store.blocked == [v.MACARONI_SD, sd] * 2
        snap = updater.snapshot()
        assert (snap.runs, snap.failed_runs, snap.blocked, snap.skipped) == (2, 0, 2, 1)


async def test_no_list_yet_and_no_hub_are_failed_runs() -> None:
    store = RecordingBlocklist()
    async with serving(ListEndpoint(["ab" * 32 + ":0"])) as endpoint:
        updater = BlocklistUpdater(store, list_url=endpoint.url + "-missing", hubs=["127.0.0.1:1"])
        await updater.run_once()
        updater.list_url = endpoint.url
        result = await updater.run_once()
    assert updater.failed_runs == 2 and result.blocked == 0 and store.blocked == []


async def test_end_to_end_blocked_in_mariadb_and_send_refused(tmp_path: Path, mysql_database) -> None:
    src = tmp_path / "movie.mp4"
    src.write_bytes(b"blocked movie " * 300_000)
    sd_cache = tmp_path / "sd-cache"
    stream = prepare_stream(str(src), str(sd_cache))  # `prism send --sd-cache` reuses this sd blob
    hub, outpoints = _hub_with_claims([stream.sd_hash])
    hung = StandInHub(mute=True)
    p = mysql_database
    config = Config(
        db_conn=f"{p.user}:{p.password}@tcp({p.host}:{p.port})/{p.database}", protected_list_url=""
    )
    async with running(hub), running(hung), serving(ListEndpoint(outpoints)) as endpoint:
        refl = await build(
            options(
                store_path=str(tmp_path / "blobs"),
                disk_cache="",
                use_db=True,
                blocklist_url=endpoint.url,
                blocklist_hubs=f"{hung.address},{hub.address}",
            ),
            config,
        )
        assert refl.blocklist is not None
        await refl.supervisor.start()
        try:
            await asyncio.wait_for(refl.blocklist.run_done.wait(), 30)
            blocked = sql(p, "SELECT hash FROM blocked ORDER BY hash")
            assert sorted(r[0] for r in blocked) == sorted([v.MACARONI_SD, stream.sd_hash])
            assert b"reflector_blocklist_blocked 2" in refl.metrics.render()
            port = refl.servers.receiver.port
            async with ReflectorClient("127.0.0.1", port, version=1, timeout=10) as client:
                offered = await client.send_blob(stream.sd_hash, stream.sd_bytes, is_sd=True)
            assert (offered.sent, offered.already_present) == (0, 1)  # send_sd_blob: false
            code, out, err = await run_prism(
                "send", "--sd-cache", str(sd_cache), f"127.0.0.1:{port}", str(src)
            )
            assert code == 0 and stream.sd_hash in out, err
            assert not await refl.underlying.has(stream.sd_hash)
            assert refl.servers.receiver.snapshot().sd_blobs_received == 0
        finally:
            await refl.supervisor.stop()


async def test_no_updater_with_disable_blocklist_or_without_a_database(
    tmp_path: Path, mysql_database
) -> None:
    p = mysql_database
    config = Config(
        db_conn=f"{p.user}:{p.password}@tcp({p.host}:{p.port})/{p.database}", protected_list_url=""
    )
    disabled = await build(
        options(store_path=str(tmp_path / "a"), disk_cache="", use_db=True, disable_blocklist=True), config
    )
    no_db = await build(options(store_path=str(tmp_path / "b"), disk_cache=""), config)
    enabled = await build(options(store_path=str(tmp_path / "c"), disk_cache="", use_db=True), config)
    assert disabled.blocklist is None and no_db.blocklist is None
    assert enabled.blocklist is not None and enabled.blocklist.interval == 12 * 3600
    assert [e.name for e in enabled.supervisor.entries][-1] == "blocklist updater"


async def test_runs_at_start_then_every_interval_and_survives_a_failed_run() -> None:
    sleep = ManualSleep()
    store = RecordingBlocklist()
    endpoint = ListEndpoint([])
    async with serving(endpoint):
        endpoint.status = 500  # the first run finds no list at all
        updater = BlocklistUpdater(
            store, list_url=endpoint.url, hubs=["127.0.0.1:1"], interval=3600, sleep=sleep
        )
        async with running(updater):
            assert await sleep.calls.get() == 3600
            assert (updater.runs, updater.failed_runs) == (1, 1)
            endpoint.status = 200
            sleep.release()
            assert await sleep.calls.get() == 3600
            assert (updater.runs, updater.failed_runs) == (2, 1) and updater.last_list == []
