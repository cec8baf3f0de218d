"""Cache policies against Belady's optimum, the cost of a cache hit, and index rebuild time.

1. Replays request traces over a catalogue of equal-sized blobs (most blobs are 2 MiB, so a
   capacity counts blobs) through prism's own policy classes, exactly as the disk cache
   drives them (`EvictionPolicy.admit`):
   - zipf: Zipf(0.9) popularity;
   - scan: the same, with a one-time sequential scan of never-seen blobs in the middle;
   - shift: Zipf(0.9) whose popular set moves to other blobs several times.
   Capacities are 1%, 5% and 20% of the catalogue. The limit printed next to each hit ratio
   is Belady's offline optimum (evict the blob needed furthest in the future, and do not
   admit a blob needed later than everything cached) for the same trace and capacity.
2. Cost of one cache hit through the full chain that `prism reflector` builds
   (SingleFlight(Caching(Caching(SingleFlight(origin), disk cache), memory cache))), for a
   memory hit and a disk hit, next to the bare dict lookup and bare open+fstat below it.
3. Start of a disk cache with 100,000 blobs, for every manager: cold (no snapshot or clean
   shutdown mark: the directory is scanned) and warm (after a clean `stop()`), the index's
   memory per entry after a warm start (all blobs verified, and the extra while all are still
   unverified, as after a crash) and at the peak of warm and cold starts (tracemalloc), and
   the localdb manager's first start (every blob adopted into a new SQLite file).
   Prints warm_start_le_cold_all_managers=yes|no.

Last line: best_policy_vs_optimal=<mean over cases of hit ratio / optimal hit ratio, for
the policy with the best mean>.

Usage: .venv/bin/python bench/cache.py [--catalogue N] [--requests N] [--restart-blobs N]
       [--restart-rounds N] [--only-restart]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import heapq
import itertools
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prism.app.cache_chain import build_cache_chain, make_local_db_index
from prism.blob import sha384_hex
from prism.store import DiskStore, MemoryStore
from prism.store.disk_cache import DiskCacheStore
from prism.store.eviction import make_policy
from prism.store.singleflight import SingleFlightStore

POLICIES = ("lru", "lfuda", "tinylfu")
CAPACITIES = (0.01, 0.05, 0.20)


# -- traces ---------------------------------------------------------------------------------


def zipf_sampler(n: int, alpha: float, rng: random.Random) -> Callable[[], int]:
    cum = list(itertools.accumulate(1.0 / (k**alpha) for k in range(1, n + 1)))
    total = cum[-1]

    def sample() -> int:
        return bisect.bisect_left(cum, rng.random() * total)

    return sample


def trace_zipf(n: int, length: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    perm = list(range(n))
    rng.shuffle(perm)
    sample = zipf_sampler(n, 0.9, rng)
    return [perm[sample()] for _ in range(length)]


def trace_scan(n: int, length: int, seed: int) -> list[int]:
    base = trace_zipf(n, length, seed)
    half = length // 2
    scan = list(range(n, 2 * n))  # a catalogue-sized crawl of blobs nobody asks for again
    return base[:half] + scan + base[half:]


def trace_shift(n: int, length: int, seed: int, phases: int = 5) -> list[int]:
    rng = random.Random(seed)
    perm = list(range(n))
    rng.shuffle(perm)
    sample = zipf_sampler(n, 0.9, rng)
    out = []
    per_phase = length // phases
    for p in range(phases):
        offset = p * (n // phases)  # the top ranks land on different blobs each phase
        out.extend(perm[(sample() + offset) % n] for _ in range(per_phase))
    return out


# -- replay ---------------------------------------------------------------------------------


def replay(policy_name: str, trace: list[int], capacity: int) -> float:
    p = make_policy(policy_name, capacity)
    keys = [str(k) for k in range(max(trace) + 1)]
    hits = 0
    contains, touch, admit = p.__contains__, p.touch, p.admit
    for k in trace:
        key = keys[k]
        if contains(key):
            hits += 1
            touch(key)
        else:
            admit(key, 1, capacity)
    return hits / len(trace)


def belady(trace: list[int], capacity: int) -> float:
    """Offline optimum for equal sizes, with bypass."""
    never = len(trace) + 1
    next_use = [never] * len(trace)
    last: dict[int, int] = {}
    for i in range(len(trace) - 1, -1, -1):
        next_use[i] = last.get(trace[i], never)
        last[trace[i]] = i
    cached: dict[int, int] = {}  # key -> its next use
    heap: list[tuple[int, int]] = []  # (-next use, key), lazily invalidated
    hits = 0
    for i, k in enumerate(trace):
        nu = next_use[i]
        if k in cached:
            hits += 1
            cached[k] = nu
            heapq.heappush(heap, (-nu, k))
            continue
        if len(cached) >= capacity:
            while True:
                neg, victim = heap[0]
                if cached.get(victim) == -neg:
                    break
                heapq.heappop(heap)
            if -neg <= nu:
                continue  # the newcomer is needed last: do not admit it
            heapq.heappop(heap)
            del cached[victim]
        cached[k] = nu
        heapq.heappush(heap, (-nu, k))
    return hits / len(trace)


def policy_section(n: int, length: int) -> float:
    traces = {
        "zipf": trace_zipf(n, length, 1),
        "scan": trace_scan(n, length, 2),
        "shift": trace_shift(n, length, 3),
    }
    print(f"== hit ratio vs Belady's optimum: catalogue {n} blobs, {length} requests per trace")
    print(f"{'trace':6} {'cap':>4} {'optimal':>8} " + " ".join(f"{p:>16}" for p in POLICIES) + "  best")
    ratios: dict[str, list[float]] = {p: [] for p in POLICIES}
    for tname, trace in traces.items():
        for frac in CAPACITIES:
            cap = max(1, int(n * frac))
            opt = belady(trace, cap)
            cells = []
            best = ("", -1.0)
            for p in POLICIES:
                t0 = time.perf_counter()
                hr = replay(p, trace, cap)
                us = (time.perf_counter() - t0) / len(trace) * 1e6
                r = hr / opt if opt else 1.0
                ratios[p].append(r)
                cells.append(f"{hr:6.3f} ({r:4.0%}) {us:3.1f}us")
                if hr > best[1]:
                    best = (p, hr)
            print(f"{tname:6} {frac:4.0%} {opt:8.3f} " + " ".join(f"{c:>16}" for c in cells) + f"  {best[0]}")
    print("(each cell: hit ratio, its share of the optimum, policy cost per request)")
    means = {p: statistics.mean(v) for p, v in ratios.items()}
    for p, m in means.items():
        print(f"mean hit ratio / optimal  {p:8} {m:.3f}")
    best_policy = max(means, key=lambda p: means[p])
    print(f"best policy over all cases: {best_policy}")
    return means[best_policy]


# -- hit cost -------------------------------------------------------------------------------


async def hit_cost(root: str, iterations: int) -> None:
    print(f"== cost of one cache hit through the full chain ({iterations} gets each, get + close)")
    blobs = []
    for _ in range(64):
        data = os.urandom(64 * 1024)
        blobs.append((sha384_hex(data), data))
    origin = MemoryStore("origin")
    for h, d in blobs:
        await origin.put(h, d)

    async def measure(label: str, get: Callable[[str], object], ref_close: bool = True) -> float:
        hashes = [h for h, _ in blobs]
        for h in hashes:  # warm
            r = await get(h)  # type: ignore[misc]
            r.close()
        t0 = time.perf_counter()
        for i in range(iterations):
            r = await get(hashes[i & 63])  # type: ignore[misc]
            r.close()
        us = (time.perf_counter() - t0) / iterations * 1e6
        print(f"  {label:58} {us:7.2f} us")
        return us

    # Memory hit: the whole chain with a memory cache on top, as `--mem-cache` builds it.
    chain = build_cache_chain(origin, disk_cache=f"1GB:{root}/mem_chain:lru", mem_cache=100)
    await chain.start()
    outer = SingleFlightStore(chain.store, component="sf-http")
    await measure("memory hit: sf-http > caching > memory cache", outer.get)
    mem_cache = chain.caches[-1]
    bare = getattr(mem_cache, "_blobs", {})
    t0 = time.perf_counter()
    for i in range(iterations):
        bare.get(blobs[i & 63][0])
    print(f"  {'  limit: bare dict lookup':58} {(time.perf_counter() - t0) / iterations * 1e6:7.2f} us")
    await chain.stop()

    # Disk hit: chain without a memory cache (lru and localdb managers).
    for manager in ("lru", "localdb"):
        chain = build_cache_chain(origin, disk_cache=f"1GB:{root}/disk_{manager}:{manager}")
        await chain.start()
        outer = SingleFlightStore(chain.store, component="sf-http")
        await measure(f"disk hit ({manager}): sf-http > caching > disk cache > disk store", outer.get)
        await chain.stop()
    disk = DiskStore(f"{root}/disk_lru")
    await measure("  limit: bare DiskStore.get (its open-file cache's hit)", disk.get)
    disk = DiskStore(f"{root}/disk_lru", open_files=0)
    await measure("  bare DiskStore.get, no open-file cache (open + fstat)", disk.get)


# -- index rebuild --------------------------------------------------------------------------


def make_files(root: str, n: int) -> None:
    os.makedirs(root, exist_ok=True)
    made: set[str] = set()
    for i in range(n):
        data = i.to_bytes(4, "big") + b"x" * (i % 100)  # a real blob: a cache hashes what it distrusts
        h = sha384_hex(data)
        d = os.path.join(root, h[:2])
        if h[:2] not in made:
            os.makedirs(d, exist_ok=True)
            made.add(h[:2])
        fd = os.open(os.path.join(d, h), os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, data)
        os.close(fd)


MANAGERS = ("lru", "lfuda", "tinylfu", "localdb")


def open_cache(root: str, manager: str) -> DiskCacheStore:
    cap = 1 << 40
    idx = make_local_db_index(root) if manager == "localdb" else None
    policy = make_policy("lru" if manager == "localdb" else manager, cap, item_size_hint=1 << 20)
    return DiskCacheStore(DiskStore(root), cap, policy, index=idx)


def forget_clean_shutdown(root: str) -> None:
    """Make the next start a cold one: no snapshot, no clean-shutdown mark (the localdb rows stay)."""
    for name in os.listdir(root):
        if name.startswith("cache-index"):
            os.unlink(os.path.join(root, name))


async def timed_start(
    root: str, manager: str, n: int, traced: bool = False, read_all: bool = False
) -> tuple[float, float, float, float]:
    """(seconds to start, bytes per entry after start, peak bytes per entry, seconds of the
    warm start's background pass over the directory).

    `read_all` gets every blob once after the start (so none is left to verify at the next one).
    """
    cache = open_cache(root, manager)
    if traced:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    await cache.start()
    took = time.perf_counter() - t0
    per_entry = peak = 0.0
    if traced:
        await asyncio.sleep(0)  # let the loop drop the last step's arguments (the start's plan)
        gc.collect()
        now, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        per_entry, peak = (now - base) / n, (top - base) / n
    assert cache.rebuild is not None and cache.rebuild.blobs == n, cache.rebuild
    adopting = getattr(cache, "adoption", None)
    t1 = time.perf_counter()
    if adopting is not None:  # a warm start's background pass over the directory
        await adopting
    background = time.perf_counter() - t1
    if read_all:
        for h in await cache.list_hashes():
            (await cache.get(h)).close()
    await cache.stop()
    return took, per_entry, peak, background


async def rebuild_time(root: str, n: int, rounds: int) -> None:
    print(f"== index at start with {n} blobs on disk (best of {rounds} rounds; bytes by tracemalloc)")
    t0 = time.perf_counter()
    make_files(root, n)
    print(f"  (writing {n} files took {time.perf_counter() - t0:.1f}s)")
    print(
        f"  {'manager':8} {'cold s':>7} {'warm s':>7} {'bg s':>5} {'B/entry':>8} {'+unverified':>12}"
        f" {'peak warm':>10} {'peak cold':>10}  warm<=cold"
    )
    all_ok = True
    for manager in MANAGERS:
        if manager == "localdb":  # first start ever: every blob adopted into a new SQLite file
            took = (await timed_start(root, manager, n))[0]
            print(f"  {'localdb first start (fills SQLite)':40} {took:6.2f} s")
        colds, warms, passes = [], [], []
        for _ in range(rounds):
            forget_clean_shutdown(root)
            colds.append((await timed_start(root, manager, n))[0])
            warm, _, _, background = await timed_start(root, manager, n)
            warms.append(warm)
            passes.append(background)
        # Bytes: after a cold start every blob is unverified until read; after reading all, none is.
        forget_clean_shutdown(root)
        _, _, cold_peak, _ = await timed_start(root, manager, n, traced=True)
        _, unverified, _, _ = await timed_start(root, manager, n, traced=True, read_all=True)
        _, per_entry, peak, _ = await timed_start(root, manager, n, traced=True)
        ok = min(warms) <= min(colds)
        all_ok &= ok
        verdict = "yes" if ok else "NO"
        extra = unverified - per_entry
        print(
            f"  {manager:8} {min(colds):7.2f} {min(warms):7.2f} {min(passes):5.2f} {per_entry:8.0f}"
            f" {extra:12.0f} {peak:10.0f} {cold_peak:10.0f}  {verdict}"
        )
        forget_clean_shutdown(root)
    print(
        "  (bg s: the warm start's background pass over the directory, after the start;"
        " B/entry: index after a warm start, all verified; +unverified: extra while all are unverified)"
    )
    print(f"warm_start_le_cold_all_managers={'yes' if all_ok else 'no'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--catalogue", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--hit-iterations", type=int, default=20_000)
    ap.add_argument("--restart-blobs", type=int, default=100_000)
    ap.add_argument("--restart-rounds", type=int, default=3)
    ap.add_argument("--only-restart", action="store_true", help="skip the policy and hit-cost sections")
    args = ap.parse_args()
    best = None if args.only_restart else policy_section(args.catalogue, args.requests)
    tmp = tempfile.mkdtemp(prefix="prism-bench-cache-")
    try:
        if not args.only_restart:
            asyncio.run(hit_cost(tmp, args.hit_iterations))
        if args.restart_blobs:
            asyncio.run(rebuild_time(os.path.join(tmp, "restart"), args.restart_blobs, args.restart_rounds))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if best is not None:
        print(f"best_policy_vs_optimal={best:.3f}")


if __name__ == "__main__":
    main()
