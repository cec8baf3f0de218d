"""The systemd unit under contrib/ is one systemd accepts (`systemd-analyze verify`, Debian package `systemd`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

UNIT = REPO_ROOT / "contrib" / "prism-reflector.service"
INSTALLED_PRISM = "/opt/prism/.venv/bin/prism"


def test_unit_restarts_on_failure_with_a_dedicated_user_and_enough_descriptors() -> None:
    keys = dict(
        line.split("=", 1)
        for line in UNIT.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert keys["Restart"] == "on-failure"
    assert int(keys["LimitNOFILE"]) >= 65536
    assert keys["User"] == "prism" and keys["Group"] == "prism"
    assert keys["ExecStart"].startswith(INSTALLED_PRISM + " reflector")


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: install the Debian package `systemd`"
    # verify checks that ExecStart's program exists: point it at this checkout's interpreter.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(INSTALLED_PRISM, f"{sys.executable} -m prism"))
    r = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "prism-reflector.service" not in r.stderr, r.stderr
