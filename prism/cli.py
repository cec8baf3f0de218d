"""The `prism` command tree: parse flags, build objects from prism.app, start them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from prism.app.blocklist import DEFAULT_HUBS, DEFAULT_INTERVAL, DEFAULT_LIST_URL
from prism.config import DEFAULT_CONFIG_PATH, Config, ConfigError
from prism.logs import COMPONENTS, setup_logging
from prism.version import build_info

F = TypeVar("F", bound=Callable[..., Any])


class PrismContext:
    """What the root group hands to every subcommand."""

    def __init__(self, config: Config, conf_path: str | None) -> None:
        self.config = config
        self.conf_path = conf_path


def _verbose_choice(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    """`-v dht -v http` and `-v dht,node_finder` alike (cobra's string slice)."""
    allowed = (*COMPONENTS, "all", "node_finder")
    names = [v.strip() for item in value for v in item.split(",") if v.strip()]
    for v in names:
        if v not in allowed:
            raise click.BadParameter(f"unknown component {v!r}; choose from {', '.join(allowed)}")
    return tuple("dht" if v == "node_finder" else v for v in names)


GLOBAL_FLAGS = (
    ("--conf PATH", f"JSON config file (default {DEFAULT_CONFIG_PATH}; 'none' disables it)."),
    (
        "-v, --verbose COMPONENT",
        f"Debug-log components: {', '.join(COMPONENTS)}, node_finder, all (repeat or comma-list).",
    ),
)
_GLOBAL_WITH_VALUE = ("--conf", "-v", "--verbose")


def hoist_global_flags(args: list[str]) -> list[str]:
    """Move `--conf` and `-v/--verbose` found anywhere (before `--`) to the front.

    cobra's persistent flags are accepted before or after the subcommand; click's group options
    only before it, so the group sees them where it looks.
    """
    hoisted: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg in _GLOBAL_WITH_VALUE and i + 1 < len(args):
            hoisted += args[i : i + 2]
            i += 2
            continue
        if arg.startswith(("--conf=", "--verbose=")) or (arg.startswith("-v") and not arg.startswith("--")):
            hoisted.append(arg)
        else:
            rest.append(arg)
        i += 1
    return hoisted + rest


_GO_TRUE = ("1", "t", "true")
_GO_FALSE = ("0", "f", "false")


def parse_go_bool(flag: str, text: str) -> bool:
    """Go's strconv.ParseBool, as cobra parses `--flag=VALUE`; BadParameter names the flag."""
    if text.lower() in _GO_TRUE:
        return True
    if text.lower() in _GO_FALSE:
        return False
    raise click.BadParameter(f"{text!r} is not a boolean: use true or false (1/0, t/f)", param_hint=flag)


class GoBoolOption(click.Option):
    """A bool flag whose default may be true: `--flag`, `--flag=true|false|1|0|t|f` (never `--flag VALUE`)."""


class PrismCommand(click.Command):
    """A subcommand: Go-style bool flags, and the global flags listed in its help."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, self._go_bools(args))

    def _go_bools(self, args: list[str]) -> list[str]:
        plain = {o for p in self.params if isinstance(p, click.Option) and _is_plain_flag(p) for o in p.opts}
        valued = {o for p in self.params if isinstance(p, GoBoolOption) for o in p.opts}
        out: list[str] = []
        for i, arg in enumerate(args):
            if arg == "--":
                return out + args[i:]
            name, eq, value = arg.partition("=")
            if arg in valued:
                out.append(f"{arg}=true")  # so a bare flag never takes the next word as its value
            elif eq and name in plain:
                out = [a for a in out if a != name]  # the last occurrence wins, as in cobra
                if parse_go_bool(name, value):
                    out.append(name)
            else:
                out.append(arg)
        return out

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        with formatter.section("Global flags (before or after the command)"):
            formatter.write_dl(list(GLOBAL_FLAGS))


def _is_plain_flag(option: click.Option) -> bool:
    return option.is_flag and option.is_bool_flag and not option.secondary_opts


class PrismGroup(click.Group):
    """The root: global flags anywhere on the line; subcommands are PrismCommands, subgroups PrismGroups."""

    command_class = PrismCommand
    group_class = type

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if ctx.parent is None:  # only the root has the global flags
            args = hoist_global_flags(args)
        return super().parse_args(ctx, args)


@click.group(cls=PrismGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--conf",
    default=None,
    metavar="PATH",
    help=f"JSON config file (default {DEFAULT_CONFIG_PATH}; 'none' disables it).",
)
@click.option(
    "-v",
    "--verbose",
    multiple=True,
    callback=_verbose_choice,
    metavar="COMPONENT",
    help=f"Debug-log a component ({', '.join(COMPONENTS)}, node_finder, all). Repeat or comma-list.",
)
@click.pass_context
def cli(ctx: click.Context, conf: str | None, verbose: tuple[str, ...]) -> None:
    """prism: LBRY blob reflector, blob cache, peer server and DHT node.

    Global flags go before or after the command; `prism help COMMAND` shows a command's flags.
    """
    setup_logging(verbose)
    explicit = conf is not None
    path = conf if explicit else DEFAULT_CONFIG_PATH
    try:
        config = Config.load(path, explicit=explicit)
    except ConfigError as e:
        click.echo(f"Error: {e}", err=True)
        ctx.exit(1)
    ctx.obj = PrismContext(config, None if path == "none" else path)


def _dht_options(f: F) -> F:
    """The servers' DHT flags: --dht-port, --dht-seeds, --dht-announce, --dht-announce-rate,
    --allow-private-peers (read them with `_dht_announce_options`)."""
    options = [
        click.option(
            "--dht-port",
            type=click.IntRange(0, 65535),
            default=0,
            show_default=True,
            help="UDP port of a DHT node announcing the blobs held here (0: no DHT).",
        ),
        click.option(
            "--dht-seeds",
            default=None,
            metavar="HOST:PORT,...",
            help="DHT seed nodes (default LBRY's standard seeds).",
        ),
        click.option(
            "--dht-announce",
            type=click.Choice(["sd-head", "all"]),
            default="sd-head",
            show_default=True,
            help="Announce sd blobs and each stream's first content blob, or every blob.",
        ),
        click.option(
            "--dht-announce-rate",
            type=click.FloatRange(min=0.001),
            default=10.0,
            show_default=True,
            help="Announcements started per second, at most.",
        ),
        click.option(
            "--allow-private-peers",
            is_flag=True,
            help="Deal with DHT peers on loopback and private addresses.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _dht_announce_options(flags: dict[str, Any]) -> Any:
    """Take the `_dht_options` flags out of `flags`: a DhtAnnounceOptions, or None with --dht-port 0."""
    from prism.app.dht import DhtAnnounceOptions
    from prism.hostport import AddressError, parse_host_port_list

    port, seeds = flags.pop("dht_port"), flags.pop("dht_seeds")
    announce, rate = flags.pop("dht_announce"), flags.pop("dht_announce_rate")
    allow_private = flags.pop("allow_private_peers")
    if not port:
        return None
    try:
        seed_list = parse_host_port_list(seeds, what="seed") if seeds is not None else None
    except AddressError as e:
        raise click.BadParameter(str(e), param_hint="--dht-seeds") from None
    return DhtAnnounceOptions(
        port=port, seeds=seed_list, announce=announce, allow_private_peers=allow_private, rate=rate
    )


@cli.command("help")
@click.argument("command", required=False, metavar="[COMMAND]")
@click.pass_context
def help_cmd(ctx: click.Context, command: str | None) -> None:
    """Show the help of prism or of one command."""
    root = ctx.find_root()
    if command is None:
        click.echo(root.get_help())
        return
    cmd = cli.get_command(root, command)
    if cmd is None:
        raise click.UsageError(f"unknown command {command!r}; `prism help` lists them")
    click.echo(cmd.get_help(click.Context(cmd, info_name=command, parent=root)))


@cli.command()
def version() -> None:
    """Print name, version, git commit and build date."""
    for key, value in build_info().items():
        click.echo(f"{key}: {value}")


# --- peer protocol: peer, getstream ---------------------------------------------------------


@cli.command()
@click.option(
    "--port", type=click.IntRange(0, 65535), default=3333, show_default=True, help="TCP port (0: any)."
)
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option(
    "--store-path",
    type=click.Path(file_okay=False),
    default=None,
    metavar="DIR",
    help="Serve the blobs of this disk store (<DIR>/<hash[:2]>/<hash>) instead of S3.",
)
@click.option("--nodb", is_flag=True, help="Serve the S3 bucket without the MySQL-backed store.")
@click.option("--max-connections", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--idle-timeout", type=float, default=60.0, show_default=True, help="Seconds.")
@_dht_options
@click.pass_obj
def peer(
    obj: PrismContext,
    /,
    port: int,
    host: str,
    store_path: str | None,
    nodb: bool,
    max_connections: int,
    idle_timeout: float,
    **dht_flags: Any,
) -> None:
    """Run a standalone peer server over the config's S3 bucket (+ MySQL unless --nodb)."""
    import asyncio

    from prism.app.peer import peer_origin, run_peer_server
    from prism.app.s3origin import OriginConfigError
    from prism.app.supervisor import StartupError

    dht = _dht_announce_options(dht_flags)
    try:
        origin = peer_origin(obj.config, store_path, nodb)
        asyncio.run(
            run_peer_server(
                origin,
                host=host,
                port=port,
                max_connections=max_connections,
                idle_timeout=idle_timeout,
                dht=dht,
            )
        )
    except (OSError, StartupError, OriginConfigError) as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)


