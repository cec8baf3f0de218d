"""prism under cheap attacks from one unauthenticated client (issue 18's acceptance bench).

Usage: python bench/hostile.py [--seconds 20] [--phases 0abcd] [--dir DIR]

Starts `prism reflector` (disk store, disk cache, no database) with RLIMIT_NOFILE 1,024 (soft and
hard), stores a stream, then runs the attack phases one after another, each in its own process
for `--seconds`, while this process is a normal client using prism's own clients: a stored blob
fetched over HTTP (`HttpStore`) and over the peer protocol (`PeerStore`) every 100 ms each, and
a small stream uploaded (`send_file`) every 2 s.

  (0) no attack: the reference for the same machine and moment;
  (a) 1,100 idle connections spread over HTTP, peer and receiver (reopened when closed);
  (b) 1,000 receiver connections that offer a 2 MiB blob and send one byte;
  (c) 2,000 slowloris HTTP connections (a header byte every second);
  (d) a flood of malformed requests at full speed: non-ASCII and 5,000-digit Content-Length,
      a bare-LF request, a 4,000-digit blob_data_payment_rate, garbage for the receiver.

Per phase: the normal client's p50/p99/max latency (fetches) and failures (fetches and uploads),
the server's peak RSS, open files and CPU, the attacker's CPU (it runs at nice 10: on a shared
2-core machine it stands for a client on another machine), the log lines written and the
tracebacks among them.
Last lines: `hostile_worst_p99_ms=<worst phase p99>` and `hostile_peak_rss_mb=<peak RSS>`.
Targets: no failure, worst p99 <= 250 ms, peak RSS <= 300 MB, < 100 log lines per phase,
no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

# The repository, not bench/ (whose http.py would shadow the standard library's for aiohttp).
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prism.app.send import send_file  # noqa: E402 (after the path fix above)
from prism.store.http import HttpStore  # noqa: E402
from prism.store.peer import PeerStore  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER_NOFILE = 1024
ANY_HASH = "ab" * 48


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Ports:
    receiver: int = field(default_factory=free_port)
    peer: int = field(default_factory=free_port)
    http: int = field(default_factory=free_port)
    http3: int = field(default_factory=lambda: free_port(socket.SOCK_DGRAM))
    metrics: int = field(default_factory=free_port)


# -- the server -------------------------------------------------------------------------------


def _server_limits() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (SERVER_NOFILE, SERVER_NOFILE))


def start_server(work: str, ports: Ports, log_path: str) -> subprocess.Popen[bytes]:
    conf = os.path.join(work, "config.json")
    with open(conf, "w") as f:
        json.dump({"protected_list_url": ""}, f)
    args = [
        sys.executable, "-m", "prism", "--conf", conf, "reflector", "--host", "127.0.0.1",
        "--receiver-port", str(ports.receiver), "--tcp-peer-port", str(ports.peer),
        "--http-peer-port", str(ports.http), "--http3-peer-port", str(ports.http3),
        "--metrics-port", str(ports.metrics), "--use-db=false",
        "--store-path", os.path.join(work, "store"),
        "--disk-cache", f"1GB:{os.path.join(work, 'cache')}:lru", "--shutdown-grace", "2",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=out, env=env, preexec_fn=_server_limits)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"prism reflector exited {proc.returncode}:\n{open(log_path).read()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", ports.metrics), 0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("prism reflector did not start")


class Sampler(threading.Thread):
    """Peak RSS and open files of the server, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_rss = 0
        self.peak_files = 0
        self.running = True

    def reset(self) -> tuple[int, int]:
        out = (self.peak_rss, self.peak_files)
        self.peak_rss = self.peak_files = 0
        return out

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the server so far."""
        return cpu_seconds(self.pid)

    def run(self) -> None:
        while self.running:
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
                files = len(os.listdir(f"/proc/{self.pid}/fd"))
            except (OSError, StopIteration):
                return
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_files = max(self.peak_files, files)
            time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- attacks (each phase in its own process) --------------------------------------------------


def _attacker_limits() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _hold(port: int, opening: bytes, drip: bytes = b"", stop: float = 0.0) -> None:
    """Open, send `opening`, then (optionally) a `drip` byte a second; reopen when closed.

    Kept cheap (no timer per read) so the attacker's own CPU disturbs the measurement little.
    """
    while time.time() < stop:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        try:
            async with asyncio.timeout(max(0.0, stop - time.time())):
                if opening:
                    writer.write(opening)
                if drip:
                    while True:
                        try:
                            async with asyncio.timeout(1.0):
                                if not await reader.read(65536):
                                    break
                        except TimeoutError:
                            writer.write(drip)
                else:
                    while await reader.read(65536):
                        pass
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()
        await asyncio.sleep(0.5)  # reopening costs the attacker nothing; not a busy loop, though


def _stalled_offer() -> bytes:
    offer = json.dumps({"blob_hash": os.urandom(48).hex(), "blob_size": 2097152}).encode()
    return b'{"version": 1}' + offer + b"x"


MALFORMED: list[tuple[str, bytes]] = [
    ("http", "GET /blob?hash=x HTTP/1.1\r\nContent-Length: ²\r\n\r\n".encode()),
    ("http", b"GET /blob?hash=x HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n"),
    ("http", b"GET /blob?hash=" + ANY_HASH.encode() + b" HTTP/1.1\nHost: x\n\n"),
    (
        "peer",
        b'{"blob_data_payment_rate": ' + b"9" * 4000 + b', "requested_blob": "' + ANY_HASH.encode() + b'"}',
    ),
    ("receiver", b'{"version": 1}{"blob_hash": 12, "blob_size": "x"}'),
    ("receiver", b"\xff\xfe garbage \x00" * 10),
]


async def _malformed(ports: dict[str, int], stop: float, worker: int) -> None:
    i = worker
    while time.time() < stop:
        kind, payload = MALFORMED[i % len(MALFORMED)]
        i += 1
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", ports[kind])
        except OSError:
            await asyncio.sleep(0.05)
            continue
        try:
            writer.write(payload)
            await asyncio.wait_for(reader.read(65536), 1.0)
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()


def attack(phase: str, ports: dict[str, int], seconds: float) -> None:
    _attacker_limits()
    # On 2 shared cores the attacker's own CPU would otherwise be most of what the server and the
    # normal client wait for; a real attacker runs on its own machine.
    os.nice(10)

    async def main() -> None:
        stop = time.time() + seconds
        tasks: list[asyncio.Task[None]] = []
        if phase == "a":
            targets = [ports["http"], ports["peer"], ports["receiver"]]
            coros = [_hold(targets[i % 3], b"", stop=stop) for i in range(1100)]
        elif phase == "b":
            coros = [_hold(ports["receiver"], _stalled_offer(), stop=stop) for _ in range(1000)]
        elif phase == "c":
            opening = b"GET /blob?hash=" + ANY_HASH.encode() + b" HTTP/1.1\r\nHost: x\r\n"
            coros = [_hold(ports["http"], opening, drip=b"X", stop=stop) for _ in range(2000)]
        elif phase == "d":
            coros = [_malformed(ports, stop, w) for w in range(32)]
        else:  # "0": no attack, the reference
            coros = [asyncio.sleep(seconds)]
        for c in coros:
            tasks.append(asyncio.create_task(c))
            await asyncio.sleep(0)
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


# -- the normal client ------------------------------------------------------------------------


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    uploads: int = 0


async def _fetch_loop(store: HttpStore | PeerStore, blob_hash: str, stop: float, out: Outcome) -> None:
    while time.monotonic() < stop:
        started = time.monotonic()
        try:
            with await asyncio.wait_for(store.get(blob_hash), 10) as ref:
                ref.read()
            out.latencies.append(time.monotonic() - started)
        except Exception as e:
            out.failures.append(f"{store.name} get: {type(e).__name__}: {e}")
        await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - started)))


async def _upload_loop(address: str, work: str, stop: float, out: Outcome) -> None:
    n = 0
    while time.monotonic() < stop:
        started = time.monotonic()
        path = os.path.join(work, f"upload-{os.getpid()}-{n}")
        n += 1
        with open(path, "wb") as f:
            f.write(os.urandom(100_000))
        try:
            await asyncio.wait_for(send_file(address, path, io_timeout=20), 20)
            out.uploads += 1
        except Exception as e:
            out.failures.append(f"upload: {type(e).__name__}: {e}")
        finally:
            os.unlink(path)
        await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - started)))


async def normal_client(ports: Ports, blob_hash: str, work: str, seconds: float) -> Outcome:
    out = Outcome()
    http = HttpStore(f"127.0.0.1:{ports.http}", timeout=10)
    peer = PeerStore(f"127.0.0.1:{ports.peer}", 10)
    stop = time.monotonic() + seconds
    try:
        await asyncio.gather(
            _fetch_loop(http, blob_hash, stop, out),
            _fetch_loop(peer, blob_hash, stop, out),
            _upload_loop(f"127.0.0.1:{ports.receiver}", work, stop, out),
        )
    finally:
        await http.close()
        await peer.close()
    return out


async def seed(ports: Ports, work: str) -> str:
    """Upload a 3 MB stream; the hash of its first (2 MiB) content blob."""
    path = os.path.join(work, "seed")
    with open(path, "wb") as f:
        f.write(os.urandom(3_000_000))
    stream, _, _ = await send_file(f"127.0.0.1:{ports.receiver}", path)
    return stream.sd.content_hashes[0]


# -- the run ----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def log_size(path: str) -> int:
    return os.path.getsize(path)


def log_since(path: str, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def run_phase(
    phase: str, ports: Ports, blob_hash: str, work: str, seconds: float, sampler: Sampler, log: str
):  # type: ignore[no-untyped-def]
    offset = log_size(log)
    sampler.reset()
    cpu_before, started = sampler.cpu_seconds(), time.monotonic()
    target = {"http": ports.http, "peer": ports.peer, "receiver": ports.receiver}
    attacker = mp.get_context("spawn").Process(target=attack, args=(phase, target, seconds + 1))
    attacker.start()
    time.sleep(1.0)  # let the attack build up before measuring
    out = asyncio.run(normal_client(ports, blob_hash, work, seconds))
    assert attacker.pid is not None
    attacker_cpu = cpu_seconds(attacker.pid) / (time.monotonic() - started) * 100
    attacker.join(15)
    if attacker.is_alive():
        attacker.kill()
    rss, files = sampler.reset()
    cpu = (sampler.cpu_seconds() - cpu_before) / (time.monotonic() - started) * 100
    text = log_since(log, offset)
    lines = text.count("\n")
    tracebacks = text.count("Traceback")
    lat = out.latencies
    p50, p99, worst = (percentile(lat, 0.5) * 1000, percentile(lat, 0.99) * 1000, max(lat, default=0) * 1000)
    print(
        f"phase {phase}: fetches={len(lat)} p50={p50:.1f}ms p99={p99:.1f}ms max={worst:.1f}ms"
        f" uploads={out.uploads} failures={len(out.failures)} peak_rss={rss / 2**20:.0f}MB"
        f" open_files={files} server_cpu={cpu:.0f}% attacker_cpu={attacker_cpu:.0f}%"
        f" log_lines={lines} tracebacks={tracebacks}",
        flush=True,
    )
    for failure in out.failures[:5]:
        print(f"  failure: {failure}", flush=True)
    if lines:
        for line in text.splitlines()[:3]:
            print(f"  log: {line[:200]}", flush=True)
    return p99, rss


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--phases", default="0abcd")
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="hostile-", dir=args.dir)
    ports = Ports()
    log = os.path.join(work, "server.log")
    proc = start_server(work, ports, log)
    sampler = Sampler(proc.pid)
    sampler.start()
    try:
        blob_hash = asyncio.run(seed(ports, work))
        print(f"server pid {proc.pid}, RLIMIT_NOFILE {SERVER_NOFILE}; log {log}", flush=True)
        results = [run_phase(p, ports, blob_hash, work, args.seconds, sampler, log) for p in args.phases]
    finally:
        sampler.running = False
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(f"hostile_worst_p99_ms={max(r[0] for r in results):.1f}")
    print(f"hostile_peak_rss_mb={max(r[1] for r in results) / 2**20:.0f}")


if __name__ == "__main__":
    main()
