"""S3Store against a real SeaweedFS (the session's `seaweedfs` fixture); no in-process mocks."""

from __future__ import annotations

import asyncio
import threading

import pytest

from prism.config import Config
from prism.store.base import BlobNotFound
from prism.store.s3 import S3ConfigError, S3RetryPolicy, S3Settings, S3Store, S3Unavailable, is_transient
from prism.store.upstream import UpstreamDataError
from tests.helpers import make_blob, random_blob
from tests.s3server import SeaweedFS


def store_for(server: SeaweedFS, bucket: str, **overrides: str) -> S3Store:
    return S3Store(S3Settings.from_config(Config.from_mapping(server.config(bucket, **overrides))))


# -- settings and policy (no server) ------------------------------------------------------------


def test_settings_from_config_defaults() -> None:
    s = S3Settings.from_config(Config(aws_id="a", aws_secret="b", bucket_name="bk", s3_endpoint="http://x:1"))
    assert s.path_style is True  # an endpoint override means path style unless told otherwise
    assert s.sharding == 0 and s.acl == "public-read"
    assert s.key("ab" * 48) == "ab" * 48
    aws = S3Settings.from_config(Config(aws_id="a", aws_secret="b", bucket_name="bk"))
    assert aws.path_style is False and aws.endpoint == ""


def test_settings_sharding_and_acl() -> None:
    s = S3Settings.from_config(
        Config(bucket_name="bk", s3_sharding="4", s3_acl="none", s3_path_style="false")
    )
    h = "0123" + "a" * 92
    assert s.key(h) == f"0123/{h}"
    assert s.acl == "" and s.path_style is False


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("s3_sharding", "x", "s3_sharding must be a number"),
        ("s3_path_style", "maybe", "s3_path_style must be true or false"),
        ("s3_endpoint", "ftp://x", "s3_endpoint must be an http"),
        ("bucket_name", "", "bucket_name is missing"),
    ],
)
def test_settings_refuse_bad_values(key: str, value: str, message: str) -> None:
    data = {"bucket_name": "bk", key: value}
    with pytest.raises(S3ConfigError, match=message):
        S3Settings.from_config(Config.from_mapping(data))


def test_retry_policy_is_bounded_and_backs_off() -> None:
    p = S3RetryPolicy(attempts=5, first_delay=0.1, max_delay=0.5)
    assert [p.delay(n) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.5, None]
    assert sum(d for d in (S3RetryPolicy().delay(n) for n in range(1, 20)) if d) > 10.0
    assert is_transient("SlowDown", 503) and is_transient("", 500) and not is_transient("NoSuchKey", 404)


# -- against SeaweedFS ------------------------------------------------------------------------


async def test_put_has_get_delete(seaweedfs: SeaweedFS, s3_bucket: str) -> None:
    store = store_for(seaweedfs, s3_bucket)
    try:
        await store.check()
        h, data = random_blob(100_000)
        assert not await store.has(h)
        with pytest.raises(BlobNotFound):
            await store.get(h)
        await store.put(h, data)
        assert await store.has(h)
        ref = await store.get(h)
        assert ref.read() == data and ref.trace.stacks[-1].origin_name == "s3"
        snap = store.snapshot()
        assert snap.bytes_out == len(data) and snap.bytes_in == len(data)
        await store.delete(h)
        assert not await store.has(h)
        await store.delete(h)  # idempotent
    finally:
        await store.close()
    client = seaweedfs.client()
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0
    client.close()


async def test_sharded_keys(seaweedfs: SeaweedFS, s3_bucket: str) -> None:
    store = store_for(seaweedfs, s3_bucket, s3_sharding="2")
    h, data = make_blob(1)
    try:
        await store.put(h, data)
        assert (await store.get(h)).read() == data
    finally:
        await store.close()
    client = seaweedfs.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    client.close()
    assert keys == [f"{h[:2]}/{h}"]


async def test_get_verifies_sha384(seaweedfs: SeaweedFS, s3_bucket: str) -> None:
    h, _ = make_blob(2)
    client = seaweedfs.client()
    client.put_object(Bucket=s3_bucket, Key=h, Body=b"something else")
    client.close()
    store = store_for(seaweedfs, s3_bucket)
    try:
        with pytest.raises(UpstreamDataError, match="bad data"):
            await store.get(h)
        assert store.bytes_in == 0
    finally:
        await store.close()


async def test_wrong_secret_is_one_sentence(seaweedfs: SeaweedFS, s3_bucket: str) -> None:
    store = store_for(seaweedfs, s3_bucket, aws_secret="wrong")
    try:
        with pytest.raises(S3Unavailable, match=r"refused access .*check aws_id and aws_secret"):
            await store.check()
    finally:
        await store.close()


async def test_missing_bucket_is_named(seaweedfs: SeaweedFS) -> None:
    store = store_for(seaweedfs, "prism-no-such-bucket")
    try:
        with pytest.raises(S3Unavailable, match="bucket prism-no-such-bucket does not exist"):
            await store.check()
    finally:
        await store.close()


async def test_endpoint_down_is_one_sentence(seaweedfs: SeaweedFS) -> None:
    from tests.s3server import free_low_ports

    (port,) = free_low_ports(1)
    store = store_for(seaweedfs, "bucket", s3_endpoint=f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(S3Unavailable, match=f"cannot reach S3 at http://127.0.0.1:{port}"):
            await store.check()
    finally:
        await store.close()


@pytest.mark.slow
async def test_get_survives_a_server_restart(seaweedfs: SeaweedFS, s3_bucket: str) -> None:
    store = store_for(seaweedfs, s3_bucket)
    h, data = random_blob(2 * 1024 * 1024)
    try:
        await store.put(h, data)
        seaweedfs.stop()
        restart = threading.Thread(target=seaweedfs.start)
        got = asyncio.create_task(store.get(h))  # fails at first, retried until the server is back
        restart.start()
        ref = await got
        assert ref.read() == data
    finally:
        await asyncio.to_thread(restart.join)
        await store.close()
