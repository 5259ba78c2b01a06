"""The production guard: every mode but live refuses Binance's production hosts, whatever the
source of the URL (config, environment, defaults) and however the host is spelled."""
from __future__ import annotations

import os
import subprocess
import textwrap

import pytest

from daemons import config as configmod
from daemons import venue
from daemons.broker import executors
from daemons.config import ConfigError
from tests.conftest import OFI, ROOT

NOT_LIVE = ("mock", "sim", "testnet")

PRODUCTION_URLS = [
    "https://fapi.binance.com",
    "https://fapi.binance.com/",
    "https://fapi.binance.com/fapi/v1/order",
    "https://FAPI.Binance.COM",
    "https://fapi.binance.com:443",
    "https://fapi.binance.com.",
    "https://fapi.binance.com.:443/fapi",
    "https://user:pw@fapi.binance.com",
    "https://user@FAPI.BINANCE.COM.:8443/",
    "http://fapi.binance.com",
    "fapi.binance.com",
    "  https://fapi.binance.com  ",
    "https://fapi1.binance.com",
    "https://fapi3.binance.com",
    "https://api.binance.com",
    "https://binance.com",
    "wss://fstream.binance.com",
    "wss://fstream.binance.com/",
    "wss://fstream.binance.com/public",
    "wss://fstream.binance.com/market",
    "wss://fstream.binance.com/private",
    "wss://fstream.binance.com/ws",
    "wss://fstream.binance.com/stream",
    "wss://fstream.binance.com/public/stream?streams=btcusdt@depth@100ms",
    "wss://fstream.binance.com/market/ws/btcusdt@aggTrade",
    "wss://fstream.binance.com/private/ws/LISTENKEY",
    "wss://fstream.binance.com:443/public",
    "WSS://FSTREAM.BINANCE.COM/Market",
    "wss://fstream.binance.com./ws",
    "wss://ws-fapi.binance.com/ws-fapi/v1",
    "wss://stream.binance.com:9443/ws",
]

ALLOWED_URLS = [
    "https://testnet.binancefuture.com",
    "https://TESTNET.binancefuture.com:443/fapi/v1/order",
    "wss://fstream.binancefuture.com",
    "wss://fstream.binancefuture.com/public/stream?streams=btcusdt@depth",
    "wss://stream.binancefuture.com/ws",
    "https://demo-fapi.binance.com",
    "https://Demo-FAPI.binance.com.:443/fapi",
    "http://127.0.0.1:8765",
    "ws://localhost:8765",
    "https://fapi.binance.com.example.org",    # a look-alike is not Binance
    "https://notbinance.com",
    "",
    None,
]


@pytest.mark.parametrize("url", PRODUCTION_URLS)
def test_production_hosts_are_recognised_in_any_spelling(url):
    assert venue.is_production(url), url


@pytest.mark.parametrize("url", ALLOWED_URLS)
def test_testnet_demo_and_local_hosts_are_not_production(url):
    assert not venue.is_production(url), url


def test_host_of_strips_case_port_userinfo_and_trailing_dot():
    assert venue.host_of("wss://u:p@FStream.Binance.com.:443/public/ws") == "fstream.binance.com"
    assert venue.host_of("fapi.binance.com:443/fapi") == "fapi.binance.com"
    assert venue.host_of("https://fapi%2Ebinance.com") == "fapi.binance.com"
    assert venue.host_of("") is None and venue.host_of(None) is None


def _cfg(mode: str, environ: dict | None = None, **venue_keys) -> dict:
    cfg = configmod.load(None, {"broker.mode": mode}, environ=environ or {})
    for k, v in venue_keys.items():
        cfg["venue"][k] = v
    return cfg


@pytest.mark.parametrize("mode", NOT_LIVE)
@pytest.mark.parametrize("key", ["rest_url", "ws_url"])
@pytest.mark.parametrize("url", ["https://fapi.binance.com", "wss://fstream.binance.com/public",
                                 "wss://FSTREAM.binance.com:443/market",
                                 "wss://fstream.binance.com/private",
                                 "wss://fstream.binance.com/ws",
                                 "wss://fstream.binance.com/stream"])
