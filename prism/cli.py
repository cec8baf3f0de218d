"""The `prism` command tree: parse flags, build objects from prism.app, start them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

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
    allowed = (*COMPONENTS, "all", "node_finder")
    for v in value:
        if v not in allowed:
            raise click.BadParameter(f"unknown component {v!r}; choose from {', '.join(allowed)}")
    return tuple("dht" if v == "node_finder" else v for v in value)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    help=f"Debug-log a component ({', '.join(COMPONENTS)}, all). Repeatable.",
)
@click.pass_context
def cli(ctx: click.Context, conf: str | None, verbose: tuple[str, ...]) -> None:
    """prism: LBRY blob reflector, blob cache, peer server and DHT node."""
    setup_logging(verbose)
    explicit = conf is not None
    path = conf if explicit else DEFAULT_CONFIG_PATH
    try:
        config = Config.load(path, explicit=explicit)
    except ConfigError as e:
        click.echo(f"Error: {e}", err=True)
        ctx.exit(1)
    ctx.obj = PrismContext(config, None if path == "none" else path)


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
@click.pass_obj
def peer(
    obj: PrismContext,
    port: int,
    host: str,
    store_path: str | None,
    nodb: bool,
    max_connections: int,
    idle_timeout: float,
) -> None:
    """Run a standalone peer server over the config's S3 bucket (+ MySQL unless --nodb)."""
    import asyncio

    from prism.app.peer import peer_origin, run_peer_server
    from prism.app.s3origin import OriginConfigError
    from prism.app.supervisor import StartupError

    try:
        origin = peer_origin(obj.config, store_path, nodb)
        asyncio.run(
            run_peer_server(
                origin, host=host, port=port, max_connections=max_connections, idle_timeout=idle_timeout
            )
        )
    except (OSError, StartupError, OriginConfigError) as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)


@cli.command()
@click.argument("address", metavar="ADDRESS:PORT")
@click.argument("sd_hash", metavar="SDHASH")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=".",
    help="Output directory (default: here).",
)
@click.option(
    "--blob-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Keep downloaded blobs here so an interrupted download resumes (default ~/.cache/prism/blobs).",
)
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds per peer operation.")
@click.option("--parallel", type=click.IntRange(1, 64), default=4, show_default=True, help="Blobs in flight.")
def getstream(
    address: str, sd_hash: str, out_dir: str, blob_dir: str | None, timeout: float, parallel: int
) -> None:
    """Download a stream from a peer, verify and decrypt it into a file."""
    import asyncio

    from prism.app.getstream import GetStreamError, default_blob_dir, download_progress, get_stream

    progress = download_progress()
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
def send(address: str, path: str, sd_cache: str | None, protocol_version: int, timeout: float) -> None:
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
def test_cmd(receiver_port: int, tcp_peer_port: int, timeout: float, host: str) -> None:
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


# --- prism reflector: blob cache and reflector server ----------------------------------------


def _go_bool(name: str, default: bool, help_text: str) -> Callable[[F], F]:
    """A Go-style bool flag: `--name`, `--name=true` or `--name=false`."""
    return click.option(
        name,
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
@_go_bool("--disable-blocklist", False, "Do not apply the blocklist to uploads.")
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
@click.option("--host", default="0.0.0.0", show_default=True, help="Address every server binds to.")
@click.option(
    "--shutdown-grace", type=float, default=5.0, show_default=True, help="Seconds for transfers at exit."
)
@click.pass_obj
def reflector_cmd(obj: PrismContext, /, **flags: object) -> None:
    """Run a reflector / blob cache: receiver, peer, HTTP/3, HTTP and metrics servers."""
    import asyncio

    from prism.app.reflector import ReflectorConfigError, ReflectorOptions, run_reflector
    from prism.app.supervisor import StartupError

    opts = ReflectorOptions(**flags)  # type: ignore[arg-type]  # click typed each flag as its option says
    try:
        asyncio.run(run_reflector(opts, obj.config))
    except (ReflectorConfigError, StartupError) as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="prism")


if __name__ == "__main__":  # pragma: no cover
    main()