@cli.command()
@click.argument("target", nargs=-1, required=True, metavar="[ADDRESS:PORT] SDHASH")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=".",
    help="Output directory (default: here; created if missing).",
)
@click.option(
    "--blob-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Keep downloaded blobs here so an interrupted download resumes (default ~/.cache/prism/blobs).",
)
@click.option(
    "--blob-cache-size",
    default="2GB",
    show_default=True,
    metavar="SIZE",
    help="Bytes the blob directory keeps after a download, oldest blobs removed first (0: no limit).",
)
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds per peer operation.")
@click.option("--parallel", type=click.IntRange(1, 64), default=4, show_default=True, help="Blobs in flight.")
@click.option(
    "--peer", "peers", multiple=True, metavar="HOST:PORT", help="A peer to download from. Repeatable."
)
@click.option(
    "--dht-seeds",
    default=None,
    metavar="HOST:PORT,...",
    help="Find peers on the DHT through these seeds (default LBRY's; the DHT is used when no ADDRESS "
    "or --peer is given, or when this is).",
)
@click.option(
    "--allow-private-peers", is_flag=True, help="Accept DHT peers on loopback and private addresses."
)
def getstream(
    target: tuple[str, ...],
    out_dir: str,
    blob_dir: str | None,
    blob_cache_size: str,
    timeout: float,
    parallel: int,
    peers: tuple[str, ...],
    dht_seeds: str | None,
    allow_private_peers: bool,
) -> None:
    """Download a stream (from ADDRESS, --peer peers, or the peers the DHT knows), verify and decrypt it."""
    import asyncio

    from prism.app.cache_chain import DiskCacheSpecError, parse_size
    from prism.app.getstream import GetStreamError, PeerCount, default_blob_dir, download_progress, get_stream

    if len(target) > 2:
        raise click.UsageError("give [ADDRESS:PORT] SDHASH")
    address, sd_hash = (None, target[0]) if len(target) == 1 else target
    try:
        blob_cache_bytes = parse_size(blob_cache_size)
    except DiskCacheSpecError as e:
        raise click.BadParameter(str(e), param_hint="--blob-cache-size") from None
    sources = _peer_sources(address, peers, dht_seeds, allow_private_peers)
    count = PeerCount()
    progress = download_progress(peers=count)
    try:
        result = asyncio.run(
            get_stream(
                address,
                sd_hash,
                out_dir,
                blob_dir,
                peer_timeout=timeout,
                parallel=parallel,
                progress=progress.update,
                sources=sources,
                peer_count=count,
                blob_cache_bytes=blob_cache_bytes,
            )
        )
    except KeyboardInterrupt:
        progress.finish()
        click.echo(
            f"Error: interrupted; downloaded blobs are kept in {blob_dir or default_blob_dir()}, "
            "run the same command again to resume",
            err=True,
        )
        sys.exit(130)
    except (GetStreamError, OSError) as e:
        progress.finish()
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)
    progress.finish()
    click.echo(result.path)