def test_every_mode_but_live_refuses_a_production_url_from_config(mode, key, url):
    with pytest.raises(venue.ProductionHostError) as err:
        venue.resolve(_cfg(mode, **{key: url}))
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{mode} mode refuses the production Binance host ")
    assert f"venue.{key}" in msg and "live mode only" in msg
    assert isinstance(err.value, ConfigError)   # exit code 2 wherever it is raised


@pytest.mark.parametrize("mode", NOT_LIVE)
@pytest.mark.parametrize("var,url", [("OFI_REST_URL", "https://fapi.binance.com"),
                                     ("OFI_REST_URL", "https://Fapi.Binance.Com.:443/"),
                                     ("OFI_WS_URL", "wss://fstream.binance.com/public"),
                                     ("OFI_WS_URL", "wss://fstream.binance.com/market/stream")])
def test_every_mode_but_live_refuses_a_production_url_from_the_environment(mode, var, url):
    env = {var: url}
    cfg = _cfg(mode, environ=env)
    with pytest.raises(venue.ProductionHostError, match=f"from {var}"):
        venue.check(mode, venue.resolve(cfg, guard=False), environ=env)


def test_live_mode_takes_the_production_defaults_and_explicit_production_urls():
    v = venue.resolve(_cfg("live"))
    assert v["rest_url"] == venue.LIVE["rest_url"] and v["ws_url"] == venue.LIVE["ws_url"]
    v = venue.resolve(_cfg("live", rest_url="https://fapi1.binance.com",
                           ws_url="wss://fstream.binance.com/public"))
    assert v["rest_url"] == "https://fapi1.binance.com"


@pytest.mark.parametrize("mode", NOT_LIVE)
def test_defaults_of_every_mode_but_live_are_not_production(mode):
    v = venue.resolve(_cfg(mode))
    assert not venue.is_production(v.get("rest_url"))
    assert not venue.is_production(v.get("ws_url"))


def test_testnet_defaults_and_demo_host_are_allowed():
    assert venue.resolve(_cfg("testnet"))["rest_url"] == "https://testnet.binancefuture.com"
    v = venue.resolve(_cfg("testnet", rest_url="https://demo-fapi.binance.com",
                           ws_url="wss://fstream.binancefuture.com/public"))
    assert v["rest_url"] == "https://demo-fapi.binance.com"


def test_sim_defaults_point_at_the_local_exchange():
    cfg = _cfg("sim")
    cfg["exchange"]["host"] = "0.0.0.0"
    v = venue.resolve(cfg)
    assert v["rest_url"] == f"http://127.0.0.1:{cfg['exchange']['port']}"
    assert v["ws_url"] == f"ws://127.0.0.1:{cfg['exchange']['port']}"


def test_one_source_of_the_base_urls():
    from daemons.broker.binance import urls
    assert not hasattr(urls, "DEFAULT_URLS") and not hasattr(urls, "sim_urls")


@pytest.mark.parametrize("mode", NOT_LIVE)
def test_make_executor_refuses_before_building_a_gateway(mode, tmp_path, monkeypatch):
    built = []
    from daemons.broker import gateway, mock
    monkeypatch.setattr(gateway, "BinanceGateway", lambda *a, **k: built.append(a))
    monkeypatch.setattr(mock, "MockGateway", lambda *a, **k: built.append(a))
    cfg = _cfg(mode, rest_url="https://fapi.binance.com", api_key="k", api_secret="s")
    with pytest.raises(venue.ProductionHostError):
        executors.make_executor(cfg, str(tmp_path))
    assert built == []


# -- the entry points: one line, exit code 2, no traceback, no connection ----------------------
NO_NETWORK = textwrap.dedent("""
    import os, socket
    _log = os.environ["OFI_TEST_CONNECT_LOG"]
    def _refuse(what, target):
        with open(_log, "a") as f:
            f.write(f"{what} {target!r}\\n")
        raise OSError(f"network disabled in this test: {what} {target!r}")
    _connect = socket.socket.connect
    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _refuse("connect", address)
        return _connect(self, address)
    socket.socket.connect = connect
    socket.socket.connect_ex = lambda self, address: _refuse("connect_ex", address)
    socket.getaddrinfo = lambda host, *a, **k: _refuse("getaddrinfo", host)
    socket.create_connection = lambda address, *a, **k: _refuse("create_connection", address)
""")


