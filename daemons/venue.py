"""Where the pipeline trades and harvests: the venue's URLs and keys for a mode, and the guard
that keeps every mode but ``live`` off Binance's production hosts.

``sim`` points at the local exchange (``ofi exchange``, from the ``exchange`` config section)
unless URLs are set; ``testnet`` and ``live`` take them from config or the environment
(OFI_REST_URL, OFI_WS_URL, OFI_API_KEY, OFI_API_SECRET), else the defaults below. Nothing else
differs between modes.

The production guard: in ``mock``, ``sim`` and ``testnet`` mode a REST or websocket URL whose
host is Binance production is refused with one line (a :class:`ProductionHostError`, a
``ConfigError``: exit code 2). Production is every host under ``binance.com`` (fapi, fapi1..,
fstream, ws-fapi, api, stream, ...) except Binance's demo trading host ``demo-fapi.binance.com``;
the futures testnet lives under ``binancefuture.com`` (testnet., fstream., stream.). Hosts are
compared case-insensitively, without port, userinfo or trailing dot, whatever the path
(``wss://fstream.binance.com/public/stream?...`` is production like ``wss://fstream.binance.com``).

This module is the one source of the Binance base URLs (developers.binance.com
derivatives/usds-margined-futures general-info and websocket-market-streams).
"""
from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

from .settings import ConfigError

TESTNET = {"rest_url": "https://testnet.binancefuture.com",
           "ws_url": "wss://fstream.binancefuture.com"}
LIVE = {"rest_url": "https://fapi.binance.com", "ws_url": "wss://fstream.binance.com"}
#: the WebSocket API (order.place, order.cancel, order.status): Binance's own hosts; any other
#: venue (``ofi exchange``) serves it at ``/ws-fapi/v1`` on its REST host and port
#: (daemons.broker.binance.urls.ws_api_url)
WS_API = {"testnet": "wss://testnet.binancefuture.com/ws-fapi/v1",
          "live": "wss://ws-fapi.binance.com/ws-fapi/v1"}

#: every host under these domains is Binance production (real money, real keys) ...
PRODUCTION_DOMAINS = ("binance.com",)
#: ... except these: Binance's futures demo trading (the testnet's backend under binance.com)
TEST_HOSTS = frozenset({"demo-fapi.binance.com"})
#: the USD-M futures testnet (REST testnet., websocket fstream. and the older stream.)
TEST_DOMAINS = ("binancefuture.com",)

#: the config keys holding venue URLs, with the environment variable that sets each
URL_KEYS = {"rest_url": "OFI_REST_URL", "ws_url": "OFI_WS_URL"}


class ProductionHostError(ConfigError):
    """A mode other than ``live`` was given a production Binance host; one line."""


def host_of(url: str | None) -> str | None:
    """The host of ``url``, lower case, without port, userinfo or trailing dot (None if none).

    A URL without a scheme (``fapi.binance.com/fapi``) is read as a host and path.
    """
    if not url or not isinstance(url, str):
        return None
    text = url.strip()
    if "//" not in text:
        text = "//" + text
    try:
        host = urlsplit(text).hostname
    except ValueError:
        return None
    if not host:
        return None
    host = unquote(host).strip().lower().rstrip(".")
    return host or None


def _under(host: str, domain: str) -> bool:
    return host == domain or host.endswith("." + domain)


def is_production(url: str | None) -> bool:
    """True if ``url`` points at a Binance production host."""
    host = host_of(url)
    if host is None or host in TEST_HOSTS:
        return False
    if any(_under(host, d) for d in TEST_DOMAINS):
        return False
    return any(_under(host, d) for d in PRODUCTION_DOMAINS)


def check(mode: str, venue: dict, environ: dict | None = None) -> None:
    """Refuse (ProductionHostError) a production host in ``venue`` unless ``mode`` is live."""
    if mode == "live":
        return
    env = os.environ if environ is None else environ
    for key, var in URL_KEYS.items():
        url = venue.get(key)
        if not is_production(url):
            continue
        source = f"venue.{key}"
        if env.get(var) and env.get(var) == url:
            source += f" from {var}"
        raise ProductionHostError(
            f"{mode} mode refuses the production Binance host {host_of(url)} ({source}): "
            f"production hosts are for live mode only; use a testnet URL "
            f"({TESTNET[key]}) or --mode live")


def resolve(cfg: dict, guard: bool = True) -> dict:
    """``{"mode", "rest_url", "ws_url", "api_key", "api_secret", "recv_window_ms"}``.

    With ``guard`` (the default), a production host outside live mode raises
    :class:`ProductionHostError` before anything connects.
    """
    venue = dict(cfg["venue"])
    mode = cfg["broker"]["mode"]
    if mode == "sim":
        ex = cfg["exchange"]
        host = "127.0.0.1" if ex["host"] in ("0.0.0.0", "", None) else ex["host"]
        base = f"{host}:{ex['port']}"
        defaults = {"rest_url": f"http://{base}", "ws_url": f"ws://{base}",
                    "api_key": ex["api_key"], "api_secret": ex["api_secret"]}
    elif mode == "testnet":
        defaults = dict(TESTNET)
    elif mode == "live":
        defaults = dict(LIVE)
    else:
        defaults = {}
    for key, value in defaults.items():
        venue[key] = venue.get(key) or value
    venue["mode"] = mode
    if guard:
        check(mode, venue)
    return venue
