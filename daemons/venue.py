"""Where the pipeline trades and harvests: the venue's URLs and keys for a mode.

``sim`` points at the local exchange (``ofi exchange``, from the ``exchange`` config section)
unless URLs are set; ``testnet`` and ``live`` take them from config or the environment
(OFI_REST_URL, OFI_WS_URL, OFI_API_KEY, OFI_API_SECRET). Nothing else differs between modes.
"""
from __future__ import annotations

TESTNET = {"rest_url": "https://testnet.binancefuture.com",
           "ws_url": "wss://fstream.binancefuture.com"}
LIVE = {"rest_url": "https://fapi.binance.com", "ws_url": "wss://fstream.binance.com"}


def resolve(cfg: dict) -> dict:
    """``{"mode", "rest_url", "ws_url", "api_key", "api_secret", "recv_window_ms"}``."""
    venue = dict(cfg["venue"])
    mode = cfg["broker"]["mode"]
    if mode == "sim":
        ex = cfg["exchange"]
        base = f"{ex['host']}:{ex['port']}"
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
    return venue