def _run_offline(tmp_path, args, **environ):
    """``ofi ARGS`` in a child whose every TCP connection / name lookup is refused and logged."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(NO_NETWORK)
    log = tmp_path / "connects.log"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OFI_", "EXECUTOR_MODE", "SUPERVISOR_"))}
    env.update(PYTHONPATH=f"{site}{os.pathsep}{ROOT}", OFI_TEST_CONNECT_LOG=str(log), **environ)
    p = subprocess.run(OFI + args, capture_output=True, text=True, timeout=60, env=env,
                       cwd=str(tmp_path))
    attempts = log.read_text() if log.exists() else ""
    return p, attempts


def _one_line(p) -> str:
    out = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.strip()]
    assert len(out) == 1, out
    assert "Traceback" not in p.stdout + p.stderr
    return out[0]


@pytest.mark.parametrize("url_var,url", [("OFI_REST_URL", "https://fapi.binance.com"),
                                         ("OFI_WS_URL", "wss://fstream.binance.com/private")])
def test_broker_daemon_in_testnet_mode_refuses_production_with_one_line(tmp_path, url_var, url):
    p, attempts = _run_offline(tmp_path, ["daemon", "broker", "--mode", "testnet", "--home",
                                          str(tmp_path / "home")],
                               **{url_var: url, "OFI_API_KEY": "k", "OFI_API_SECRET": "s"})
    assert p.returncode == 2, p.stdout + p.stderr
    line = _one_line(p)
    assert "testnet mode refuses the production Binance host" in line
    assert f"from {url_var}" in line
    assert attempts == ""


@pytest.mark.parametrize("mode", ["mock", "sim"])
def test_broker_daemon_refuses_production_in_mock_and_sim(tmp_path, mode):
    p, attempts = _run_offline(tmp_path, ["daemon", "broker", "--mode", mode, "--home",
                                          str(tmp_path / "home")],
                               OFI_REST_URL="https://FAPI.binance.com:443/")
    assert p.returncode == 2
    assert f"{mode} mode refuses the production Binance host fapi.binance.com" in _one_line(p)
    assert attempts == ""


@pytest.mark.parametrize("mode", NOT_LIVE)
def test_harvest_daemon_refuses_production_market_data_outside_live(tmp_path, mode):
    p, attempts = _run_offline(tmp_path, ["daemon", "harvest", "--mode", mode, "--home",
                                          str(tmp_path / "home")],
                               OFI_WS_URL="wss://fstream.binance.com/public",
                               OFI_REST_URL="https://testnet.binancefuture.com")
    assert p.returncode == 2, p.stdout + p.stderr
    assert "refuses the production Binance host fstream.binance.com" in _one_line(p)
    assert attempts == ""


def test_ofi_run_refuses_production_before_supervisord(tmp_path):
    home = tmp_path / "home"
    p, attempts = _run_offline(tmp_path, ["run", "--mode", "testnet", "--enable", "broker",
                                          "--home", str(home), "--minutes", "0.1"],
                               OFI_REST_URL="https://fapi.binance.com")
    assert p.returncode == 2
    line = _one_line(p)
    assert line.startswith("ofi: testnet mode refuses the production Binance host "
                           "fapi.binance.com")
    assert not (home / "supervisord.conf").exists() and not (home / "supervisor.sock").exists()
    assert attempts == ""


def test_ofi_run_guards_harvest_too_but_not_stages_that_never_connect(tmp_path):
    from daemons.tools.supervise import run
    cfg = _cfg("testnet", ws_url="wss://fstream.binance.com/market")
    assert run.connects(cfg, ["harvest", "signal"])
    assert run.connects(cfg, ["broker"])
    assert not run.connects(cfg, ["signal", "strategy", "report"])
    cfg["harvest"]["source"] = "replay"
    assert not run.connects(cfg, ["harvest", "signal"])