def _peer_sources(address: str | None, peers: tuple[str, ...], dht_seeds: str | None, private: bool) -> Any:
    """getstream's PeerSources: the DHT when no ADDRESS or --peer is given, or --dht-seeds is."""
    from prism.app.getstream import PeerSources
    from prism.hostport import AddressError, parse_host_port_list

    try:
        return PeerSources(
            peers=parse_host_port_list(peers, what="--peer"),
            dht=dht_seeds is not None or (address is None and not peers),
            dht_seeds=parse_host_port_list(dht_seeds, what="seed") if dht_seeds is not None else None,
            allow_private_peers=private,
        )
    except AddressError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)


# --- the LBRY DHT: dht connect|bootstrap -----------------------------------------------------


@cli.command("dht")
@click.argument("mode", type=click.Choice(["connect", "bootstrap"]))
@click.option(
    "--nodeID", "node_id", default=None, metavar="HEX", help="Node id, 96 hex characters (default random)."
)
@click.option("--port", default=4567, show_default=True, type=click.IntRange(0, 65535), help="UDP port.")
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to bind the UDP port to.")
@click.option(
    "--rpcPort",
    "rpc_port",
    default=0,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="JSON-RPC port (0 = off).",
)
@click.option(
    "--seeds",
    multiple=True,
    metavar="HOST:PORT",
    help="Seed nodes (repeatable or comma-separated; default lbry-sdk's known DHT nodes).",
)
@click.option(
    "--allow-private-peers", is_flag=True, help="Deal with peers on loopback and private addresses."
)
@click.option(
    "--routing-table",
    "state_path",
    default=None,
    metavar="PATH",
    help="Where the routing table is saved on shutdown and loaded at start "
    "(default $XDG_CACHE_HOME/prism/dht-<port>.json).",
)
@click.option(
    "--peer-port",
    default=3333,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="TCP peer-protocol port given in announcements.",
)
def dht_command(
    mode: str,
    node_id: str | None,
    port: int,
    host: str,
    rpc_port: int,
    seeds: tuple[str, ...],
    allow_private_peers: bool,
    state_path: str | None,
    peer_port: int,
) -> None:
    """Run a DHT node: `connect` joins the network, `bootstrap` is a seed for others."""
    import asyncio
    from pathlib import Path

    from prism.app.dht import DhtOptions, run_dht
    from prism.app.supervisor import StartupError
    from prism.dht.persist import default_state_path
    from prism.hostport import AddressError, parse_host_port_list

    raw_id = None
    if node_id is not None:
        try:
            raw_id = bytes.fromhex(node_id)
        except ValueError:
            raw_id = b""
        if len(raw_id) != 48:
            raise click.BadParameter("must be 96 hex characters", param_hint="--nodeID")
    try:
        seed_list = parse_host_port_list(seeds, what="seed") if seeds else None
    except AddressError as e:
        raise click.BadParameter(str(e), param_hint="--seeds") from None
    opts = DhtOptions(
        mode=mode,
        state_path=Path(state_path) if state_path else default_state_path(port),
        node_id=raw_id,
        host=host,
        port=port,
        rpc_port=rpc_port,
        seeds=seed_list,
        allow_private_peers=allow_private_peers,
        peer_port=peer_port,
    )
    try:
        asyncio.run(run_dht(opts))
    except StartupError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)


