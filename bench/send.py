"""`prism send` client CPU against the one-pass encode limit.

Usage: python bench/send.py [--mb 200] [--rounds 3]

A prism receiver (ReflectorReceiver over a DiskStore, its own process, an empty store each round)
takes a `prism send` of a random file of `--mb` MB run as a separate process; the client's CPU
(user + system, from wait4) is divided by the file size. The limit is one StreamEncoder pass over
the same file with its source hash (AES-CBC + SHA-384 of every blob + SHA-384 of the file), the
least any `send` must spend, measured in this process. The start-up cost of the CLI (`prism
--help`) is printed too, since it is part of every send. Prints each round and, last,
`send_client_cpu_per_gb=<best round's client CPU s/GB>` (target <= 2.5).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

RECEIVER = """
import asyncio, sys
sys.path.insert(0, {root!r})
from prism.reflector.receiver import ReflectorReceiver
from prism.store.disk import DiskStore

async def main():
    receiver = ReflectorReceiver(DiskStore({store!r}), host="127.0.0.1", port=0, timeout=60)
    await receiver.start()
    print(receiver.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await receiver.stop(1.0)

asyncio.run(main())
"""


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    return e


def run_cpu(argv: list[str]) -> tuple[float, float, str]:
    """Run `argv`; (CPU seconds, wall seconds, stdout)."""
    t = time.perf_counter()
    proc = subprocess.Popen(argv, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed ({proc.returncode}): {err}")
    return _children_cpu(), wall, out


_last_children = 0.0


def _children_cpu() -> float:
    """CPU of the children reaped since the previous call."""
    global _last_children
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = r.ru_utime + r.ru_stime
    spent, _last_children = total - _last_children, total
    return spent


def one_round(work: str, src: str, size: int) -> tuple[float, float]:
    """One `prism send` into a fresh receiver: (client CPU s, wall s)."""
    store = tempfile.mkdtemp(dir=work)
    receiver = subprocess.Popen(
        [sys.executable, "-c", RECEIVER.format(root=ROOT, store=store)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stdout is not None
        port = int(receiver.stdout.readline())
        _children_cpu()
        cpu, wall, _out = run_cpu(
            [sys.executable, "-m", "prism", "--conf=none", "send", f"127.0.0.1:{port}", src]
        )
        return cpu, wall
    finally:
        assert receiver.stdin is not None
        receiver.stdin.close()
        receiver.wait(30)
        _children_cpu()  # the receiver's CPU is not the client's
        shutil.rmtree(store, ignore_errors=True)


def encode_limit(src: str) -> float:
    """CPU seconds of one StreamEncoder pass (with the source hash) over `src`."""
    from prism.stream import StreamEncoder

    t0 = os.times()
    enc = StreamEncoder(os.path.basename(src))
    with open(src, "rb", buffering=0) as f:
        for _blob in enc.encode(f):
            pass
    _ = enc.sd_hash, enc.source_hash
    t1 = os.times()
    return (t1.user - t0.user) + (t1.system - t0.system)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    size = args.mb * 1_000_000
    gb = size / 1e9
    work = tempfile.mkdtemp(prefix="prism-bench-send-")
    try:
        src = os.path.join(work, "source.bin")
        with open(src, "wb") as f:
            for i in range(0, size, 1 << 20):
                f.write(os.urandom(min(1 << 20, size - i)))
        _children_cpu()
        startup, _wall, _out = run_cpu([sys.executable, "-m", "prism", "--help"])
        limit = min(encode_limit(src) for _ in range(args.rounds))
        print(f"file: {args.mb} MB; CLI start-up {startup:.2f} CPU s")
        print(f"one-pass encode limit (in process)   {limit / gb:6.2f} CPU s/GB")
        rounds = []
        for i in range(args.rounds):
            cpu, wall = one_round(work, src, size)
            rounds.append(cpu)
            print(
                f"prism send r{i + 1}   {size / wall / 1e6:7.1f} MB/s   client CPU {cpu:5.2f} s"
                f" = {cpu / gb:5.2f} s/GB   ({(cpu - startup) / gb:5.2f} s/GB without start-up)"
            )
        print(f"send_client_cpu_per_gb={min(rounds) / gb:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
