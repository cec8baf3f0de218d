"""The command line as cobra takes it: global flags anywhere, Go-style bools, comma lists, `prism help`."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from prism.cli import GoBoolOption, PrismCommand, cli, hoist_global_flags
from prism.logs import RepeatFilter

COMMANDS = sorted(name for name in cli.commands if name != "help")


def run(*args: str) -> click.testing.Result:
    return CliRunner().invoke(cli, list(args), prog_name="prism")


@pytest.mark.parametrize("command", COMMANDS)
def test_conf_after_the_subcommand_is_the_global_flag(command: str, tmp_path) -> None:
    r = run(command, f"--conf={tmp_path}/missing.json")
    assert r.exit_code == 1
    assert "config file not found" in r.output


@pytest.mark.parametrize("command", COMMANDS)
def test_verbose_after_the_subcommand_is_the_global_flag(command: str) -> None:
    r = run(command, "-v", "nosuch")
    assert r.exit_code == 2
    assert "unknown component 'nosuch'" in r.output


@pytest.mark.parametrize(
    "args",
    [
        ["-v", "dht,node_finder", "version"],
        ["version", "-v", "dht,node_finder"],
        ["-v", "dht", "-v", "http", "--conf=none", "version"],
        ["version", "--verbose=all", "--conf", "none"],
        ["-vhttp", "version", "-vpeer,reflector"],
    ],
)
def test_verbose_takes_comma_lists_and_repeats_anywhere(args: list[str]) -> None:
    r = run(*args)
    assert r.exit_code == 0, r.output
    assert r.output.startswith("Name: ")


def test_hoisting_stops_at_double_dash() -> None:
    assert hoist_global_flags(["send", "-v", "http", "x", "--", "-v", "y"]) == [
        "-v",
        "http",
        "send",
        "x",
        "--",
        "-v",
        "y",
    ]


def test_help_and_help_command() -> None:
    r = run("help")
    assert r.exit_code == 0 and "Commands:" in r.output and "reflector" in r.output
    r = run("help", "reflector")
    assert r.exit_code == 0
    assert "Usage: prism reflector" in r.output and "--upstream-reflector" in r.output
    assert "Global flags" in r.output and "--conf PATH" in r.output
    r = run("help", "nosuch")
    assert r.exit_code == 2 and "unknown command 'nosuch'" in r.output


def _bool_command() -> PrismCommand:
    seen: dict[str, object] = {}

    def callback(**kw: object) -> None:
        seen.update(kw)

    cmd = PrismCommand(
        "x",
        callback=callback,
        params=[
            click.Option(["--plain"], is_flag=True),
            GoBoolOption(["--on"], type=click.BOOL, default=True, is_flag=False, flag_value=True),
            click.Argument(["rest"], nargs=-1),
        ],
    )
    cmd.seen = seen  # type: ignore[attr-defined]
    return cmd


@pytest.mark.parametrize(
    ("args", "plain", "on", "rest"),
    [
        ([], False, True, ()),
        (["--plain"], True, True, ()),
        (["--plain=true"], True, True, ()),
        (["--plain=1"], True, True, ()),
        (["--plain=t"], True, True, ()),
        (["--plain=false"], False, True, ()),
        (["--plain", "--plain=0"], False, True, ()),
        (["--plain=f", "--plain"], True, True, ()),
        (["--on=false"], False, False, ()),
        (["--on=0", "--on"], False, True, ()),
        (["--on=f"], False, False, ()),
        (["--on", "word"], False, True, ("word",)),  # a bare bool never takes the next word
        (["--plain", "word"], True, True, ("word",)),
    ],
)
def test_bool_flags_as_cobra_takes_them(
    args: list[str], plain: bool, on: bool, rest: tuple[str, ...]
) -> None:
    cmd = _bool_command()
    r = CliRunner().invoke(cmd, args)
    assert r.exit_code == 0, r.output
    assert cmd.seen == {"plain": plain, "on": on, "rest": rest}  # type: ignore[attr-defined]


@pytest.mark.parametrize("args", [["--plain=maybe"], ["--on=maybe"]])
def test_a_bool_flag_with_a_bad_value_names_the_flag(args: list[str]) -> None:
    r = CliRunner().invoke(_bool_command(), args)
    assert r.exit_code == 2
    assert args[0].split("=")[0] in r.output and "maybe" in r.output


def test_every_bool_flag_of_every_command_takes_a_value() -> None:
    for name, command in cli.commands.items():
        for param in command.params:
            if isinstance(param, click.Option) and param.is_flag and param.is_bool_flag:
                assert not param.secondary_opts, (name, param.opts)
        assert isinstance(command, PrismCommand), name


def test_repeat_filter_logs_once_per_window_with_the_count() -> None:
    f = RepeatFilter(window=60.0)
    assert f.admit("down", 0.0) == 0
    assert f.admit("down", 1.0) is None
    assert f.admit("other", 2.0) == 0
    assert f.admit("down", 59.0) is None
    assert f.admit("down", 61.0) == 2
    assert f.admit("down", 62.0) is None


def test_repeat_filter_is_bounded() -> None:
    f = RepeatFilter(window=60.0, max_messages=2)
    for i, m in enumerate(("a", "b", "c")):
        assert f.admit(m, float(i)) == 0
    assert f.admit("a", 3.0) == 0  # forgotten, so logged again


def test_library_chatter_is_below_info() -> None:
    import logging

    from prism.logs import setup_logging

    setup_logging(())
    assert not logging.getLogger("quic").isEnabledFor(logging.INFO)
    assert not logging.getLogger("http3").isEnabledFor(logging.INFO)
    assert logging.getLogger("prism.http").isEnabledFor(logging.INFO)
    setup_logging(("http",))
    assert logging.getLogger("prism.http.access").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("prism.peer.access").isEnabledFor(logging.DEBUG)
    setup_logging(())


def test_send_spool_default_is_the_library_default() -> None:
    from prism.app.send import DEFAULT_SPOOL_MB
    from prism.cli import send

    assert next(p for p in send.params if p.name == "spool_mb").default == DEFAULT_SPOOL_MB
