"""Base URLs per mode and the endpoint paths of Binance USD-M futures.

Sources: developers.binance.com derivatives/usds-margined-futures general-info (REST base URLs),
websocket-market-streams (routed /public /market /private paths), user-data-streams.
"""
from __future__ import annotations

DEFAULT_URLS = {
    # mode: (REST base, websocket base)
    "testnet": ("https://testnet.binancefuture.com", "wss://fstream.binancefuture.com"),
    "live": ("https://fapi.binance.com", "wss://fstream.binance.com"),
}

TIME = "/fapi/v1/time"
EXCHANGE_INFO = "/fapi/v1/exchangeInfo"
ORDER = "/fapi/v1/order"
OPEN_ORDERS = "/fapi/v1/openOrders"
ALL_ORDERS = "/fapi/v1/allOrders"
USER_TRADES = "/fapi/v1/userTrades"
POSITION_RISK = "/fapi/v2/positionRisk"
LISTEN_KEY = "/fapi/v1/listenKey"
PREMIUM_INDEX = "/fapi/v1/premiumIndex"


def sim_urls(host: str, port: int) -> tuple[str, str]:
    """REST and websocket base of the local exchange (``ofi exchange``)."""
    host = "127.0.0.1" if host in ("0.0.0.0", "", None) else host
    return f"http://{host}:{port}", f"ws://{host}:{port}"


def user_stream_url(ws_base: str, listen_key: str, route: str = "private") -> str:
    """The user data stream URL: routed ``/private/ws/<key>`` or legacy ``/ws/<key>``."""
    base = ws_base.rstrip("/")
    for suffix in ("/ws", "/stream", "/private", "/public", "/market"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    if route == "private":
        return f"{base}/private/ws/{listen_key}"
    return f"{base}/ws/{listen_key}"
