"""A short CPU time slice for the programs on the path from a signal to an order.

Linux's scheduler (EEVDF, 6.6+) lets a woken task run before the running one when its virtual
deadline is earlier, and a task's deadline is its eligible time plus its time slice. The
default slice (about 1.4 ms on a 2-CPU machine, ``sched_base_slice_ns`` scaled by the CPUs)
suits throughput: a process of another session busy on every CPU keeps the CPU for up to its
slice while a daemon that just woke on an intent or an answer waits, once per hand-off, and
there are four hand-offs from a signal to its acknowledgement. From Linux 6.12 a SCHED_OTHER
task may ask for a shorter slice of its own (``sched_setattr``'s ``sched_runtime``, 0.1 to
100 ms, no privilege needed): it is then picked soon after it wakes and preempted as soon after,
so it gains latency, not CPU time (docs/latency.md has the figures).

The local exchange of sim mode also gets a CPU of its own, which the broker keeps off
(:func:`cpus_for`). Left to itself, the kernel wakes the exchange on the CPU of the broker that
just wrote the order to its socket, where the exchange's short slice preempts the broker,
while the other CPU idles: `perf sched` over the slowest orders of a run counted 4 ms of idle
CPU in their 5.5 ms, the broker and the exchange taking turns on one CPU. A venue has machines
of its own; on one machine this is the nearest thing.

The supervisord policy (:mod:`daemons.tools.supervise.conf`) gives a program its slice in
``OFI_SCHED_SLICE_US`` and its place in ``OFI_CPU_PLACE``; the runtime
(:func:`daemons.runtime.run`) applies both with :func:`apply_from_env` first thing, in the main
thread, before any other thread starts (they inherit them), and so does ``ofi exchange``. A
leaf: it imports nothing of the project. Elsewhere (another OS or architecture, an older kernel
that refuses a slice, a single CPU) nothing changes: the daemon runs where and as the kernel
decides.
"""
from __future__ import annotations

import ctypes
import os
import platform
import struct
import sys

SLICE_ENV = "OFI_SCHED_SLICE_US"
PLACE_ENV = "OFI_CPU_PLACE"
VENUE = "venue"                 # the last CPU this process may use
BESIDE_VENUE = "beside-venue"   # every other one
MIN_US, MAX_US = 100, 100_000            # the kernel's bounds for a custom slice
#: sched_setattr's system call number by machine (Linux)
_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274, "arm64": 274}
_SCHED_OTHER = 0
_ATTR = struct.Struct("=IIQiIQQQ")       # size, policy, flags, nice, priority, runtime, deadline, period


def request_slice(us: int) -> bool:
    """Ask for a ``us`` µs slice for the calling thread (and the threads it starts from now on);
    True when the kernel took it."""
    nr = _SCHED_SETATTR.get(platform.machine())
    if not sys.platform.startswith("linux") or nr is None:
        return False
    us = min(max(int(us), MIN_US), MAX_US)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        nice = os.getpriority(os.PRIO_PROCESS, 0)
        attr = ctypes.create_string_buffer(
            _ATTR.pack(_ATTR.size, _SCHED_OTHER, 0, nice, 0, us * 1000, 0, 0), _ATTR.size)
        return libc.syscall(ctypes.c_long(nr), ctypes.c_long(0), attr, ctypes.c_uint(0)) == 0
    except (OSError, AttributeError):
        return False


def cpus_for(place: str, allowed: set[int]) -> set[int] | None:
    """The CPUs of ``place`` (:data:`VENUE` or :data:`BESIDE_VENUE`) among ``allowed``; None
    when there is nothing to split (fewer than two CPUs, or another place)."""
    if len(allowed) < 2 or place not in (VENUE, BESIDE_VENUE):
        return None
    last = max(allowed)
    return {last} if place == VENUE else set(allowed) - {last}


def apply_from_env(environ=os.environ) -> dict:
    """Apply the slice ``OFI_SCHED_SLICE_US`` and the place ``OFI_CPU_PLACE`` ask for; returns
    what was applied, for the ready line: ``{"sched_slice_us": µs or None, "cpus": [...] or
    None}`` (None: not asked, or refused)."""
    return {"sched_slice_us": _slice_from(environ.get(SLICE_ENV, "")),
            "cpus": _place_from(environ.get(PLACE_ENV, ""))}


def _slice_from(raw: str) -> int | None:
    try:
        us = int(raw.strip())
    except ValueError:
        return None
    return us if us > 0 and request_slice(us) else None


def _place_from(raw: str) -> list[int] | None:
    place = raw.strip()
    if not place or not hasattr(os, "sched_setaffinity"):
        return None
    try:
        cpus = cpus_for(place, os.sched_getaffinity(0))
        if cpus is None:
            return None
        os.sched_setaffinity(0, cpus)
    except OSError:
        return None
    return sorted(cpus)
