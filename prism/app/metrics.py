"""Prometheus metrics on `--metrics-port` `/metrics` with reflector.go's names (reflector.md §6).

Servers, the receiver and stores hand out typed snapshots of their counters (`snapshot()`);
this module reads them once per scrape into a `Scrape`, renders the `SERIES` table from it, and
writes the text format itself, because prometheus-client would rename the
byte counters (it appends `_total` to every counter, and reflector.go's `*_bytes` have none).
The `process_*`, `python_*` series come from prometheus-client's own collectors.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from prism.app.blocklist import BlocklistSnapshot
from prism.cluster.slicing import ClusterSnapshot
from prism.dht.workers import AnnouncerSnapshot
from prism.hostport import HostPort, bind_socket
from prism.reflector.receiver import ReceiverStats
from prism.stats import ErrorType, ServerSnapshot
from prism.store.base import BlobStore, walk_chain
from prism.store.stats import CounterSource, StoreSnapshot

log = logging.getLogger("prism.app")

NS = "reflector"

Labels = tuple[tuple[str, str], ...]
Sample = tuple[Labels, float]


class ServerSource(Protocol):
    """A download server (peer, HTTP, HTTP/3)."""

    def snapshot(self) -> ServerSnapshot: ...


class BlocklistSource(Protocol):
    """The blocklist updater."""

    def snapshot(self) -> BlocklistSnapshot: ...


class ReceiverSource(Protocol):
    """A reflector receiver."""

    def snapshot(self) -> ReceiverStats: ...


class ClusterSource(Protocol):
    """A cluster node (`prism start`): membership and its slice."""

    def cluster_snapshot(self) -> ClusterSnapshot: ...


class AnnouncerSource(Protocol):
    """A DHT node that announces (None before it started)."""

    def snapshot(self) -> AnnouncerSnapshot | None: ...


@dataclass(frozen=True, slots=True)
class Scrape:
    """Everything one scrape read, once, from the registered components."""

    servers: list[ServerSnapshot]
    receivers: list[ReceiverStats]
    stores: list[StoreSnapshot]
    tasks: int | None
    """Running asyncio tasks (None outside a loop)."""
    announcers: list[AnnouncerSnapshot] = field(default_factory=list)
    blocklists: list[BlocklistSnapshot] = field(default_factory=list)
    clusters: list[ClusterSnapshot] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Series:
    """One metric family: its name after `reflector_`, its kind and help, and how to read it."""

    short: str
    kind: Literal["counter", "gauge"]
    help: str
    read: Callable[[Scrape], Iterator[Sample]]
    always: bool = False
    """Listed (HELP and TYPE) even when nothing reports it; a byte counter then reads 0."""


def _server_bytes(protocol: str) -> Callable[[Scrape], Iterator[Sample]]:
    return lambda s: (((), x.bytes_out) for x in s.servers if x.protocol == protocol)


def _server_downloads(protocol: str | None) -> Callable[[Scrape], Iterator[Sample]]:
    return lambda s: (((), x.downloads) for x in s.servers if protocol in (None, x.protocol))


def _queue(protocol: str) -> Callable[[Scrape], Iterator[Sample]]:
    return lambda s: (
        ((), x.queue_waiting) for x in s.servers if x.protocol == protocol and x.queue_waiting is not None
    )


def _upstream_in(*names: str) -> Callable[[Scrape], Iterator[Sample]]:
    """Bytes received by upstream stores with one of these names (none given: every upstream)."""
    return lambda s: (
        ((), x.bytes_in) for x in s.stores if x.bytes_in is not None and (not names or x.name in names)
    )


def _origin_out(s: Scrape) -> Iterator[Sample]:
    """Bytes sent to origins that store blobs (S3)."""
    return (((), x.bytes_out) for x in s.stores if x.bytes_out is not None)


def _receiver(value: Callable[[ReceiverStats], int]) -> Callable[[Scrape], Iterator[Sample]]:
    return lambda s: (((), value(r)) for r in s.receivers)


def _errors(s: Scrape) -> Iterator[Sample]:
    for server in s.servers:
        for kind, n in server.errors.items():
            yield (("direction", "download"), ("error_type", kind)), n
    for r in s.receivers:
        if r.errors:
            yield (("direction", "upload"), ("error_type", ErrorType.OTHER.value)), r.errors


def _cache_layer(value: Callable[[StoreSnapshot], int | None]) -> Callable[[Scrape], Iterator[Sample]]:
    """Per store that has the counter, labelled by cache (a caching layer names its cache) and component."""

    def read(s: Scrape) -> Iterator[Sample]:
        for x in s.stores:
            v = value(x)
            if v is not None:
                yield (("cache_type", x.cache_name or x.name), ("component", x.component or "reflector")), v

    return read


def _endpoint_hits(first: bool) -> Callable[[Scrape], Iterator[Sample]]:
    def read(s: Scrape) -> Iterator[Sample]:
        for x in s.stores:
            if x.endpoint_hits is not None:
                hits = x.endpoint_hits
                yield (), (hits[0] if hits else 0) if first else sum(hits[1:])

    return read


def _routines(s: Scrape) -> Iterator[Sample]:
    for x in s.servers:
        if x.connections is not None:
            yield (("kind", "connections"), ("package", x.protocol)), x.connections
    if s.tasks is not None:
        yield (("kind", "tasks"), ("package", "asyncio")), s.tasks


def _dht(
    short: str, kind: Literal["counter", "gauge"], text: str, value: Callable[[AnnouncerSnapshot], float]
) -> Series:
    """A series of the servers' DHT announcer (`reflector_dht_<short>`)."""
    return Series(f"dht_{short}", kind, text, lambda s: (((), value(a)) for a in s.announcers))


