"""Config: defaults, file, environment and flags; one clear line and exit 2 on bad input."""
from __future__ import annotations

import subprocess

import pytest

from daemons import config
from tests.conftest import OFI


def test_defaults_load_and_every_key_has_a_comment():
    cfg = config.load(environ={})
    assert cfg["signal"]["interval_ms"] == 1000
    assert cfg["signal"]["z_window"] == 300 and cfg["signal"]["min_periods"] == 30
    assert cfg["signal"]["w_ofi"] == 0.6 and cfg["signal"]["w_cvd"] == 0.4
    # every leaf setting line in defaults.yaml carries a comment (the file documents itself)
    prev = ""
    for line in config.DEFAULTS_FILE.read_text().splitlines():
        s = line.strip()
        if s and not s.startswith("#") and not s.endswith(":") and ":" in s:
            assert "#" in s or prev.startswith("#"), f"setting without a comment: {line!r}"
        prev = s


def test_config_file_overrides_and_environment_wins(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("signal:\n  interval_ms: 500\nsink: sqlite\n")
    cfg = config.load(f, environ={"OFI_SINK": "jsonl", "EXECUTOR_MODE": "sim"})
    assert cfg["signal"]["interval_ms"] == 500
    assert cfg["sink"] == "jsonl"
    assert cfg["broker"]["mode"] == "sim"
    cfg = config.load(f, {"signal.interval_ms": 250}, environ={})
    assert cfg["signal"]["interval_ms"] == 250


def test_config_unknown_key_is_refused_with_file_and_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("signal:\n  interval: 500\n")
    with pytest.raises(config.ConfigError, match=r"c.yaml: unknown key 'signal.interval'"):
        config.load(f, environ={})


def test_config_wrong_type_is_refused(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("signal:\n  z_window: lots\n")
    with pytest.raises(config.ConfigError, match=r"'signal.z_window' must be a integer|must be an? integer"):
        config.load(f, environ={})


def test_config_bad_choice_is_refused():
    with pytest.raises(config.ConfigError, match="broker.mode"):
        config.load(None, environ={"EXECUTOR_MODE": "paper"})


@pytest.mark.parametrize("content, needle", [
    ("signal:\n  nope: 1\n", "unknown key 'signal.nope'"),
    ("sink: [1\n", "not valid YAML"),
    ("risk:\n  max_orders_per_minute: 2.5\n", "risk.max_orders_per_minute"),
])
def test_cli_bad_config_exits_2_with_one_line(tmp_path, content, needle):
    f = tmp_path / "bad.yaml"
    f.write_text(content)
    p = subprocess.run(OFI + ["bus", "stats", "--config", str(f), "--home", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], p.stderr
    assert "Traceback" not in p.stderr


def test_cli_missing_config_file_exits_2(tmp_path):
    p = subprocess.run(OFI + ["status", "--config", str(tmp_path / "none.yaml")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "no such config file" in p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("key, value, says", [
    ("broker.margin_type", "CROSS", "must be one of , CROSSED, ISOLATED"),
    ("broker.user_stream_route", "ws", "must be one of private, legacy"),
    ("harvest.source", "files", "must be one of live, replay"),
    ("strategy.order_type", "STOP", "must be one of MARKET, LIMIT"),
    ("broker.leverage", 200, "must be 0..125, not 200"),
    ("harvest.depth_levels", 0, "must be at least 1, not 0"),
    ("risk.max_order_usdt", -1.0, "must be at least 0, not -1.0"),
    ("strategy.entry_threshold", 0.0, "must be above 0, not 0.0"),
    ("strategy.exit_threshold", 3.0, "must lie strictly inside (-entry_threshold, entry_threshold)"),
    ("strategy.id_prefix", "my-bot", "must match [.A-Z:/a-z0-9_]{1,8}, not 'my-bot'"),
    ("mcp.client_id_prefix", "much_too_long", "must match [.A-Z:/a-z0-9_]{1,8}"),
    ("mcp.max_rows", 0, "must be at least 1, not 0"),
    ("backtest.taker_fee_bps", -0.5, "must be at least 0, not -0.5"),
    ("signal.interval_ms", 0, "must be at least 1, not 0"),
])
def test_allowed_values_are_checked_at_load_in_one_place(tmp_path, key, value, says):
    section, name = key.split(".")
    path = tmp_path / "c.yaml"
    path.write_text(f"{section}:\n  {name}: {value!r}\n" if isinstance(value, str)
                    else f"{section}:\n  {name}: {value}\n")
    with pytest.raises(config.ConfigError) as exc:
        config.load(str(path))
    assert f"config: key '{key}' {says}" in str(exc.value)
