"""Shared fixtures: a fresh home per test, the recorded data, free ports, process cleanup;
the ``slow`` marker on every test that starts a process; no test may leave a thread or a child
process running."""
from __future__ import annotations

import ast
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("OFI_DATA_DIR", ROOT.parent / "shared" / "data"))
TESTS = Path(__file__).resolve().parent

# A test starts a process when its function, a fixture it uses or a helper either of them
# calls (a function of the same module, or one imported from another module of tests/)
# names one of these; ``bin/test --fast`` leaves such tests out (``-m "not slow"``). Code under
# test that forks by itself (the depth worker of daemons/marketdata/forked.py) is not seen
# here: a test that runs it is marked ``@pytest.mark.slow`` in its module.
STARTS_PROCESS = frozenset({"subprocess", "Popen", "multiprocessing", "fork", "posix_spawn",
                            "procs"})


@lru_cache(maxsize=None)
def _module_index(path: str) -> tuple[dict[str, frozenset[str]], dict[str, tuple[str, str]]]:
    """The names each top-level function or class of a tests/ module refers to, and the names
    it imports from other tests/ modules (name -> that module's path, the name there)."""
    tree = ast.parse(Path(path).read_text(), path)
    defs: dict[str, frozenset[str]] = {}
    imports: dict[str, tuple[str, str]] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defs[node.name] = frozenset(
                n.id if isinstance(n, ast.Name) else n.attr
                for n in ast.walk(node) if isinstance(n, (ast.Name, ast.Attribute)))
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            local = TESTS / (node.module.removeprefix("tests.").replace(".", "/") + ".py")
            if local.is_file():
                for alias in node.names:
                    imports[alias.asname or alias.name] = (str(local), alias.name)
    return defs, imports


def _starts_process(path: str, name: str, seen: set) -> bool:
    """Whether the function or class ``name`` of module ``path`` (or what it calls) names a
    way of starting a process."""
    if (path, name) in seen:
        return False
    seen.add((path, name))
    defs, imports = _module_index(path)
    if name not in defs:
        return name in imports and _starts_process(*imports[name], seen)
    refs = defs[name]
    return bool(refs & STARTS_PROCESS) or any(
        _starts_process(path, ref, seen) for ref in refs if ref in defs or ref in imports)


def pytest_collection_modifyitems(config, items):
    """Mark ``slow`` every test that starts a process: one using the ``procs`` fixture, or
    whose function, fixtures or helpers name a way of starting one (see ``STARTS_PROCESS``)."""
    for item in items:
        if item.get_closest_marker("slow") or not isinstance(item, pytest.Function):
            continue
        path = str(item.path)
        fixtures = getattr(item, "fixturenames", ())
        names = [item.originalname, *fixtures]
        if item.cls is not None:   # a method: what its class names
            names.append(item.cls.__name__)
        seen: set = set()
        if "procs" in fixtures or any(_starts_process(path, name, seen) for name in names):
            item.add_marker(pytest.mark.slow)


LEAK_GRACE_S = 2.0   # how long a test's threads and processes get to end after it


def _processes() -> dict[tuple[int, bytes], int]:
    """The processes running now, zombies left out: (pid, start time) -> parent pid (the
    start time tells a pid used again apart). Empty where /proc is not there."""
    out = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:   # gone meanwhile
            continue
        # after "pid (comm)": state, ppid, ...; starttime (field 22 of stat) is the 20th
        if fields[0] != b"Z":
            out[(int(name), fields[19])] = int(fields[1])
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _left_running(before, temp: str) -> dict[int, str]:
    """The processes started since ``before`` that still run and are the test's: children of
    this process, or any process whose command line names a path under ``temp`` (a program
    that outlived its parent: supervisord and its programs after ``ofi run`` was killed)."""
    me, out = os.getpid(), {}
    for (pid, start), ppid in _processes().items():
        if (pid, start) in before or pid == me:
            continue
        cmd = _cmdline(pid)
        if ppid == me or temp in cmd:
            out[pid] = cmd
    return out


