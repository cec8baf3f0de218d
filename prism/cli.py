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
    if interrupted:
        click.echo("Error: interrupted; run the same command again to upload the rest", err=True)
    if interrupted or stats.errors:
        sys.exit(1)


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
