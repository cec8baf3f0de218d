"""The `prism` command tree: parse flags, build objects from prism.app, start them."""

from __future__ import annotations

import sys

import click

from prism.config import DEFAULT_CONFIG_PATH, Config, ConfigError
from prism.logs import COMPONENTS, setup_logging
from prism.version import build_info


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


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="prism")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
