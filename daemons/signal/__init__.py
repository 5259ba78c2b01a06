"""The signal stage: ``trades`` + ``book`` + ``depth`` in, OFI/CVD ``signals`` out (SPEC 5).

Modules: ``core`` (the pure, incremental signal computation), ``stage`` (the daemon: merge of
the inputs by exchange time, restart-equivalent state), ``offline`` (the same core over
recorded files, for ``ofi signals`` and benchmarks).
"""
from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Run the signal daemon (``ofi daemon signal`` / ``python -m daemons.signal``)."""
    from ..tools.cli.daemon_cmd import main as daemon_main  # lazy: importing the package stays cheap

    return daemon_main("signal", argv)
