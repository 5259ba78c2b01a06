"""The order path's short CPU slice and the local exchange's CPU (daemons/sched.py): a daemon
started with ``OFI_SCHED_SLICE_US`` runs every thread with that slice, as the kernel reports it
(``se.slice`` in /proc/PID/task/TID/sched); a daemon started without it keeps the default. With
``OFI_CPU_PLACE`` every thread runs on the CPUs of its place (``Cpus_allowed_list``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import ROOT, wait_for
from daemons import sched
from tests.exchange_harness import start_exchange


def _slices(pid: int) -> dict[int, int]:
    """se.slice (ns) of each thread of ``pid``."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "sched").read_text().splitlines():
            if line.startswith("se.slice"):
                out[int(task.name)] = int(line.split(":")[1])
    return out


def _supported() -> bool:
    """Custom slices work here (Linux 6.12+): a throwaway thread asks for one."""
    if not Path("/proc/self/sched").exists() or \
            "se.slice" not in Path("/proc/self/sched").read_text():
        return False
    got = []
    t = threading.Thread(target=lambda: got.append(sched.request_slice(sched.MIN_US)))
    t.start()
    t.join(5)
    return bool(got and got[0])


needs_slices = pytest.mark.skipif(not _supported(), reason="no custom SCHED_OTHER slices here "
                                  "(Linux 6.12+ with /proc/PID/sched)")


@needs_slices
@pytest.mark.timeout(60)
def test_the_exchange_runs_every_thread_with_the_slice_it_was_given(procs, tmp_path, monkeypatch):
    # Arrange
    monkeypatch.setenv(sched.SLICE_ENV, "100")
    # Act
    p, _port, ready = start_exchange(procs, tmp_path / "ex")
    slices = _slices(p.pid)
    # Assert
    assert ready["sched_slice_us"] == 100
    assert slices and set(slices.values()) == {100_000}, slices


@needs_slices
@pytest.mark.timeout(60)
def test_without_the_variable_a_daemon_keeps_the_default_slice(procs, tmp_path, monkeypatch):
    # Arrange
    monkeypatch.delenv(sched.SLICE_ENV, raising=False)
    default = _slices(os.getpid())[threading.get_native_id()]
    # Act
    p, _port, ready = start_exchange(procs, tmp_path / "ex")
    # Assert
    assert ready["sched_slice_us"] is None
    assert set(_slices(p.pid).values()) == {default}


def _report_threads(procs, home, per_thread):
    """Start the report daemon (a stage with threads of its own); its ready record and
    ``per_thread(pid)`` once it shows a thread besides the main one."""
    cfg = home / "report.yaml"
    cfg.write_text("report:\n  interval_s: 0.3\n")
    p = procs([sys.executable, "-m", "daemons.report", "--home", str(home), "--config",
               str(cfg)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    ready = json.loads(next(line for line in p.stdout if "ofi-ready" in line))

    def more_than_main():
        # the report's build thread runs for a moment every interval_s: wait until it is seen
        seen = per_thread(p.pid)
        return seen if len(seen) > 1 else None
    return ready, wait_for(more_than_main, timeout=20, what="a thread besides the main one", proc=p)


def test_a_bad_or_empty_variable_asks_for_nothing():
    nothing = {"sched_slice_us": None, "cpus": None}
    assert sched.apply_from_env({}) == nothing
    assert sched.apply_from_env({sched.SLICE_ENV: ""}) == nothing
    assert sched.apply_from_env({sched.SLICE_ENV: "fast"}) == nothing
    assert sched.apply_from_env({sched.SLICE_ENV: "0"}) == nothing
    assert sched.apply_from_env({sched.PLACE_ENV: "somewhere"}) == nothing


def test_the_venue_takes_the_last_cpu_and_the_broker_the_others():
    assert sched.cpus_for(sched.VENUE, {0, 1}) == {1}
    assert sched.cpus_for(sched.BESIDE_VENUE, {0, 1}) == {0}
    assert sched.cpus_for(sched.VENUE, {2, 5, 7}) == {7}          # of the CPUs it may use
    assert sched.cpus_for(sched.BESIDE_VENUE, {2, 5, 7}) == {2, 5}
    assert sched.cpus_for(sched.VENUE, {3}) is None                # one CPU: nothing to split
    assert sched.cpus_for(sched.BESIDE_VENUE, {3}) is None
    assert sched.cpus_for("", {0, 1}) is None


def _cpus(pid: int) -> dict[int, set[int]]:
    """The CPUs each thread of ``pid`` may run on."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                cpus = set()
                for part in line.split(":")[1].strip().split(","):
                    lo, _, hi = part.partition("-")
                    cpus.update(range(int(lo), int(hi or lo) + 1))
                out[int(task.name)] = cpus
    return out


two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                              reason="the venue's CPU needs two CPUs to choose from")


@two_cpus
@pytest.mark.timeout(60)
def test_the_exchange_runs_every_thread_on_the_venue_cpu(procs, tmp_path, monkeypatch):
    # Arrange
    monkeypatch.setenv(sched.PLACE_ENV, sched.VENUE)
    last = max(os.sched_getaffinity(0))
    # Act
    p, _port, ready = start_exchange(procs, tmp_path / "ex")
    # Assert
    assert ready["cpus"] == [last]
    assert set(map(frozenset, _cpus(p.pid).values())) == {frozenset({last})}


@two_cpus
@pytest.mark.timeout(60)
def test_a_stage_beside_the_venue_keeps_every_thread_off_its_cpu(procs, home, monkeypatch):
    # Arrange
    monkeypatch.setenv(sched.PLACE_ENV, sched.BESIDE_VENUE)
    others = os.sched_getaffinity(0) - {max(os.sched_getaffinity(0))}
    # Act
    ready, cpus = _report_threads(procs, home, _cpus)
    # Assert
    assert ready["cpus"] == sorted(others)
    assert set(map(frozenset, cpus.values())) == {frozenset(others)}


@needs_slices
@pytest.mark.timeout(60)
def test_a_stage_runs_every_thread_with_the_slice_it_was_given(procs, home, monkeypatch):
    """The runtime applies it before the bus's and the stage's threads start."""
    # Arrange
    monkeypatch.setenv(sched.SLICE_ENV, "100")
    # Act
    ready, slices = _report_threads(procs, home, _slices)
    # Assert
    assert ready["sched_slice_us"] == 100
    assert set(slices.values()) == {100_000}, slices