def _cluster(short: str, text: str, value: Callable[[ClusterSnapshot], int]) -> Series:
    """A series of the cluster node (`reflector_cluster_<short>`)."""
    return Series(f"cluster_{short}", "gauge", text, lambda s: (((), value(c)) for c in s.clusters))


def _blocklist(value: Callable[[BlocklistSnapshot], int]) -> Callable[[Scrape], Iterator[Sample]]:
    return lambda s: (((), value(b)) for b in s.blocklists)


def _byte_counter(short: str, read: Callable[[Scrape], Iterator[Sample]]) -> Series:
    return Series(short, "counter", short.replace("_", " "), read, always=True)


def _cache_gauge(short: str, help_text: str, value: Callable[[StoreSnapshot], int | None]) -> Series:
    """A gauge per cache layer (size, capacity), labelled like the cache counters."""
    return Series(short, "gauge", help_text, _cache_layer(value))


SERIES: tuple[Series, ...] = (
    _byte_counter("tcp_in_bytes", _upstream_in("peer")),
    _byte_counter("tcp_out_bytes", _server_bytes("tcp")),
    _byte_counter("udp_in_bytes", _upstream_in("http3")),
    _byte_counter("udp_out_bytes", _server_bytes("http3")),
    _byte_counter("http_in_bytes", _upstream_in("http")),
    _byte_counter("http_out_bytes", _server_bytes("http")),
    _byte_counter("reflector_in_bytes", _receiver(lambda r: r.bytes_received)),
    _byte_counter("s3_out_bytes", _origin_out),
    _byte_counter("s3_in_bytes", _upstream_in("cloudfront_ro", "s3")),
    _byte_counter("upstream_in_bytes", _upstream_in()),
    Series(
        "blob_download_total",
        "counter",
        "Blobs downloaded from this server (all protocols)",
        _server_downloads(None),
        always=True,
    ),
    Series(
        "peer_download_total",
        "counter",
        "Blobs downloaded over the peer protocol",
        _server_downloads("tcp"),
        always=True,
    ),
    Series(
        "http3_blob_download_total",
        "counter",
        "Blobs downloaded over HTTP/3",
        _server_downloads("http3"),
        always=True,
    ),
    Series(
        "http_blob_download_total",
        "counter",
        "Blobs downloaded over HTTP",
        _server_downloads("http"),
        always=True,
    ),
    Series("error_total", "counter", "Errors by direction and type", _errors, always=True),
    Series("http3_blob_request_queue_size", "gauge", "HTTP/3 GETs waiting for a worker", _queue("http3")),
    Series("http_blob_request_queue_size", "gauge", "HTTP GETs waiting for a worker", _queue("http")),
    Series(
        "blob_upload_total",
        "counter",
        "Content blobs received by the reflector receiver",
        _receiver(lambda r: r.blobs_received),
    ),
    Series(
        "sdblob_upload_total",
        "counter",
        "sd blobs received by the reflector receiver",
        _receiver(lambda r: r.sd_blobs_received),
    ),
    Series(
        "ittt_this_hit_total", "counter", "Gets served by the first origin endpoint", _endpoint_hits(True)
    ),
    Series(
        "ittt_that_hit_total", "counter", "Gets served by the fallback origin endpoint", _endpoint_hits(False)
    ),
    Series(
        "cache_origin_requests_total",
        "gauge",
        "Requests in flight to the origin, per single-flight group",
        _cache_layer(lambda x: x.in_flight),
    ),
    Series(
        "cache_waiting_requests_total",
        "gauge",
        "Requests waiting on a single-flight group",
        _cache_layer(lambda x: x.waiting),
    ),
    Series(
        "cache_hit_total",
        "counter",
        "Cache hits per layer",
        _cache_layer(lambda x: x.hits),
    ),
    Series(
        "cache_miss_total",
        "counter",
        "Cache misses per layer",
        _cache_layer(lambda x: x.misses),
    ),
    Series(
        "cache_write_error_total",
        "counter",
        "Writes to a cache that failed (the blob was still served or stored)",
        _cache_layer(lambda x: x.cache_write_errors),
    ),
    Series(
        "cache_evict_total",
        "counter",
        "Blobs evicted from a cache",
        _cache_layer(lambda x: x.evictions),
    ),
    _cache_gauge("cache_size_bytes", "Bytes of blobs a cache holds", lambda x: x.size_bytes),
    _cache_gauge("cache_size_blobs", "Blobs a cache holds", lambda x: x.size_blobs),
    _cache_gauge("cache_capacity_bytes", "Size limit of a cache in bytes", lambda x: x.capacity_bytes),
    _cache_gauge("cache_capacity_blobs", "Blobs a cache can hold", lambda x: x.capacity_blobs),
    Series("routines", "gauge", "Running asyncio tasks and open connections", _routines),
    _dht("announced_total", "counter", "Announcements some DHT node accepted", lambda a: a.announced),
    _dht("announce_failed_total", "counter", "Announcements no DHT node accepted", lambda a: a.failed),
    _dht("store_total", "counter", "DHT stores accepted by other nodes", lambda a: a.stores),
    _dht(
        "announce_seconds_total",
        "counter",
        "Time announcing (/ announcements: mean latency)",
        lambda a: a.seconds,
    ),
    _dht("announce_backlog", "gauge", "Hashes due and not yet announced", lambda a: a.backlog),
    _dht("announce_hashes", "gauge", "Hashes announced and kept announced", lambda a: a.hashes),
    _dht("routing_table_peers", "gauge", "Contacts in the DHT routing table", lambda a: a.routing_peers),
    _cluster("members", "Alive cluster members", lambda c: c.members),
    _cluster("position", "This node's position among the alive members (0: none)", lambda c: c.position),
    _cluster("slice_hashes", "Stored hashes in this node's announce slice", lambda c: c.slice_hashes),
    Series("blocklist_runs_total", "counter", "Blocklist updates run", _blocklist(lambda b: b.runs)),
    Series(
        "blocklist_failed_runs_total",
        "counter",
        "Blocklist updates that could not fetch a list or reach a wallet server",
        _blocklist(lambda b: b.failed_runs),
    ),
    Series(
        "blocklist_outpoints",
        "gauge",
        "Outpoints in the last blocked list",
        _blocklist(lambda b: b.outpoints),
    ),
    Series(
        "blocklist_blocked", "gauge", "sd hashes blocked by the last update", _blocklist(lambda b: b.blocked)
    ),
    Series(
        "blocklist_skipped",
        "gauge",
        "Blocked outpoints of the last update that are not streams",
        _blocklist(lambda b: b.skipped),
    ),
    Series(
        "blocklist_errors",
        "gauge",
        "Blocked outpoints of the last update that could not be resolved",
        _blocklist(lambda b: b.errors),
    ),
)


