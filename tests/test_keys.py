"""``ofi keys``: stored 0600 in a 0700 directory, listed masked, removed; never printed."""
from __future__ import annotations

import os
import stat
import subprocess

import orjson
import pytest

from tests.conftest import OFI

KEY = "AKIAkeyvalue1234567890abcdWXYZ"
SECRET = "s3cr3t-value-that-must-never-appear-0123456789"


def _ofi(home, *args, stdin=""):
    return subprocess.run(OFI + list(args) + ["--home", str(home)], input=stdin,
                          capture_output=True, text=True, timeout=30)


def test_keys_add_list_remove_round_trip_masked(home):
    r = _ofi(home, "keys", "add", "testnet", stdin=f"{KEY}\n{SECRET}\n")
    assert r.returncode == 0, r.stderr
    path = home / "secrets" / "credentials.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    lst = _ofi(home, "keys", "list", "--json")
    rows = orjson.loads(lst.stdout)
    assert rows == [{"name": "testnet", "api_key": "****WXYZ", "added": rows[0]["added"]}]
    plain = _ofi(home, "keys", "list")
    for out in (r.stdout + r.stderr, lst.stdout + lst.stderr, plain.stdout + plain.stderr):
        assert SECRET not in out and KEY not in out
    assert _ofi(home, "keys", "remove", "testnet").returncode == 0
    assert orjson.loads(_ofi(home, "keys", "list", "--json").stdout) == []


def test_keys_remove_unknown_profile_fails_in_one_line(home):
    r = _ofi(home, "keys", "remove", "nope")
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "nope" in r.stderr


def test_keys_add_needs_two_lines_on_stdin(home):
    r = _ofi(home, "keys", "add", "live", stdin="onlyone\n")
    assert r.returncode != 0 and "two lines" in r.stderr and "Traceback" not in r.stderr


def test_keys_file_readable_by_others_is_refused(home):
    assert _ofi(home, "keys", "add", "testnet", stdin=f"{KEY}\n{SECRET}\n").returncode == 0
    path = home / "secrets" / "credentials.json"
    os.chmod(path, 0o644)
    r = _ofi(home, "keys", "list")
    assert r.returncode != 0 and "too open" in r.stderr and SECRET not in r.stderr


def test_keys_profile_used_by_testnet_broker_lookup(home):
    from daemons.broker import keys
    keys.add(home, "testnet", KEY, SECRET)
    assert keys.lookup(home, "testnet") == (KEY, SECRET)
    assert keys.lookup(home, "live") is None


def test_broker_live_mode_refuses_without_confirmation_in_one_line(home):
    env = {**os.environ, "OFI_API_KEY": KEY, "OFI_API_SECRET": SECRET,
           "OFI_REST_URL": "http://127.0.0.1:9"}
    r = subprocess.run(OFI + ["daemon", "broker", "--home", str(home), "--mode", "live"],
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode != 0
    assert "confirm" in (r.stdout + r.stderr)
    assert SECRET not in r.stdout + r.stderr and KEY not in r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr


@pytest.mark.parametrize("flag,confirmed", [(["--confirm-live"], True), ([], False)])
def test_confirm_live_flag_reaches_the_broker_through_its_config(monkeypatch, home, flag,
                                                                 confirmed):
    from click.testing import CliRunner

    from daemons import runtime
    from daemons.tools.cli import cli

    seen = {}
    monkeypatch.setattr(runtime, "run", lambda cls, cfg: seen.update(cls=cls, cfg=cfg) or 0)
    r = CliRunner().invoke(cli, ["daemon", "broker", "--home", str(home), "--mode", "live", *flag])
    assert r.exit_code == 0, r.output
    assert seen["cls"].__name__ == "BrokerStage"
    assert seen["cfg"]["broker"]["confirm_live"] is confirmed
