"""A forked worker process that digests part of a recording beside the main process.

``ofi signals`` and ``ofi data import`` digest the depth stream of an hftbacktest recording in
a second process (:mod:`daemons.signal.split`, :mod:`daemons.tools.catalog.fastimport`). Both fork
the same way and talk through one pipe of ``(tag, ...)`` messages:

    worker = fork(body, args, "ofi-signals-depth")   # None where fork is not available
    ... worker.recv() ...                            # DepthWorkerError if it died silently
    worker.close()                                   # stops it if it still runs

The body runs under :func:`_guarded`: an expected error becomes one message (``("format",
text)`` and the like, see ``errors``) and anything else ``("error", one line)``; the worker
process always ends itself (``os._exit``), never running the parent's atexit handlers.
"""
from __future__ import annotations

import multiprocessing
import os
import sys


class DepthWorkerError(RuntimeError):
    """The worker failed or went away (the message is one line)."""


class Worker:
    """The main process's end of a forked worker: its process and the pipe from it."""

    def __init__(self, proc, conn):
        self.proc = proc
        self.conn = conn

    def recv(self):
        """The next message, waiting for it."""
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            self.proc.join(5)
            raise DepthWorkerError("depth worker ended without its result "
                                   f"(exit code {self.proc.exitcode})") from None

    def close(self) -> None:
        """Stop the worker if it still runs (an error or an interrupt in the main process)."""
        proc = self.proc
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        else:
            proc.join(5)
        self.conn.close()


def fork(body, args: tuple, name: str, errors: dict | None = None) -> Worker | None:
    """Start ``body(conn, *args)`` in a forked process; None when processes cannot be forked
    here (the caller then does the work itself). ``errors``: exception type(s) -> message tag,
    for the expected failures the caller turns back into its own exceptions."""
    try:
        ctx = multiprocessing.get_context("fork")
    except ValueError:
        return None
    for stream in (sys.stdout, sys.stderr):  # a forked child must not inherit pending output
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_guarded, args=(send, recv, body, args, errors or {}), name=name,
                       daemon=True)
    try:
        proc.start()
    except OSError:
        recv.close()
        send.close()
        return None
    send.close()  # so that the worker's end (or death) reads as EOF here
    return Worker(proc, recv)


def _guarded(conn, other, body, args, errors) -> None:
    """The worker's body: always ends the process itself (no inherited atexit or flushes)."""
    other.close()  # the parent's end: a dead parent then breaks our pipe
    try:
        body(conn, *args)
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    except BaseException as exc:
        for types, tag in errors.items():
            if isinstance(exc, types):
                _try_send(conn, (tag, " ".join(str(exc).split()) or type(exc).__name__))
                break
        else:  # anything else: one line for the user
            text = " ".join(str(exc).split()) or "(no message)"
            _try_send(conn, ("error", f"depth worker: {type(exc).__name__}: {text}"))
    finally:
        try:
            conn.close()
        finally:
            os._exit(0)


def _try_send(conn, msg) -> None:
    try:
        conn.send(msg)
    except OSError:
        pass
