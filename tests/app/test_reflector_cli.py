"""`prism reflector` refuses inconsistent flags at start: exit 1 and one sentence naming the flag."""

from __future__ import annotations

import socket
import subprocess

import pytest

from tests.conftest import prism_cmd, prism_env


def run_reflector(*flags: str, conf: str = "none") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        prism_cmd("--conf", conf, "reflector", *flags),
        capture_output=True,
        text=True,
        timeout=60,
        env=prism_env(),
    )


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--upstream-protocol", "ftp", "--upstream-reflector", "x:1"], "--upstream-protocol"),
        (["--use-db=false", "--disable-uploads", "--disk-cache", ""], "valid upstream source"),
        (["--store-path", "/tmp/x", "--disk-cache", ""], "--use-db needs db_conn"),
        (["--use-db=false", "--upstream-reflector", "127.0.0.1:1", "--disk-cache", ""], "--disable-uploads"),
        (
            [
                "--use-db=false",
                "--store-path",
                "/tmp/x",
                "--upstream-reflector",
                "127.0.0.1:1",
                "--disk-cache",
                "",
            ],
            "only one origin",
        ),
        (
            ["--use-db=false", "--origin-endpoint-fallback", "http://x/", "--disable-uploads"],
            "--origin-endpoint",
        ),
        (["--use-db=false", "--store-path", "/tmp/x", "--http3-cert", "/nonexistent"], "--http3-cert"),
        (
            [
                "--use-db=false",
                "--store-path",
                "/tmp/x",
                "--http-peer-port",
                "7000",
                "--tcp-peer-port",
                "7000",
            ],
            "both use port 7000",
        ),
    ],
)
def test_inconsistent_flags_exit_1_with_one_clear_sentence(flags, needle):
    r = run_reflector(*flags)
    assert r.returncode == 1, r.stderr
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.count("Error:") == 1


@pytest.mark.parametrize("spec", ["100GB:/tmp/x", "abc:/tmp/x:lru", "1GB:relative:lru", "1GB:/tmp/x:nope"])
def test_malformed_disk_cache_exits_1_naming_the_flag(spec, tmp_path):
    r = run_reflector("--use-db=false", "--store-path", str(tmp_path), "--disk-cache", spec)
    assert r.returncode == 1, r.stderr
    assert "--disk-cache" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("flag", "kind"), [("--http-peer-port", socket.SOCK_STREAM), ("--http3-peer-port", socket.SOCK_DGRAM)]
)
def test_port_in_use_exits_1_naming_the_flag(tmp_path, flag, kind):
    taken = socket.socket(socket.AF_INET, kind)
    taken.bind(("127.0.0.1", 0))
    if kind == socket.SOCK_STREAM:
        taken.listen()
    ports = {}
    for f in ("--tcp-peer-port", "--http-peer-port", "--metrics-port"):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        ports[f] = s
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    ports["--http3-peer-port"] = u
    numbers = {f: s.getsockname()[1] for f, s in ports.items()}
    for s in ports.values():
        s.close()
    numbers[flag] = taken.getsockname()[1]
    args = ["--use-db=false", "--disable-uploads", "--host", "127.0.0.1"]
    args += ["--store-path", str(tmp_path / "origin"), "--disk-cache", ""]
    for f, n in numbers.items():
        args += [f, str(n)]
    try:
        r = run_reflector(*args)
    finally:
        taken.close()
    assert r.returncode == 1, r.stderr
    assert flag in r.stderr and "already in use" in r.stderr
    assert "Traceback" not in r.stderr


def test_use_db_with_an_unreachable_database_exits_1(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    conf = tmp_path / "config.json"
    conf.write_text(f'{{"db_conn": "u:p@tcp(127.0.0.1:{dead})/db", "protected_list_url": ""}}')
    r = run_reflector(
        "--store-path", str(tmp_path / "o"), "--disk-cache", "", "--host", "127.0.0.1",
        "--receiver-port", "0", "--tcp-peer-port", "0", "--http-peer-port", "0", "--metrics-port", "0",
        "--http3-peer-port", "0", conf=str(conf),
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert "db_conn" in r.stderr
    assert "Traceback" not in r.stderr