# --- disk cache maintenance: check-integrity, populate-db ------------------------------------


@cli.command("check-integrity")
@click.option(
    "--store-path",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Disk store or cache directory to check.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Hashing threads (default: CPUs - 1, at least 1).",
)
@click.option(
    "--delete", is_flag=True, help="Delete corrupt blobs instead of moving them to DIR/quarantine/."
)
def check_integrity_cmd(store_path: str, threads: int | None, delete: bool) -> None:
    """Re-hash every blob; quarantine (or delete) corrupt ones. Exit status 1 if any was bad."""
    from prism.app.integrity import check_integrity, integrity_progress, list_blobs

    blobs = list_blobs(store_path)
    bar = integrity_progress(len(blobs))
    try:
        report = check_integrity(store_path, threads, delete, progress=bar.advance, blobs=blobs)
    finally:
        bar.finish()
    click.echo(report.summary())
    for h in report.corrupt_hashes:
        click.echo(f"corrupt: {h}")
    for h in report.unreadable_hashes:
        click.echo(f"unreadable: {h}")
    if report.failed:
        sys.exit(1)


@cli.command("populate-db")
@click.option(
    "--store-path",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Disk cache directory to index.",
)
@click.option(
    "--db",
    "dsn",
    default=None,
    metavar="DSN",
    help="MySQL DSN USER:PASSWORD@tcp(HOST:PORT)/DBNAME (default: local_db_conn from the config, "
    "else the SQLite index inside the store directory).",
)
@click.pass_obj
def populate_db_cmd(obj: PrismContext, store_path: str, dsn: str | None) -> None:
    """Index an existing disk cache into the localdb index (real sizes; safe to run twice)."""
    import asyncio

    from prism.app.populate_db import populate_db
    from prism.config import ConfigError
    from prism.db.localdb import LocalDBError

    try:
        report, where = asyncio.run(
            populate_db(store_path, dsn if dsn is not None else obj.config.local_db_conn)
        )
    except (ConfigError, LocalDBError) as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)
    click.echo(
        f"indexed {report.scanned} blobs into {where}: {report.added} added, "
        f"{report.updated} updated, {report.unchanged} unchanged"
    )


