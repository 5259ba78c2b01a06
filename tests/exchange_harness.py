"""Starting ``ofi exchange`` in tests and pointing the real third-party clients at it."""
from __future__ import annotations

import json
import select
import subprocess
import time

from conftest import OFI, free_port, wait_for  # noqa: F401 (wait_for: for the exchange tests)

KEY, SECRET = "demo-key", "demo-secret"


def start_exchange(procs, home, *args, timeout: float = 20.0, port: int | None = None):
    """Start the exchange (on ``port``, else a free one); return (process, port, ready record)
    once it printed ofi-ready."""
    port = port or free_port()
    p = procs(OFI + ["exchange", "--port", str(port), "--home", str(home), *args],
              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([p.stdout], [], [], 0.2)
        if ready:
            line = p.stdout.readline()
            seen.append(line)
            if "ofi-ready" in line:
                return p, port, json.loads(line)
        if p.poll() is not None:
            break
    raise AssertionError(f"exchange not ready: {''.join(seen)[-2000:]}")


def stop_exchange(p, timeout: float = 10.0) -> int:
    p.terminate()
    return p.wait(timeout)


def um_client(port, key=KEY, secret=SECRET):
    from binance.um_futures import UMFutures
    return UMFutures(key, secret, base_url=f"http://127.0.0.1:{port}", timeout=10)


def ccxt_client(port, key=KEY, secret=SECRET):
    """ccxt binanceusdm with every fapi URL on loopback and no spot/sapi calls."""
    import ccxt
    e = ccxt.binanceusdm({"apiKey": key, "secret": secret, "timeout": 10000,
                          "options": {"fetchCurrencies": False,
                                      "fetchMarkets": {"types": ["linear"]}}})
    base = f"http://127.0.0.1:{port}"
    for k, v in list(e.urls["api"].items()):
        if isinstance(v, str) and v.startswith("https://fapi.binance.com"):
            e.urls["api"][k] = base + v[len("https://fapi.binance.com"):]
        elif isinstance(v, str) and v.startswith("https://"):
            e.urls["api"][k] = base + "/unreachable"      # never leave loopback
    # ccxt picks its futures error table by production URL; loopback needs it applied
    e.exceptions["exact"].update(e.exceptions["linear"]["exact"])
    return e


PUSHER = ("pusher-key-0123456789", "pusher-secret-0123456789")   # a second trader's account


def push_market(url: str, side: str, beyond: float, key: str = PUSHER[0],
                secret: str = PUSHER[1], tries: int = 100) -> None:
    """A second trader (``ofi exchange --extra-key KEY:SECRET``, a large ``--balance``) takes
    the book with MARKET orders until the mark price is ``beyond``: below it when selling,
    above it when buying."""
    import requests

    from daemons.tools.exchange import signing
    past = (lambda m: m < beyond) if side == "SELL" else (lambda m: m > beyond)
    reach = (lambda p: p >= beyond - 2.0) if side == "SELL" else (lambda p: p <= beyond + 2.0)
    for _ in range(tries):
        mark = requests.get(f"{url}/fapi/v1/premiumIndex", params={"symbol": "BTCUSDT"},
                            timeout=5).json()["markPrice"]
        if past(float(mark)):
            return
        book = requests.get(f"{url}/fapi/v1/depth", params={"symbol": "BTCUSDT", "limit": 1000},
                            timeout=5).json()
        levels = book["bids"] if side == "SELL" else book["asks"]
        qty = min(50.0, sum(float(q) for p, q in levels if reach(float(p))) + 0.01)
        q = (f"symbol=BTCUSDT&side={side}&type=MARKET&quantity={qty:.3f}"
             f"&timestamp={int(time.time() * 1000)}")
        r = requests.post(f"{url}/fapi/v1/order?{q}&signature={signing.sign(secret, q)}",
                          headers={"X-MBX-APIKEY": key}, timeout=10)
        assert r.status_code == 200, r.text
        time.sleep(0.05)
    raise AssertionError(f"the market did not move through {beyond}")


class StillFeed:
    """An in-process venue's market that never moves: one bid and one ask on BTCUSDT, no
    prints of its own (tests inject theirs through ``Venue.on_market``)."""

    live = True

    def __init__(self):
        from daemons.tools.exchange import filters
        from daemons.tools.exchange.book import Book

        btc = filters.spec_for("BTCUSDT")
        self.specs = {"BTCUSDT": btc}
        book = Book()
        book.set("b", btc.price_units("64990.00"), btc.qty_units("1.000"))
        book.set("a", btc.price_units("65010.00"), btc.qty_units("1.000"))
        self.books = {"BTCUSDT": book}
        self._mark = btc.price_units("65000.00")

    def mark(self, symbol):
        return self._mark

    def take(self, symbol, side, fills, now):
        return []