@pytest.fixture(autouse=True)
def no_leaks(request, tmp_path_factory):
    """Fail a test that leaves a non-daemon thread (after LEAK_GRACE_S to end) or a process
    running: a child of this process, or a process started on a path of this session's
    temporary directory. Threads and processes that were there before the test (a module's
    fixtures) do not count. The processes it left are killed, so that the tests after it
    start clean."""
    threads = set(threading.enumerate())
    before = _processes()
    temp = f"{tmp_path_factory.getbasetemp()}{os.sep}"
    yield
    deadline = time.monotonic() + LEAK_GRACE_S
    for t in threading.enumerate():
        if t not in threads and not t.daemon:
            t.join(max(0.0, deadline - time.monotonic()))
    left = [t for t in threading.enumerate() if t not in threads and not t.daemon and t.is_alive()]
    procs = _left_running(before, temp)
    while procs and time.monotonic() < deadline:
        time.sleep(0.05)
        procs = _left_running(before, temp)
    if left or procs:
        what = [f"thread {t.name!r} still running" for t in left]
        what += [f"process {pid} ({cmd[:200]}) still running (now killed)"
                 for pid, cmd in procs.items()]
        for pid in procs:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pytest.fail(f"{request.node.nodeid} left behind: " + "; ".join(what), pytrace=False)


@pytest.fixture
def home(tmp_path):
    """A fresh runtime directory."""
    d = tmp_path / "home"
    d.mkdir()
    return d


@pytest.fixture(scope="session")
def data_dir():
    """The recorded Binance data (../shared/data or $OFI_DATA_DIR); skips when absent."""
    if not (DATA_DIR / "hftbacktest").is_dir():
        pytest.skip(f"recorded market data not found at {DATA_DIR} (set OFI_DATA_DIR)")
    return DATA_DIR


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


STOP_GRACE_S = 15.0   # how long a process still running at the end of its test gets to stop


@pytest.fixture
def procs():
    """Start processes that are stopped (with their groups) when the test ends: SIGTERM, so
    that ``ofi run`` stops the supervisord it started (supervisord is in a session of its
    own), then SIGKILL what still runs after STOP_GRACE_S."""
    started: list[subprocess.Popen] = []

    def start(args, **kw):
        kw.setdefault("start_new_session", True)
        p = subprocess.Popen(args, **kw)
        started.append(p)
        return p

    yield start
    stop_groups(started)


def stop_groups(started: list[subprocess.Popen]) -> None:
    """Stop processes and their groups: SIGTERM, so that ``ofi run`` stops the supervisord it
    started (supervisord is in a session of its own and outlives a SIGKILLed ``ofi run``),
    then SIGKILL what still runs after STOP_GRACE_S."""
    running = [p for p in started if p.poll() is None]
    for p in running:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_GRACE_S
    for p in running:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(p.pid, signal.SIGKILL)   # its group: what it started and left
        except ProcessLookupError:
            pass
        p.wait(10)


OFI = [sys.executable, "-m", "daemons.tools.cli"]


def typed_settings(**sections):
    """The typed settings of ``etc/defaults.yaml`` with ``sections`` merged over it
    (``typed_settings(strategy={"notional_usdt": 100.0})``), checked as a config file is."""
    from daemons import config, settings

    return settings.of(config.merge(config.defaults(), sections, "test"))


def wait_for(pred, timeout: float = 15.0, what: str = "condition", interval: float = 0.05, *,
             proc=None, detail=None):
    """``pred()``'s first true value, asked every ``interval`` s. AssertionError after
    ``timeout`` s naming ``what`` (with ``detail()``, say a log's tail, when given), or as soon
    as ``proc`` (a Popen) has exited. The one waiting helper of the tests."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            what = f"{what} (the process exited with {proc.returncode})"
            break
        time.sleep(interval)
    else:
        what = f"{what} (timed out after {timeout}s)"
    extra = f"\n{detail()}" if detail is not None else ""
    raise AssertionError(f"waiting for {what}{extra}")

_BUFFERS: dict[int, bytearray] = {}


def read_line(proc, timeout: float = 10.0) -> str:
    """A child's next stdout line, within ``timeout`` (reads the pipe's fd directly, so that
    lines already read ahead are never waited for)."""
    buf = _BUFFERS.setdefault(proc.pid, bytearray())
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"child printed no line in {timeout} s"
        chunk = os.read(proc.stdout.fileno(), 65536)
        assert chunk, "child closed its stdout"
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line.decode().strip()