# --- reflector uploads: send, sendblob, test -------------------------------------------------


@cli.command()
@click.argument("address", metavar="ADDRESS:PORT")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option(
    "--sd-cache", default=None, metavar="DIR", help="Keep the sd blob here so an interrupted send resumes."
)
@click.option(
    "--protocol-version",
    type=click.IntRange(0, 1),
    default=1,
    show_default=True,
    help="Reflector handshake version (0 sends content blobs first, sd blob last).",
)
@click.option("--timeout", type=float, default=180.0, show_default=True, help="Seconds per read or write.")
@click.option(
    "--spool-mb",
    type=click.IntRange(min=0),
    default=256,
    show_default=True,
    metavar="MB",
    help="Keep up to this many MiB of the encoding pass's blobs in memory for the upload; blobs past "
    "it are encrypted again from the file (0: all of them; uses less memory, more CPU).",
)
def send(
    address: str, path: str, sd_cache: str | None, protocol_version: int, timeout: float, spool_mb: int
) -> None:
    """Stream-encode a file and upload it to a reflector."""
    import asyncio
    import json

    from prism.app.send import SendError, send_file, upload_progress
    from prism.reflector.client import ReflectorError

    progress = upload_progress(0)
    try:
        if progress.tty:
            progress.total = _count_blobs(path) + 1  # content blobs and the sd blob
        stream, source_hash, _result = asyncio.run(
            send_file(
                address,
                path,
                sd_cache=sd_cache,
                version=protocol_version,
                io_timeout=timeout,
                progress=progress.advance,
                spool_mb=spool_mb,
            )
        )
    except KeyboardInterrupt:
        progress.finish()
        click.echo(
            "Error: interrupted" + (f"; the sd blob is saved in {sd_cache}" if sd_cache else ""), err=True
        )
        sys.exit(1)
    except (SendError, ReflectorError, OSError, ValueError) as e:
        progress.finish()
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)
    progress.finish()
    click.echo(json.dumps({"sd_hash": stream.sd_hash, "source_hash": source_hash}, indent=2))


def _count_blobs(path: str) -> int:
    import os

    from prism.blob import MAX_CHUNK_SIZE

    try:
        size = os.path.getsize(path)
    except OSError:
        return 0
    return -(-size // MAX_CHUNK_SIZE)


@cli.command()
@click.argument("address", metavar="ADDRESS:PORT")
@click.argument("path", required=False, type=click.Path(dir_okay=False, exists=True))
@click.option("--protocol-version", type=click.IntRange(0, 1), default=1, show_default=True)
@click.option("--timeout", type=float, default=180.0, show_default=True, help="Seconds per read or write.")
def sendblob(address: str, path: str | None, protocol_version: int, timeout: float) -> None:
    """Upload one random 1024-byte blob, or the whole stream of PATH (sd blob first)."""
    import asyncio
    import json

    from prism.app.send import SendError, send_blob_or_stream
    from prism.reflector.client import ReflectorError

    try:
        out = asyncio.run(send_blob_or_stream(address, path, version=protocol_version, io_timeout=timeout))
    except (SendError, ReflectorError, OSError, ValueError) as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)
    click.echo(json.dumps(out, indent=2))


@cli.command("test")
@click.option(
    "--receiver-port", type=int, default=5566, show_default=True, help="Reflector receiver TCP port."
)
@click.option("--tcp-peer-port", type=int, default=5567, show_default=True, help="Peer protocol TCP port.")
@click.option("--timeout", type=float, default=180.0, show_default=True, help="Receiver read timeout (s).")
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@_dht_options
def test_cmd(receiver_port: int, tcp_peer_port: int, timeout: float, host: str, **dht_flags: Any) -> None:
    """Run a receiver and a peer server on one memory store; list it on SIGINT/SIGTERM."""
    import asyncio

    from prism.app.supervisor import StartupError
    from prism.app.testserver import run_test_servers

    def ready(receiver: int, peer: int) -> None:
        click.echo(f"prism test: reflector receiver on port {receiver}, peer server on port {peer}", err=True)

    try:
        asyncio.run(
            run_test_servers(
                receiver_port=receiver_port,
                peer_port=tcp_peer_port,
                host=host,
                read_timeout=timeout,
                echo=click.echo,
                ready=ready,
                dht=_dht_announce_options(dht_flags),
            )
        )
    except StartupError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)


