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

The supervisord policy (:mod:`daemons.tools.supervise.conf`) gives a program its slice in
``OFI_SCHED_SLICE_US``; the runtime (:func:`daemons.runtime.run`) applies it with
:func:`apply_from_env` first thing, in the main thread, before any other thread starts (they
inherit it), and so does ``ofi exchange``. A leaf: it imports nothing of the project. Elsewhere (another OS or architecture, an older kernel that
refuses it) nothing changes: the answer is False and the daemon runs with the default slice.
"""
from __future__ import annotations

import ctypes
import os
import platform
import struct
import sys

SLICE_ENV = "OFI_SCHED_SLICE_US"
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


def apply_from_env(environ=os.environ) -> int | None:
    """The slice ``OFI_SCHED_SLICE_US`` asks for, once applied (None: none asked, or refused)."""
    raw = environ.get(SLICE_ENV, "").strip()
    if not raw:
        return None
    try:
        us = int(raw)
    except ValueError:
        return None
    return us if us > 0 and request_slice(us) else None
