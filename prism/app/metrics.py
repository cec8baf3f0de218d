"""Prometheus metrics on `--metrics-port` `/metrics` with reflector.go's names (reflector.md §6).

Components keep plain counters (`ServerStats`, store hit counts); this module reads them at
scrape time and renders the text format itself, because prometheus-client would rename the
byte counters (it appends `_total` to every counter, and reflector.go's `*_bytes` have none).
The `process_*`, `python_*` series come from prometheus-client's own collectors.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from prism.http.stats import ServerStats
from prism.store.base import BlobStore, walk_chain

log = logging.getLogger("prism.app")

NS = "reflector"

# protocol of a download server -> (bytes metric, downloads metric)
SERVER_METRICS = {
    "http": ("http_out_bytes", "http_blob_download_total"),
    "http3": ("udp_out_bytes", "http3_blob_download_total"),
    "tcp": ("tcp_out_bytes", "peer_download_total"),
}
# name of an upstream store -> its bytes-in metric
UPSTREAM_IN = {
    "http": "http_in_bytes",
    "http3": "udp_in_bytes",
    "peer": "tcp_in_bytes",
    "cloudfront_ro": "s3_in_bytes",
}

HELP = {
    "error_total": "Errors by direction and type",
    "blob_download_total": "Blobs downloaded from this server (all protocols)",
    "peer_download_total": "Blobs downloaded over the peer protocol",
    "http3_blob_download_total": "Blobs downloaded over HTTP/3",
    "http_blob_download_total": "Blobs downloaded over HTTP",
    "cache_hit_total": "Cache hits per layer",
    "cache_miss_total": "Cache misses per layer",
    "cache_origin_requests_total": "Requests in flight to the origin, per single-flight group",
    "cache_waiting_requests_total": "Requests waiting on a single-flight group",
    "cache_evict_total": "Blobs evicted from a cache",
    "speed_mbps": "MiB/s of the last retrieval",
    "ittt_this_hit_total": "Gets served by the first origin endpoint",
    "ittt_that_hit_total": "Gets served by the fallback origin endpoint",
    "blob_upload_total": "Content blobs received by the reflector receiver",
    "sdblob_upload_total": "sd blobs received by the reflector receiver",
    "http3_blob_request_queue_size": "HTTP/3 GETs waiting for a worker",
    "http_blob_request_queue_size": "HTTP GETs waiting for a worker",
    "routines": "Running asyncio tasks and open connections",
}
BYTE_COUNTERS = (
    "tcp_in_bytes",
    "tcp_out_bytes",
    "udp_in_bytes",
    "udp_out_bytes",
    "http_in_bytes",
    "http_out_bytes",
    "reflector_in_bytes",
    "s3_out_bytes",
    "s3_in_bytes",
    "upstream_in_bytes",
)


@dataclass
class _Family:
    name: str
    kind: str
    help: str
    samples: dict[tuple[tuple[str, str], ...], float] = field(default_factory=lambda: defaultdict(float))

    def add(self, value: float, **labels: str) -> None:
        self.samples[tuple(sorted(labels.items()))] += value


class Metrics:
    """Reads counters from the registered components and renders reflector.go's series."""

    def __init__(self) -> None:
        self.servers: list[object] = []
        """Download servers: objects with `.stats: ServerStats` (and optionally `.queue`)."""
        self.receivers: list[object] = []
        self.stores: list[BlobStore] = []
        """Roots of store chains, walked with `walk_chain`."""
        self.registry = CollectorRegistry(auto_describe=True)
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            try:
                collector(registry=self.registry)
            except Exception:  # pragma: no cover - e.g. no /proc
                pass

    def render(self) -> bytes:
        families: dict[str, _Family] = {}

        def fam(short: str, kind: str) -> _Family:
            name = f"{NS}_{short}"
            if name not in families:
                families[name] = _Family(name, kind, HELP.get(short, short.replace("_", " ")))
            return families[name]

        for short in BYTE_COUNTERS:
            fam(short, "counter")
        for short in ("blob_download_total", "peer_download_total", "http3_blob_download_total"):
            fam(short, "counter")
        fam("http_blob_download_total", "counter")
        errors = fam("error_total", "counter")
        for server in self.servers:
            stats = getattr(server, "stats", None)
            if stats is not None and hasattr(stats, "bytes_sent") and hasattr(stats, "blobs_sent"):
                # The peer server's own counters (prism.peer.server.PeerServerStats).
                fam("tcp_out_bytes", "counter").add(stats.bytes_sent)
                fam("peer_download_total", "counter").add(stats.blobs_sent)
                fam("blob_download_total", "counter").add(stats.blobs_sent)
                if getattr(stats, "protocol_errors", 0):
                    errors.add(stats.protocol_errors, direction="download", error_type="invalid_peer_data")
                continue
            if not isinstance(stats, ServerStats):
                continue
            names = SERVER_METRICS.get(stats.protocol)
            if names is None:
                continue
            fam(names[0], "counter").add(stats.bytes_out)
            fam(names[1], "counter").add(stats.downloads)
            fam("blob_download_total", "counter").add(stats.downloads)
            for kind, n in stats.errors.items():
                errors.add(n, direction="download", error_type=kind)
            queue = getattr(server, "queue", None)
            if queue is not None and stats.protocol in ("http", "http3"):
                fam(f"{stats.protocol}_blob_request_queue_size", "gauge").add(queue.waiting)
            conns = getattr(server, "connections", None)
            if conns is not None:
                fam("routines", "gauge").add(len(conns), package=stats.protocol, kind="connections")
        for receiver in self.receivers:
            self._receiver(receiver, fam, errors)
        for root in self.stores:
            for store in walk_chain(root):
                self._store(store, fam)
        try:
            fam("routines", "gauge").add(len(asyncio.all_tasks()), package="asyncio", kind="tasks")
        except RuntimeError:
            pass
        lines: list[str] = []
        for f in families.values():
            lines.append(f"# HELP {f.name} {f.help}")
            lines.append(f"# TYPE {f.name} {f.kind}")
            if not f.samples and f.kind == "counter" and f.name.endswith("_bytes"):
                lines.append(f"{f.name} 0")
            for labels, value in f.samples.items():
                lines.append(f"{f.name}{_labels(labels)} {_num(value)}")
        return ("\n".join(lines) + "\n").encode() + generate_latest(self.registry)

    @staticmethod
    def _receiver(receiver: object, fam: object, errors: _Family) -> None:
        stats = getattr(receiver, "stats", None)
        if stats is None:
            return
        for attr, short in (
            ("bytes_received", "reflector_in_bytes"),
            ("blobs_received", "blob_upload_total"),
            ("sd_blobs_received", "sdblob_upload_total"),
        ):
            value = getattr(stats, attr, None)
            if isinstance(value, int | float):
                fam(short, "counter").add(value)  # type: ignore[operator]
        errs = getattr(stats, "errors", None)
        if isinstance(errs, dict):
            for kind, n in errs.items():
                errors.add(n, direction="upload", error_type=str(kind))
        elif isinstance(errs, int) and errs:
            errors.add(errs, direction="upload", error_type="other")

    @staticmethod
    def _store(store: object, fam: object) -> None:
        name = str(getattr(store, "name", ""))
        bytes_in = getattr(store, "bytes_in", None)
        if isinstance(bytes_in, int | float):
            if name in UPSTREAM_IN:
                fam(UPSTREAM_IN[name], "counter").add(bytes_in)  # type: ignore[operator]
            fam("upstream_in_bytes", "counter").add(bytes_in)  # type: ignore[operator]
        hits = getattr(store, "hits", None)
        if name == "cloudfront_ro" and isinstance(hits, list):
            fam("ittt_this_hit_total", "counter").add(hits[0] if hits else 0)  # type: ignore[operator]
            fam("ittt_that_hit_total", "counter").add(sum(hits[1:]))  # type: ignore[operator]
        component = str(getattr(store, "component", "") or "reflector")
        flights = getattr(store, "flights", None)
        if name.startswith("sf_") and flights is not None:
            # reflector.go's single-flight gauges: work in flight and callers waiting on it.
            fam("cache_origin_requests_total", "gauge").add(
                getattr(flights, "leaders", 0), cache_type=name, component=component
            )  # type: ignore[operator]
            fam("cache_waiting_requests_total", "gauge").add(
                getattr(flights, "waiting", 0), cache_type=name, component=component
            )  # type: ignore[operator]
            return
        if name == "caching":
            cache_type = _cache_name(store) or name
            for attr, short in (("hits", "cache_hit_total"), ("misses", "cache_miss_total")):
                value = getattr(store, attr, None)
                if isinstance(value, int) and not isinstance(value, bool):
                    fam(short, "counter").add(value, cache_type=cache_type, component=component)  # type: ignore[operator]
            return
        evictions = getattr(store, "evictions", None)
        if isinstance(evictions, int) and not isinstance(evictions, bool):
            fam("cache_evict_total", "counter").add(evictions, cache_type=name, component=component)  # type: ignore[operator]


def _cache_name(store: object) -> str | None:
    cache = getattr(store, "cache", None)
    return getattr(cache, "name", None) if cache is not None else None


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    if isinstance(v, int) or (math.isfinite(v) and v == int(v)):
        return str(int(v))
    return repr(float(v))


class MetricsServer:
    """`GET /metrics` on `port` (aiohttp). A component: `start()`, `stop(grace)`, `.port`."""

    def __init__(self, metrics: Metrics, host: str = "0.0.0.0", port: int = 2112) -> None:
        self.metrics = metrics
        self.host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def port(self) -> int:
        if self._runner is not None and self._runner.addresses:
            return int(self._runner.addresses[0][1])
        return self._port

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.host, self._port, reuse_address=True)
        try:
            await self._site.start()
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def _handle(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), content_type="text/plain", charset="utf-8")

    async def stop(self, grace: float = 5.0) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