# --- S3 origin: upload ----------------------------------------------------------------------


@cli.command()
@click.argument("path", metavar="PATH")
@click.option("--workers", type=click.IntRange(1, 256), default=1, show_default=True, help="Blobs in flight.")
@click.option(
    "--skipExistsCheck",
    "--skip-exists-check",
    "skip_exists_check",
    is_flag=True,
    help="Do not ask the database which blobs are stored already.",
)
@click.option(
    "--deleteBlobsAfterUpload",
    "--delete-blobs-after-upload",
    "delete_after_upload",
    is_flag=True,
    help="Delete each file once it is uploaded.",
)
@click.pass_obj
def upload(
    obj: PrismContext, path: str, workers: int, skip_exists_check: bool, delete_after_upload: bool
) -> None:
    """Upload a blob file, or a directory of blob files named by hash, to S3 + MySQL."""
    import asyncio

    from prism.app.s3origin import OriginConfigError
    from prism.app.upload import UploadPathError, run_upload
    from prism.db.errors import DatabaseError
    from prism.store.s3 import S3Unavailable

    try:
        stats, interrupted = asyncio.run(
            run_upload(
                obj.config,
                path,
                workers=workers,
                skip_exists_check=skip_exists_check,
                delete_after_upload=delete_after_upload,
            )
        )
    except (OriginConfigError, UploadPathError, S3Unavailable, DatabaseError, OSError) as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)
    click.echo(stats.summary())
    click.echo(stats.rate())
    if interrupted:
        click.echo("Error: interrupted; run the same command again to upload the rest", err=True)
    if interrupted or stats.errors:
        sys.exit(1)


# --- claims: decode, resolve, publish (claims.md) ---------------------------------------------


@cli.command("decode")
@click.argument("value", metavar="HEX")
@click.option("--json", "as_json", is_flag=True, help="Print the whole claim as JSON (prism addition).")
def decode_cmd(value: str, as_json: bool) -> None:
    """Decode a hex claim value and print it as reflector.go does."""
    from prism.app.claims import decode_json, decode_text
    from prism.claim.decode import ClaimError, decode_claim_hex

    try:
        decoded = decode_claim_hex(value)
    except ClaimError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)
    click.echo(decode_json(decoded) if as_json else decode_text(decoded))


@cli.command("resolve")
@click.argument("address", metavar="ADDRESS:PORT")
@click.argument("url", metavar="URL")
def resolve_cmd(address: str, url: str) -> None:
    """Resolve a LBRY URL at a wallet server and print its claim."""
    import asyncio

    from prism.app.claims import resolve_claim, resolve_text
    from prism.hostport import AddressError
    from prism.hub.protocol import HubError
    from prism.hub.url import UrlError

    try:
        decoded = asyncio.run(resolve_claim(address, url))
    except (UrlError, AddressError, HubError) as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)
    click.echo(resolve_text(decoded))


@cli.command("publish")
@click.argument("path", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--name", required=True, help="The claim name (required).")
@click.option("--title", default="", help="Claim title.")
@click.option("--description", default="", help="Claim description.")
@click.option("--author", default="", help="Stream author.")
@click.option(
    "--tags", multiple=True, help="Tags (repeatable or comma-separated; reflector.go ignores them)."
)
@click.option("--release-time", type=int, default=0, show_default=True, help="Unix time of release.")
@click.option(
    "--reflector", default="reflector.lbry.com:5566", show_default=True, help="Where the stream is reflected."
)
@click.option(
    "--lbrycrd", "lbrycrd_url", default="", help="http://user:password@host:port (default: lbrycrd.conf)."
)
@click.option(
    "--lbrycrd-conf", default="", help="lbrycrd.conf path (default ~/.lbrycrd/, REGTEST=true: regtest)."
)
def publish_cmd(
    path: str,
    name: str,
    title: str,
    description: str,
    author: str,
    tags: tuple[str, ...],
    release_time: int,
    reflector: str,
    lbrycrd_url: str,
    lbrycrd_conf: str,
) -> None:
    """Claim FILE's stream on chain through lbrycrd, after reflecting it."""
    import asyncio

    from prism.app.lbrycrd import Lbrycrd, LbrycrdError, conf_path, url_from_conf
    from prism.app.publish import PublishError, PublishRequest, publish, publish_output
    from prism.app.send import SendError
    from prism.reflector.client import ReflectorError

    request = PublishRequest(
        path,
        name,
        title=title,
        description=description,
        author=author,
        tags=[t.strip() for tag in tags for t in tag.split(",") if t.strip()],
        release_time=release_time,
        reflector=reflector,
    )
    try:
        client = Lbrycrd(lbrycrd_url or url_from_conf(lbrycrd_conf or conf_path()))
        published = asyncio.run(publish(request, client, echo=lambda s: click.echo(s, err=True)))
    except (PublishError, LbrycrdError, SendError, ReflectorError, OSError) as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)
    click.echo(publish_output(published))


