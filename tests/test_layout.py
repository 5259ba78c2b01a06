"""The layout docs/architecture.md describes: leaf modules import nothing of the project, and the
stages do not lean on the tools beside them."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DAEMONS = ROOT / "daemons"
LEAVES = ["trading.py", "venue.py", "settings.py", "proposals.py", "sched.py"]
STAGES = ["harvest", "signal", "strategy", "broker", "report", "marketdata", "runtime.py"]
#: what a stage may import of the tools: the command line that runs it (imported when it runs)
ALLOWED_FROM_TOOLS = {"daemons.tools.cli", "daemons.tools.cli.daemon_cmd"}


def _imports(path: Path) -> set[str]:
    """The project modules ``path`` imports (relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out.update([base] + [f"{base}.{a.name}" for a in node.names])
    return {m for m in out if m.split(".")[0] in ("daemons", "bus")}


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (ROOT / rel).with_suffix(".py").exists() or (ROOT / rel / "__init__.py").exists()


@pytest.mark.parametrize("leaf", LEAVES)
def test_leaf_modules_import_nothing_of_the_project(leaf):
    imported = {m for m in _imports(DAEMONS / leaf) if _is_module(m)}
    assert imported <= {"daemons.settings"}, imported


def test_stages_import_from_the_tools_only_the_command_line_that_runs_them():
    found = {}
    for name in STAGES:
        target = DAEMONS / name
        for path in ([target] if target.is_file() else sorted(target.rglob("*.py"))):
            bad = {m for m in _imports(path)
                   if m.startswith("daemons.tools") and _is_module(m)} - ALLOWED_FROM_TOOLS
            if bad:
                found[str(path.relative_to(ROOT))] = sorted(bad)
    assert found == {}


def test_the_runtime_imports_nothing_of_the_tools():
    assert not {m for m in _imports(DAEMONS / "runtime.py") if m.startswith("daemons.tools")}


def test_the_tools_find_the_shared_folder_beside_the_checkout(monkeypatch):
    from daemons.tools.bench import signals
    from daemons.tools.catalog import bench

    monkeypatch.delenv("OFI_DATA_DIR", raising=False)
    monkeypatch.delenv("OFI_BENCH_BASELINES", raising=False)
    assert signals.data_dir() == ROOT.parent / "shared" / "data"
    assert bench.baselines_dir() == ROOT.parent / "shared" / "bench-baselines" / "signals"
