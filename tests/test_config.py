import json
import subprocess

import pytest

from prism.config import Config, ConfigError, parse_mysql_dsn
from tests.conftest import prism_cmd, prism_env


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        (
            "reflector:secret@tcp(db.example:3307)/reflector",
            ("reflector", "secret", "db.example", 3307, "reflector", ()),
        ),
        ("root:@tcp(127.0.0.1)/x?parseTime=1", ("root", "", "127.0.0.1", 3306, "x", (("parseTime", "1"),))),
    ],
)
def test_dsn_parsing(dsn: str, expected: tuple[object, ...]) -> None:
    p = parse_mysql_dsn(dsn)
    assert (p.user, p.password, p.host, p.port, p.database, p.options) == expected


def test_dsn_ipv6_password_with_at_and_unix_socket() -> None:
    p = parse_mysql_dsn("u:p@ss@tcp([::1]:3306)/d")
    assert (p.password, p.host) == ("p@ss", "::1")
    assert parse_mysql_dsn("u:p@unix(/run/mysqld/mysqld.sock)/d").unix_socket == "/run/mysqld/mysqld.sock"


@pytest.mark.parametrize(
    "dsn", ["", "nouser", "u:p@tcp(h:99999)/d", "u:p@tcp(h:1)/", "u:p@udp(h)/d", ":p@tcp(h)/d"]
)
def test_bad_dsn(dsn: str) -> None:
    with pytest.raises(ConfigError):
        parse_mysql_dsn(dsn)


def test_config_types(tmp_path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"db_conn": "u:p@tcp(h:1)/d", "bucket_name": "b", "extra": 1}))
    c = Config.load(str(path), explicit=True)
    assert c.db_conn == "u:p@tcp(h:1)/d" and c.bucket_name == "b" and c.unknown_keys == ("extra",)
    path.write_text(json.dumps({"aws_id": 5}))
    with pytest.raises(ConfigError, match="'aws_id'"):
        Config.load(str(path), explicit=True)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="invalid JSON"):
        Config.load(str(path), explicit=True)
    assert Config.load(str(tmp_path / "absent.json"), explicit=False) == Config()
    assert Config.load("none", explicit=True) == Config()
    with pytest.raises(ConfigError, match="not found"):
        Config.load(str(tmp_path / "absent.json"), explicit=True)


def run_prism(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        prism_cmd(*args), capture_output=True, text=True, env=prism_env(), cwd=cwd, timeout=60
    )


def test_cli_help_and_version(tmp_path) -> None:
    r = run_prism("--help", cwd=tmp_path)
    assert r.returncode == 0 and "Usage: prism" in r.stdout
    r = run_prism("version", cwd=tmp_path)
    assert r.returncode == 0
    keys = [line.split(":")[0] for line in r.stdout.splitlines()]
    assert keys == ["Name", "Version", "branch", "commit", "commit long", "build date"]


def test_cli_missing_conf_is_clear_error(tmp_path) -> None:
    r = run_prism("--conf", "missing.json", "version", cwd=tmp_path)
    assert r.returncode == 1
    assert "config file not found: missing.json" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_bad_verbose_component(tmp_path) -> None:
    r = run_prism("-v", "nosuch", "version", cwd=tmp_path)
    assert r.returncode == 2 and "unknown component" in r.stderr