# --- prism reflector: blob cache and reflector server ----------------------------------------


def _go_bool(name: str, default: bool, help_text: str) -> Callable[[F], F]:
    """A bool flag that may default to true: `--name`, `--name=true` or `--name=false`."""
    return click.option(
        name,
        cls=GoBoolOption,
        type=click.BOOL,
        default=default,
        is_flag=False,
        flag_value=True,
        show_default=True,
        help=help_text,
    )


@cli.command("reflector")
@click.option("--tcp-peer-port", type=int, default=5567, show_default=True, help="Peer protocol (TCP) port.")
@click.option("--http3-peer-port", type=int, default=5568, show_default=True, help="HTTP/3 (UDP) port.")
@click.option("--http-peer-port", type=int, default=5569, show_default=True, help="HTTP port.")
@click.option("--receiver-port", type=int, default=5566, show_default=True, help="Reflector upload port.")
@click.option("--metrics-port", type=int, default=2112, show_default=True, help="Prometheus /metrics port.")
@_go_bool("--disable-uploads", False, "Do not start the reflector receiver.")
@_go_bool("--disable-blocklist", False, "Do not run the blocklist updater or apply it to uploads.")
@_go_bool("--use-db", True, "Wrap the origin in the DB-backed store using db_conn from the config.")
@click.option("--upstream-reflector", default="", help="host:port of another reflector to pull blobs from.")
@click.option("--upstream-protocol", default="http", show_default=True, help="tcp, http or http3.")
@click.option("--upstream-edge-token", default="", help="Edge token for protected content.")
@click.option(
    "--request-queue-size",
    type=int,
    default=200,
    show_default=True,
    help="HTTP and HTTP/3 GETs served at once.",
)
@click.option("--origin-endpoint", default="", help="HTTP(S) origin base URL (URL = endpoint + hash).")
@click.option(
    "--origin-endpoint-fallback", default="", help="Second origin base URL, tried when the first fails."
)
@click.option(
    "--disk-cache",
    default="100GB:/tmp/downloaded_blobs:localdb",
    show_default=True,
    help="SIZE:PATH:MANAGER.",
)
@click.option("--optional-disk-cache", default="", help="A second disk cache in front of the first.")
@click.option("--mem-cache", type=int, default=0, show_default=True, help="In-memory LRU cache of N blobs.")
@click.option("--store-path", default="", help="Durable disk origin that never evicts (prism addition).")
@click.option("--http3-cert", default="", help="PEM certificate for HTTP/3 (default: self-signed ECDSA).")
@click.option("--http3-key", default="", help="PEM private key for --http3-cert.")
@click.option(
    "--http3-max-datagram-size",
    type=click.IntRange(1200, 65000),
    default=1200,
    show_default=True,
    help="QUIC datagram size; raise it only on links that carry it (loopback, LAN).",
)
@click.option(
    "--host",
    default="0.0.0.0",
    show_default=True,
    help="Address every server binds to (:: listens on IPv6 and IPv4).",
)
@click.option(
    "--protected-list-url",
    default=None,
    metavar="URL",
    help="Protected-content list URL (default: protected_list_url of the config, else odysee's); '' = off.",
)
@click.option(
    "--shutdown-grace", type=float, default=5.0, show_default=True, help="Seconds for transfers at exit."
)
@_dht_options
@click.option("--blocklist-url", default=DEFAULT_LIST_URL, show_default=True, help="Blocked-outpoints list.")
@click.option(
    "--blocklist-hubs",
    default=",".join(DEFAULT_HUBS),
    show_default=True,
    help="Wallet servers (host:port, comma-separated) that resolve blocked outpoints.",
)
@click.option(
    "--blocklist-interval",
    type=click.FloatRange(min=1.0),
    default=DEFAULT_INTERVAL,
    show_default=True,
    help="Seconds between blocklist updates.",
)
@click.pass_obj
def reflector_cmd(obj: PrismContext, /, **flags: object) -> None:
    """Run a reflector / blob cache: receiver, peer, HTTP/3, HTTP and metrics servers."""
    import asyncio

    from prism.app.reflector import ReflectorConfigError, ReflectorOptions, run_reflector
    from prism.app.supervisor import StartupError

    dht = _dht_announce_options(flags)
    opts = ReflectorOptions(**flags, dht=dht)  # type: ignore[arg-type]  # click typed each flag as its option says
    try:
        asyncio.run(run_reflector(opts, obj.config))
    except (ReflectorConfigError, StartupError) as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)