class Metrics:
    """Reads the snapshots of the registered components and renders reflector.go's series."""

    def __init__(self) -> None:
        self.servers: list[ServerSource] = []
        self.receivers: list[ReceiverSource] = []
        self.blocklists: list[BlocklistSource] = []
        self.stores: list[BlobStore] = []
        """Roots of store chains, walked with `walk_chain`."""
        self.announcers: list[AnnouncerSource] = []
        self.clusters: list[ClusterSource] = []
        self.registry = CollectorRegistry(auto_describe=True)
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            try:
                collector(registry=self.registry)
            except Exception:  # pragma: no cover - e.g. no /proc
                pass

    def scrape(self) -> Scrape:
        """Read every component once."""
        stores = [
            store.snapshot()
            for root in self.stores
            for store in walk_chain(root)
            if isinstance(store, CounterSource)
        ]
        try:
            tasks: int | None = len(asyncio.all_tasks())
        except RuntimeError:
            tasks = None
        announcers = [a for a in (x.snapshot() for x in self.announcers) if a is not None]
        return Scrape(
            [s.snapshot() for s in self.servers],
            [r.snapshot() for r in self.receivers],
            stores,
            tasks,
            announcers,
            [b.snapshot() for b in self.blocklists],
            [c.cluster_snapshot() for c in self.clusters],
        )

    def render(self) -> bytes:
        scrape = self.scrape()
        lines: list[str] = []
        for series in SERIES:
            samples: dict[Labels, float] = {}
            for labels, value in series.read(scrape):
                samples[labels] = samples.get(labels, 0) + value
            if not samples and not series.always:
                continue
            name = f"{NS}_{series.short}"
            lines.append(f"# HELP {name} {series.help}")
            lines.append(f"# TYPE {name} {series.kind}")
            if not samples and series.kind == "counter" and name.endswith("_bytes"):
                lines.append(f"{name} 0")
            for labels, value in samples.items():
                lines.append(f"{name}{_labels(labels)} {_num(value)}")
        return ("\n".join(lines) + "\n").encode() + generate_latest(self.registry)


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
        self._site: web.SockSite | None = None

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
        try:
            self._site = web.SockSite(self._runner, bind_socket(self.host, self._port))
            await self._site.start()
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        log.info("metrics on http://%s/metrics", HostPort(self.host, self.port))

    async def _handle(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), content_type="text/plain", charset="utf-8")

    async def stop(self, grace: float = 5.0) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
