"""`prism reflector` over S3 assembled in-process: the `s3` and `cloudfront-rw` origin kinds."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from prism.app.reflector import ORIGINS, build, validate
from prism.config import Config
from prism.store.trace import BlobTrace
from tests.app.test_reflector_build import options
from tests.helpers import random_blob
from tests.s3server import SeaweedFS


def s3_config(server: SeaweedFS, bucket: str) -> Config:
    return Config.from_mapping(server.config(bucket, protected_list_url=""))


def test_a_bucket_in_the_config_is_the_origin(seaweedfs: SeaweedFS, s3_bucket: str, tmp_path) -> None:
    config = s3_config(seaweedfs, s3_bucket)
    kind = validate(options(), config)
    assert kind is ORIGINS["s3"] and not kind.read_only and kind.verifies
    # An explicit origin flag wins over the config's bucket, as in reflector.go.
    assert validate(options(store_path=str(tmp_path)), config) is ORIGINS["store-path"]


async def test_cloudfront_rw_reads_the_endpoint_and_writes_the_bucket(
    seaweedfs: SeaweedFS, s3_bucket: str
) -> None:
    client = seaweedfs.client()
    hits = [0]

    async def cdn(request: web.Request) -> web.Response:
        """A CDN in front of the bucket: reads it with the bucket's own credentials."""
        hits[0] += 1
        try:
            obj = await asyncio.to_thread(client.get_object, Bucket=s3_bucket, Key=request.match_info["name"])
        except client.exceptions.NoSuchKey:
            return web.Response(status=404)
        return web.Response(body=obj["Body"].read())

    app = web.Application()
    app.router.add_get("/cdn/{name}", cdn)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    endpoint = f"http://127.0.0.1:{runner.addresses[0][1]}/cdn/"
    config = s3_config(seaweedfs, s3_bucket)
    opts = options(origin_endpoint=endpoint, disk_cache="")
    kind = validate(opts, config)
    assert kind is ORIGINS["cloudfront-rw"] and not kind.read_only
    refl = await build(opts, config)
    assert refl.servers.receiver is not None
    h, d = random_blob(200_000)
    await refl.supervisor.start()
    try:
        await refl.outer.put(h, d)  # written to S3
        assert client.head_object(Bucket=s3_bucket, Key=h)["ContentLength"] == len(d)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{refl.servers.http.port}/blob?hash={h}") as r:
                assert r.status == 200 and await r.read() == d
                names = [st.origin_name for st in BlobTrace.from_json(r.headers["Via"]).stacks]
                assert names[0] == "cloudfront_ro"  # read through the endpoint
            async with s.get(f"http://127.0.0.1:{refl.servers.metrics.port}/metrics") as r:
                text = await r.text()
        assert hits[0] == 1
        assert f"reflector_s3_out_bytes {len(d)}" in text
    finally:
        await refl.supervisor.stop()
        await runner.cleanup()
        client.close()
