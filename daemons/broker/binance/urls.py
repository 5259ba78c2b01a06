"""The endpoint paths of Binance USD-M futures (base URLs per mode: ``daemons.venue``).

Sources: developers.binance.com derivatives/usds-margined-futures general-info,
websocket-market-streams (routed /public /market /private paths), user-data-streams.
"""
from __future__ import annotations

from urllib.parse import urlsplit

TIME = "/fapi/v1/time"
EXCHANGE_INFO = "/fapi/v1/exchangeInfo"
ORDER = "/fapi/v1/order"
OPEN_ORDERS = "/fapi/v1/openOrders"
ALL_ORDERS = "/fapi/v1/allOrders"
COUNTDOWN_CANCEL_ALL = "/fapi/v1/countdownCancelAll"
INCOME = "/fapi/v1/income"
ALGO_ORDER = "/fapi/v1/algoOrder"
OPEN_ALGO_ORDERS = "/fapi/v1/openAlgoOrders"
POSITION_MODE = "/fapi/v1/positionSide/dual"
LEVERAGE = "/fapi/v1/leverage"
MARGIN_TYPE = "/fapi/v1/marginType"
USER_TRADES = "/fapi/v1/userTrades"
POSITION_RISK = "/fapi/v2/positionRisk"
BALANCE = "/fapi/v2/balance"
LISTEN_KEY = "/fapi/v1/listenKey"
PREMIUM_INDEX = "/fapi/v1/premiumIndex"
WS_API_PATH = "/ws-fapi/v1"     # the WebSocket API (order.place, order.cancel, order.status)


def user_stream_url(ws_base: str, listen_key: str, route: str = "private") -> str:
    """The user data stream URL: routed ``/private/ws/<key>`` or legacy ``/ws/<key>``."""
    base = ws_base.rstrip("/")
    for suffix in ("/ws", "/stream", "/private", "/public", "/market"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    if route == "private":
        return f"{base}/private/ws/{listen_key}"
    return f"{base}/ws/{listen_key}"


def market_stream_url(ws_base: str, streams) -> str:
    """A combined market stream on the routed ``/market`` path (``markPrice`` lives there)."""
    base = ws_base.rstrip("/")
    for suffix in ("/ws", "/stream", "/private", "/public", "/market"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return f"{base}/market/stream?streams={'/'.join(streams)}"


def ws_api_url(rest_url: str) -> str:
    """The WebSocket API URL that goes with a REST base URL: Binance's own for its hosts
    (production fapi -> ws-fapi.binance.com, testnet and demo -> testnet.binancefuture.com),
    else the same host and port with ws(s):// and ``/ws-fapi/v1`` (``ofi exchange``, a proxy),
    so a venue differs only by its base URL."""
    from ... import venue

    host = venue.host_of(rest_url) or ""
    if host in ("testnet.binancefuture.com", "demo-fapi.binance.com"):
        return venue.WS_API["testnet"]
    if venue.is_production(rest_url):
        return venue.WS_API["live"]
    parts = urlsplit(rest_url if "//" in rest_url else "//" + rest_url)
    scheme = "wss" if parts.scheme in ("https", "wss") else "ws"
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}{WS_API_PATH}"