# --- cluster: start, cluster ----------------------------------------------------------------


@cli.command("cluster")
@click.argument("mode", type=click.Choice(["start", "join"]))
@click.option(
    "--cluster-port",
    type=click.IntRange(1, 64535),
    default=17946,
    show_default=True,
    help="start: this port; join: a random port just above it, joining 127.0.0.1 on it.",
)
@click.option("--host", default="0.0.0.0", show_default=True, help="Address the serf agent binds to.")
def cluster_cmd(mode: str, cluster_port: int, host: str) -> None:
    """Membership test tool: print each change of a serf cluster as `n of total` and its members."""
    import asyncio

    from prism.app.cluster import run_cluster_tool
    from prism.app.supervisor import StartupError

    try:
        asyncio.run(run_cluster_tool(mode, cluster_port, host))
    except StartupError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)


def _port(flag: str, default: int, help_text: str) -> Callable[[F], F]:
    return click.option(
        flag, type=click.IntRange(0, 65535), default=default, show_default=True, help=help_text
    )


@cli.command("start")
@click.argument("seed", metavar="new|SEED")
@_port("--cluster-port", 17946, "Cluster (serf gossip) port, TCP and UDP.")
@_port("--peer-port", 3333, "Peer protocol (TCP) port (0: any).")
@_port("--reflector-port", 5566, "Reflector upload port (0: any).")
@_port("--dht-port", 4444, "DHT UDP port (0: any).")
@click.option("--dht-seeds", default=None, metavar="HOST:PORT,...", help="DHT seeds (default LBRY's).")
@click.option("--hash-range", default=None, metavar="START-END", help="Announce this range (short hex).")
@click.option("--store-path", default="", help="Durable disk origin instead of S3 (prism addition).")
@_port("--http-peer-port", 5569, "HTTP blob server port (0: any; prism addition).")
@_port("--http3-peer-port", 5568, "HTTP/3 blob server UDP port (0: any; prism addition).")
@_port("--metrics-port", 2112, "Prometheus /metrics port (0: any; prism addition).")
@click.option("--host", default="0.0.0.0", show_default=True, help="Address every server and serf bind to.")
@click.option(
    "--dht-announce",
    type=click.Choice(["sd-head", "all"]),
    default="all",
    show_default=True,
    help="Announce every stored blob of this node's slice, or sd blobs and stream heads.",
)
@click.option("--dht-announce-rate", type=click.FloatRange(min=0.001), default=10.0, show_default=True)
@click.option("--allow-private-peers", is_flag=True, help="Deal with DHT peers on private addresses.")
@click.option(
    "--min-members", type=click.IntRange(1), default=1, show_default=True, help="Announce nothing below this."
)
@click.option(
    "--serf-rpc", default=None, metavar="HOST:PORT", help="Use this serf agent instead of starting one."
)
@click.pass_obj
def start_cmd(obj: PrismContext, /, seed: str, **flags: Any) -> None:
    """Run a full node: reflector, peer, DHT and cluster membership; `new` starts a cluster."""
    import asyncio

    from prism.app.reflector import ReflectorConfigError
    from prism.app.start import StartOptions, run_start
    from prism.app.supervisor import StartupError
    from prism.cluster.slicing import HashRangeError, parse_hash_range
    from prism.hostport import AddressError, parse_host_port, parse_host_port_list

    try:
        if seed != "new":
            parse_host_port(seed, what="SEED")
        if flags["dht_seeds"] is not None:
            flags["dht_seeds"] = parse_host_port_list(flags["dht_seeds"], what="--dht-seeds seed")
        if flags["serf_rpc"] is not None:
            flags["serf_rpc"] = parse_host_port(flags["serf_rpc"], what="--serf-rpc")
        if flags["hash_range"] is not None:
            flags["hash_range"] = parse_hash_range(flags["hash_range"])
        opts = StartOptions(seed=seed, **flags)
        asyncio.run(run_start(opts, obj.config))
    except (AddressError, HashRangeError, ReflectorConfigError, StartupError) as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="prism")


if __name__ == "__main__":  # pragma: no cover
    main()
