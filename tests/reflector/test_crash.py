"""An acknowledged upload survives the receiver being killed right after the acknowledgement (issue 18)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from prism.reflector.client import ReflectorClient
from prism.store.disk import DiskStore
from tests.conftest import prism_env
from tests.helpers import random_blob

# A receiver over a DiskStore in its own process. Every fsync is logged to stdout (directories by
# path); with "stall-dir" a directory fsync never returns, as on a disk that stopped answering.
RECEIVER = textwrap.dedent(
    """
    import asyncio, os, stat, sys, time
    real_fsync = os.fsync
    def fsync(fd):
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            print("DIR", os.readlink(f"/proc/self/fd/{fd}"), flush=True)
            if sys.argv[2] == "stall-dir":
                time.sleep(60)
        else:
            print("FILE", st.st_size, flush=True)
        real_fsync(fd)
    os.fsync = fsync
    from prism.reflector.receiver import ReflectorReceiver
    from prism.store.disk import DiskStore
    async def main():
        receiver = ReflectorReceiver(DiskStore(sys.argv[1]), host="127.0.0.1", port=0)
        await receiver.start()
        print("PORT", receiver.port, flush=True)
        await asyncio.Event().wait()
    asyncio.run(main())
    """
)


def start_receiver(root: Path, mode: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", RECEIVER, str(root), mode], stdout=subprocess.PIPE, text=True, env=prism_env()
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    assert line[:1] == ["PORT"], line
    return proc, int(line[1])


def kill(proc: subprocess.Popen[str]) -> list[str]:
    """SIGKILL, then everything the process had printed."""
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=10)
    return out.splitlines()


async def test_an_acknowledged_blob_survives_a_kill_right_after_the_acknowledgement(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    proc, port = start_receiver(root, "log")
    h, data = random_blob(2 * 1024 * 1024)
    try:
        async with ReflectorClient("127.0.0.1", port, timeout=20) as client:
            result = await client.send_blob(h, data)
            log = kill(proc)  # the very next thing after `received_blob: true`
        assert result.sent == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (root / h[:2] / h).read_bytes() == data
    # What made it durable before the answer: the blob's own bytes, then the entry in its shard
    # directory (and the new shard directory's entry in the root).
    assert f"FILE {len(data)}" in log
    assert f"DIR {root / h[:2]}" in log and f"DIR {root}" in log
    store = DiskStore(root)  # the next start
    assert store.removed_temp_files == 0 and await store.has(h)


async def test_the_acknowledgement_waits_for_the_directory_fsync(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    proc, port = start_receiver(root, "stall-dir")
    h, data = random_blob(100_000)
    try:
        async with ReflectorClient("127.0.0.1", port, timeout=20) as client:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.send_blob(h, data), 2.0)
        log = kill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert any(line.startswith("DIR ") for line in log)  # it was stuck there, and so was the answer
