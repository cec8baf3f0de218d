"""The connection table's policy, driven with a fake clock."""

from __future__ import annotations

import resource
import subprocess
import sys

from prism.admission import Admission, connection_cap


def test_admits_below_the_cap_and_refuses_when_nothing_can_go() -> None:
    table: Admission[str] = Admission(2, min_fresh=0.2, min_idle=0.5)
    assert table.admit("a", 0.0).admitted
    assert table.admit("b", 0.0).admitted
    assert not table.admit("c", 0.1).admitted  # a real client's request may be on its way
    assert table.admit("c", 0.2).shed == "a"
    table.busy("b")
    table.idle("b", 0.1)
    table.busy("c")
    refused = table.admit("d", 0.2)  # c is busy, b was just answered
    assert not refused.admitted and refused.shed is None
    assert len(table) == 2 and table.refused_total == 2
    assert table.admit("d", 0.6).shed == "b"  # idle long enough now


def test_sheds_the_connection_that_waited_longest_on_its_client() -> None:
    table: Admission[str] = Admission(3)
    for name, now in (("client", 0.0), ("idle1", 1.0), ("idle2", 2.0)):
        table.admit(name, now)
    table.busy("client")
    table.idle("client", 3.0)  # answered at 3.0: it waited less than the silent sockets
    assert table.admit("new1", 10.0).shed == "idle1"
    assert table.admit("new2", 10.0).shed == "idle2"
    # new1 and new2 are fresh but too young to go: the client idle longest goes.
    assert table.admit("new3", 10.0).shed == "client"
    assert table.admit("new4", 10.5).shed == "new1"
    assert "client" not in table and table.shed_total == 4


def test_busy_connections_are_never_shed() -> None:
    table: Admission[str] = Admission(1)
    table.admit("a", 0.0)
    table.busy("a")
    assert not table.admit("b", 100.0).admitted
    table.idle("a", 100.0)
    assert not table.admit("b", 100.1).admitted  # just answered
    assert table.admit("b", 101.0).shed == "a"


def test_fresh_connections_expire_after_the_first_request_timeout() -> None:
    table: Admission[str] = Admission(10, first_request_timeout=10.0)
    table.admit("old", 0.0)
    table.admit("asked", 1.0)
    table.admit("young", 5.0)
    table.busy("asked")
    assert table.expired(9.9) == []
    assert table.expired(10.0) == ["old"]
    table.admit("young2", 5.0)
    assert table.expired(20.0, limit=1) == ["young"]  # "asked" made a request: not expired
    assert table.expired(20.0) == ["young2"]
    assert len(table) == 1


def test_report_is_rate_limited_and_counts_what_happened_since() -> None:
    table: Admission[str] = Admission(1, log_window=10.0)
    table.admit("a", 0.0)
    table.busy("a")
    for i in range(1000):
        table.admit(f"x{i}", 1.0)
    first = table.report(1.0)
    assert first is not None and "refused 1000" in first
    table.admit("y", 2.0)
    assert table.report(5.0) is None  # within the window
    later = table.report(11.0)
    assert later is not None and "refused 1," in later
    assert table.report(30.0) is None  # nothing new


def test_closed_and_idle_after_close_forget_the_connection() -> None:
    table: Admission[str] = Admission(1)
    table.admit("a", 0.0)
    table.closed("a")
    table.idle("a", 1.0)  # a late callback of a closed connection
    assert len(table) == 0


def test_cap_leaves_headroom_for_files_and_the_database() -> None:
    assert connection_cap(1024) == 768
    assert connection_cap(256) == 128
    assert connection_cap(1 << 20) == 786432
    assert connection_cap() == connection_cap(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def _soft_256() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def test_start_up_raises_the_soft_file_limit_to_the_hard_one_and_logs_it() -> None:
    code = (
        "import logging, resource; logging.basicConfig(level=logging.INFO);"
        "from prism.app.limits import process_admission; a = process_admission();"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], a.cap)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=_soft_256, timeout=60
    )
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    soft, cap = map(int, out.stdout.split())
    assert soft == min(hard, 1 << 20) > 256
    assert cap == connection_cap(soft)
    assert f"open file limit {soft}" in out.stderr


def test_a_young_silent_socket_outlives_connections_stalled_longer() -> None:
    """A real client's new connection (its request not yet read) stays; stalled uploads go first."""
    table: Admission[str] = Admission(2, min_fresh=0.2, min_idle=0.5)
    table.admit("stalled", 0.0)
    table.idle("stalled", 0.1)  # offered a blob, sent one byte
    table.admit("client", 1.0)
    assert table.admit("attacker", 1.3).shed == "stalled"
