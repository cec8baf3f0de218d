"""`prism reflector` assembled in-process (ports 0 on 127.0.0.1): chain shapes of reflector.md §3.4."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from prism.app.reflector import (
    ORIGINS,
    ReflectorConfigError,
    ReflectorOptions,
    build,
    upstream_address,
    validate,
)
from prism.config import Config
from prism.store.trace import BlobTrace
from tests.helpers import random_blob

NO_API = Config(protected_list_url="")


def options(**kw: object) -> ReflectorOptions:
    base: dict[str, object] = {
        "host": "127.0.0.1",
        "tcp_peer_port": 0,
        "http3_peer_port": 0,
        "http_peer_port": 0,
        "receiver_port": 0,
        "metrics_port": 0,
        "use_db": False,
        "shutdown_grace": 1.0,
        # the blocklist updater runs with --use-db: keep it off the network (tests/app/test_blocklist.py)
        "blocklist_url": "http://127.0.0.1:1/file/list_blocked",
        "blocklist_hubs": "127.0.0.1:1",
    }
    base.update(kw)
    return ReflectorOptions(**base)  # type: ignore[arg-type]


async def test_origin_endpoint_alone_then_served_from_the_disk_cache(tmp_path):
    h, d = random_blob(300_000)
    hits = [0]

    async def cdn(request: web.Request) -> web.Response:
        hits[0] += 1
        if request.match_info["name"] == h:
            return web.Response(body=d)
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/bucket/{name}", cdn)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    endpoint = f"http://127.0.0.1:{runner.addresses[0][1]}/bucket/"

    refl = await build(
        options(origin_endpoint=endpoint, disable_uploads=True, disk_cache=f"1GB:{tmp_path / 'cache'}:lru"),
        NO_API,
    )
    assert refl.servers.receiver is None
    await refl.supervisor.start()
    try:
        port = refl.servers.http.port
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{port}/blob?hash={h}") as r:
                assert r.status == 200 and await r.read() == d
                names = [st.origin_name for st in BlobTrace.from_json(r.headers["Via"]).stacks]
                assert names[0] == "cloudfront_ro"
            await runner.cleanup()  # the origin goes away: the cache answers
            async with s.get(f"http://127.0.0.1:{port}/blob?hash={h}") as r:
                assert r.status == 200 and await r.read() == d
            async with s.get(f"http://127.0.0.1:{refl.servers.metrics.port}/metrics") as r:
                text = await r.text()
        assert hits[0] == 1
        assert "reflector_s3_in_bytes 300000" in text
        assert 'reflector_cache_hit_total{cache_type="gcache",component="reflector"} 1' in text
    finally:
        await refl.supervisor.stop()


async def test_store_path_is_a_durable_origin_without_caches(tmp_path):
    h, d = random_blob(1000)
    refl = await build(options(store_path=str(tmp_path / "blobs"), disk_cache=""), NO_API)
    await refl.supervisor.start()
    try:
        await refl.outer.put(h, d)
        assert (tmp_path / "blobs" / h[:2] / h).read_bytes() == d
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{refl.servers.http.port}/blob?hash={h}") as r:
                assert await r.read() == d
        assert refl.servers.receiver.port > 0
    finally:
        await refl.supervisor.stop()


async def test_protected_content_on_every_download_server(tmp_path):
    from prism.http.h3client import Http3Client
    from prism.store.base import BlobNotFound
    from prism.store.peer import PeerStore

    secret_h, secret = random_blob(2000)
    open_h, public = random_blob(3000)

    async def api(request: web.Request) -> web.Response:
        return web.json_response({"success": True, "error": None, "data": [{"sd_hash": secret_h}]})

    app = web.Application()
    app.router.add_get("/file/list_protected", api)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    config = Config(protected_list_url=f"http://127.0.0.1:{runner.addresses[0][1]}/file/list_protected")
    refl = await build(
        options(
            store_path=str(tmp_path / "blobs"), disk_cache="", disable_uploads=True, upstream_edge_token="tok"
        ),
        config,
    )
    await refl.supervisor.start()
    h3 = Http3Client(f"127.0.0.1:{refl.servers.http3.port}", timeout=10)
    try:
        await refl.outer.put(secret_h, secret)
        await refl.outer.put(open_h, public)
        base = f"http://127.0.0.1:{refl.servers.http.port}/blob?hash="
        async with aiohttp.ClientSession() as s:
            async with s.get(base + secret_h) as r:
                assert r.status == 403
            async with s.get(base + secret_h + "&edge_token=tok") as r:
                assert r.status == 200 and await r.read() == secret
            async with s.get(base + open_h) as r:
                assert r.status == 200
        assert (await h3.get(f"/get/{secret_h}")).status == 403
        assert (await h3.get(f"/get/{open_h}")).status == 200
        peer = PeerStore(f"127.0.0.1:{refl.servers.peer.port}", 5)
        try:
            assert (await peer.get(open_h)).read() == public
            with pytest.raises(Exception) as e:
                await peer.get(secret_h)
            assert not isinstance(e.value, BlobNotFound)
        finally:
            await peer.close()
    finally:
        await h3.close()
        await refl.supervisor.stop()
        await runner.cleanup()


async def test_use_db_wraps_the_origin_and_the_receiver_finds_the_blocklist(tmp_path, mysql_database):
    from prism.stream import encode_bytes

    p = mysql_database
    config = Config(
        db_conn=f"{p.user}:{p.password}@tcp({p.host}:{p.port})/{p.database}", protected_list_url=""
    )
    blobs, enc = encode_bytes(b"x" * 3_000_000, "movie.mp4")
    refl = await build(options(store_path=str(tmp_path / "blobs"), disk_cache="", use_db=True), config)
    assert refl.servers.receiver.blocklister is not None
    await refl.supervisor.start()
    try:
        await refl.outer.put_sd(enc.sd_hash, enc.sd_bytes)
        assert await refl.underlying.has(enc.sd_hash)
        # The database is the truth: content blobs of the stream are known but not stored yet.
        assert not await refl.underlying.has(blobs[0][0])
        for h, d in blobs:
            await refl.outer.put(h, d)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{refl.servers.http.port}/blob?hash={blobs[1][0]}") as r:
                assert r.status == 200 and await r.read() == blobs[1][1]
    finally:
        await refl.supervisor.stop()

    no_blocklist = await build(
        options(store_path=str(tmp_path / "blobs"), disk_cache="", use_db=True, disable_blocklist=True),
        config,
    )
    assert no_blocklist.servers.receiver.blocklister is None


@pytest.mark.parametrize(
    ("kw", "config", "needle"),
    [
        ({}, Config(bucket_name="blobs", aws_id="id", s3_sharding="x"), "s3_sharding must be a number"),
        (
            {"upstream_reflector": "reflector.example:", "disable_uploads": True, "use_db": False},
            NO_API,
            "--upstream-reflector 'reflector.example:' has no port",
        ),
        (
            {"upstream_reflector": "h:0", "disable_uploads": True},
            NO_API,
            "--upstream-reflector 'h:0' has a bad port",
        ),
    ],
)
def test_validate_refuses_with_one_sentence(kw: dict[str, object], config: Config, needle: str) -> None:
    with pytest.raises(ReflectorConfigError, match=needle):
        validate(options(**kw), config)


def test_validate_names_the_origin_kind_to_build(tmp_path) -> None:
    assert validate(options(store_path=str(tmp_path)), NO_API) is ORIGINS["store-path"]
    cache = options(upstream_reflector="127.0.0.1:5569", disable_uploads=True)
    kind = validate(cache, NO_API)
    assert kind is ORIGINS["upstream-reflector"] and kind.read_only and kind.verifies


@pytest.mark.parametrize(
    ("protocol", "value", "address"),
    [
        ("http", "reflector.lbry.com", "reflector.lbry.com:80"),
        ("tcp", "reflector.lbry.com", "reflector.lbry.com:5567"),
        ("http3", "reflector.lbry.com", "reflector.lbry.com:5568"),
        ("http", "10.0.0.1:8080", "10.0.0.1:8080"),
        ("tcp", "[::1]:5569", "[::1]:5569"),
        ("http3", "[::1]", "[::1]:5568"),
    ],
)
def test_upstream_without_a_port_takes_the_protocols_standard_port(protocol, value, address) -> None:
    opts = options(upstream_reflector=value, upstream_protocol=protocol, disable_uploads=True)
    assert str(upstream_address(opts)) == address


@pytest.mark.parametrize("protocol", ["http", "tcp", "http3"])
async def test_an_ipv6_upstream_in_brackets_serves(tmp_path, protocol: str) -> None:
    from prism.http.h3server import Http3BlobServer
    from prism.http.server import HttpBlobServer
    from prism.peer.server import PeerServer
    from prism.store.memory import MemoryStore
    from tests.helpers import running

    h, d = random_blob(100_000)
    origin = MemoryStore()
    await origin.put(h, d)
    server_class = {"http": HttpBlobServer, "tcp": PeerServer, "http3": Http3BlobServer}[protocol]
    async with running(server_class(origin, "::1", 0)) as upstream:
        opts = options(
            upstream_reflector=f"[::1]:{upstream.port}",
            upstream_protocol=protocol,
            disable_uploads=True,
            disk_cache="",
        )
        refl = await build(opts, NO_API)
        try:
            with await refl.outer.get(h) as ref:
                assert ref.read() == d
        finally:
            await refl.outer.close()
