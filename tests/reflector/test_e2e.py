"""The issue's end to end: `prism send` into `prism test`, then `prism getstream` from its peer port."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import prism_cmd, prism_env

SIZES = [0, 1, 2097151, 50 * 1024 * 1024]


async def run_prism(*args: str, cwd: Path | None = None, limit: float = 120) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *prism_cmd(*args), env=prism_env(), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), limit)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.fixture
async def prism_test_servers():
    """A `prism test` process on free ports: yields (receiver port, peer port, process); killed if left running."""
    proc = await asyncio.create_subprocess_exec(
        *prism_cmd("test", "--receiver-port", "0", "--tcp-peer-port", "0", "--host", "127.0.0.1"),
        env=prism_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(20):
            while True:
                line = (await proc.stderr.readline()).decode()
                assert line, "prism test exited early"
                if m := re.search(r"reflector receiver on port (\d+), peer server on port (\d+)", line):
                    break
        yield int(m.group(1)), int(m.group(2)), proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def stop_and_list(proc: asyncio.subprocess.Process, sig: signal.Signals) -> dict[str, str]:
    """Stop `prism test` with `sig`; it must exit 0 after printing its store: {hash: "<n> bytes"}."""
    proc.send_signal(sig)
    stdout, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0
    lines = stdout.decode().splitlines()
    assert lines[0] == "Blobs in store"
    return dict(line.split(": ") for line in lines[1:])


async def test_send_into_prism_test_then_getstream(tmp_path: Path, prism_test_servers) -> None:
    receiver_port, peer_port, proc = prism_test_servers
    sent: dict[str, tuple[str, bytes]] = {}
    for size in SIZES:
        data = (os.urandom(1 << 20) * (size // (1 << 20) + 1))[:size]
        src = tmp_path / "src" / f"file-{size}.bin"
        src.parent.mkdir(exist_ok=True)
        src.write_bytes(data)
        code, out, err = await run_prism("send", f"127.0.0.1:{receiver_port}", str(src))
        assert code == 0, err
        sd_hash = json.loads(out)["sd_hash"]
        sent[sd_hash] = (src.name, data)
        dest = tmp_path / f"out-{size}"
        dest.mkdir()
        code, out, err = await run_prism(
            "getstream",
            f"127.0.0.1:{peer_port}",
            sd_hash,
            "--out",
            str(dest),
            "--blob-dir",
            str(tmp_path / f"blobs-{size}"),
        )
        assert code == 0, err
        got = Path(out.strip())
        assert got.parent == dest and got.name == src.name
        assert got.read_bytes() == data, f"{size} bytes did not come back"
    listed = await stop_and_list(proc, signal.SIGTERM)
    assert set(sent) <= set(listed)


async def test_prism_test_listing_after_sends(tmp_path: Path, prism_test_servers) -> None:
    receiver_port, _peer_port, proc = prism_test_servers
    src = tmp_path / "one.bin"
    src.write_bytes(os.urandom(3_000_000))
    code, out, err = await run_prism("send", f"127.0.0.1:{receiver_port}", str(src))
    assert code == 0, err
    listing = await stop_and_list(proc, signal.SIGINT)
    assert len(listing) == 3  # the sd blob and two content blobs
    assert listing[json.loads(out)["sd_hash"]].endswith(" bytes")
    assert sorted(v for k, v in listing.items() if k != json.loads(out)["sd_hash"]) == sorted(
        ["2097152 bytes", f"{(3_000_000 - 2097151) // 16 * 16 + 16} bytes"]
    )
