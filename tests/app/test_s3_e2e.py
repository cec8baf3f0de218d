"""End to end over SeaweedFS + MariaDB (issue 13's acceptance), every prism a separate process:

`prism send` into `prism reflector` (S3 + DB, disk cache) puts every blob in the bucket and in
blob_/stream/stream_blob; a second reflector with an empty cache and the same config serves the
stream over the peer protocol and HTTP byte-identical; `prism peer` serves it too; a SeaweedFS
restart in the middle of a download is survived by the S3 store's retries. Bad S3 settings are
refused at start with one sentence.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
from pathlib import Path

import aiohttp
import pytest

from prism.config import MysqlParams
from prism.stream import SdBlob
from tests.app.test_peer_getstream_cli import start_peer_command
from tests.app.test_reflector_e2e import Node, decode, http_get, metric, peer_get, send
from tests.app.test_upload import bucket_keys, table_counts
from tests.conftest import prism_cmd, prism_env
from tests.s3server import BAD_SETTINGS, SeaweedFS, bad_settings, one_error_line, write_config

pytestmark = pytest.mark.slow


def s3_node(name: str, tmp_path: Path, conf: Path, *flags: str) -> Node:
    cache = f"1GB:{tmp_path / (name + '-cache')}:localdb"
    return Node(name, tmp_path, conf, "--use-db=true", "--disk-cache", cache, *flags)


async def test_send_then_serve_from_a_second_node_peer_and_restart(
    tmp_path: Path, seaweedfs: SeaweedFS, s3_bucket: str, mysql_database: MysqlParams
) -> None:
    conf = write_config(tmp_path / "config.json", seaweedfs, s3_bucket, mysql_database)
    source = tmp_path / "movie.bin"
    payload = os.urandom(5 * 1024 * 1024 + 777)
    source.write_bytes(payload)
    nodes: list[Node] = []
    peer_proc: subprocess.Popen[bytes] | None = None
    try:
        a = s3_node("A", tmp_path, conf)
        nodes.append(a.start())
        sd_hash = await send(a, source)
        sd = SdBlob.parse((tmp_path / "A-cache" / sd_hash[:2] / sd_hash).read_bytes())
        hashes = [info.blob_hash for info in sd.content_blobs]
        assert bucket_keys(seaweedfs, s3_bucket) == {sd_hash, *hashes}
        assert table_counts(mysql_database) == {
            "stored": 1 + len(hashes),
            "stream": 1,
            "stream_blob": len(hashes),
        }
        async with aiohttp.ClientSession() as session:
            assert await metric(session, a, "reflector_s3_out_bytes") >= len(payload)

        # A second node, empty cache, same config: the origin is shared, not the node.
        b = s3_node("B", tmp_path, conf, "--disable-uploads")
        nodes.append(b.start())
        async with aiohttp.ClientSession() as session:
            sd_bytes, _ = await http_get(session, b, sd_hash)
            over_http = {h: (await http_get(session, b, h))[0] for h in hashes}
            assert await metric(session, b, "reflector_s3_in_bytes") >= len(payload)
        assert decode(sd_bytes, over_http) == payload
        over_peer = {h: await peer_get(b, h) for h in hashes}
        assert over_peer == over_http

        # `prism peer` over S3 + DB.
        peer_proc, port = start_peer_command(tmp_path / "peer.log", "--conf", str(conf), "peer")
        from prism.store.peer import PeerStore

        client = PeerStore(f"127.0.0.1:{port}", 20)
        try:
            from_peer = {}
            for h in [sd_hash, *hashes]:
                with await client.get(h) as ref:
                    from_peer[h] = ref.read()
        finally:
            await client.close()
        assert decode(from_peer[sd_hash], {h: from_peer[h] for h in hashes}) == payload

        # A third node with an empty cache downloads while SeaweedFS restarts.
        c = s3_node("C", tmp_path, conf, "--disable-uploads")
        nodes.append(c.start())
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            got = {sd_hash: (await http_get(session, c, sd_hash))[0]}
            seaweedfs.stop()
            restart = threading.Thread(target=seaweedfs.start)
            restart.start()
            try:
                for h in hashes:
                    got[h] = (await http_get(session, c, h))[0]
            finally:
                await asyncio.to_thread(restart.join)
        assert decode(got[sd_hash], {h: got[h] for h in hashes}) == payload
    finally:
        if peer_proc is not None:
            peer_proc.terminate()
            peer_proc.wait(10)
        for node in reversed(nodes):
            node.kill()


@pytest.mark.parametrize(
    ("command", "problem"),
    [*(("reflector", p) for p in BAD_SETTINGS), ("peer", "wrong secret"), ("peer", "missing bucket")],
)
def test_bad_s3_settings_refused_at_start(
    tmp_path: Path,
    seaweedfs: SeaweedFS,
    s3_bucket: str,
    mysql_database: MysqlParams,
    command: str,
    problem: str,
) -> None:
    overrides, phrase = bad_settings(problem)
    conf = write_config(tmp_path / "config.json", seaweedfs, s3_bucket, mysql_database, **overrides)
    if command == "reflector":
        args = s3_node("R", tmp_path, conf).args
    else:
        args = ["--conf", str(conf), "peer", "--host", "127.0.0.1", "--port", "0"]
    done = subprocess.run(prism_cmd(*args), env=prism_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert phrase in one_error_line(done.stderr)


async def test_peer_nodb_serves_the_bucket_alone(
    tmp_path: Path, seaweedfs: SeaweedFS, s3_bucket: str
) -> None:
    from prism.store.peer import PeerStore
    from tests.helpers import random_blob

    h, d = random_blob(300_000)
    client = seaweedfs.client()
    client.put_object(Bucket=s3_bucket, Key=h, Body=d)
    client.close()
    conf = write_config(tmp_path / "config.json", seaweedfs, s3_bucket)  # no db_conn
    refused = await asyncio.to_thread(
        subprocess.run,
        prism_cmd("--conf", str(conf), "peer", "--port", "0"),
        env=prism_env(),
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1
    assert "db_conn" in one_error_line(refused.stderr) and "--nodb" in refused.stderr
    proc, port = start_peer_command(tmp_path / "peer.log", "--conf", str(conf), "peer", "--nodb")
    store = PeerStore(f"127.0.0.1:{port}", 20)
    try:
        with await store.get(h) as ref:
            assert ref.read() == d
        assert not await store.has(h.replace(h[0], "0" if h[0] != "0" else "1", 1))
    finally:
        await store.close()
        proc.terminate()
        assert proc.wait(10) == 0
