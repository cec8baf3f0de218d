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


def test_port_in_use_exits_1_naming_the_flag(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    ports = []
    for _ in range(4):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        ports.append(s)
    p = [s.getsockname()[1] for s in ports]
    for s in ports:
        s.close()
    try:
        r = run_reflector(
            "--use-db=false",
            "--disable-uploads",
            "--host",
            "127.0.0.1",
            "--store-path",
            str(tmp_path / "origin"),
            "--disk-cache",
            "",
            "--receiver-port",
            str(p[0]),
            "--tcp-peer-port",
            str(p[1]),
            "--http3-peer-port",
            str(p[2]),
            "--metrics-port",
            str(p[3]),
            "--http-peer-port",
            str(port),
        )
    finally:
        taken.close()
    assert r.returncode == 1, r.stderr
    assert "--http-peer-port" in r.stderr and "already in use" in r.stderr
    assert "Traceback" not in r.stderr
