"""Binance-style rate limits: request weight per IP per minute, orders per account per 10 s and
per minute, 429 with Retry-After when exceeded, and a 418 ban when a client keeps going."""
from __future__ import annotations

from . import errors

# (method, path) -> request weight; openOrders is 1 with a symbol, 40 without (see weight())
WEIGHTS = {
    ("GET", "/fapi/v1/ping"): 1, ("GET", "/fapi/v1/time"): 1,
    ("GET", "/fapi/v1/exchangeInfo"): 1, ("GET", "/fapi/v1/ticker/bookTicker"): 2,
    ("GET", "/fapi/v1/ticker/price"): 1, ("GET", "/fapi/v2/ticker/price"): 1,
    ("GET", "/fapi/v1/ticker/24hr"): 1, ("GET", "/fapi/v1/premiumIndex"): 1,
    ("GET", "/fapi/v1/trades"): 5, ("GET", "/fapi/v1/aggTrades"): 20,
    ("POST", "/fapi/v1/order"): 0, ("POST", "/fapi/v1/order/test"): 0,
    ("GET", "/fapi/v1/order"): 1, ("DELETE", "/fapi/v1/order"): 1,
    ("GET", "/fapi/v1/openOrder"): 1, ("DELETE", "/fapi/v1/allOpenOrders"): 1,
    ("GET", "/fapi/v1/allOrders"): 5, ("GET", "/fapi/v1/userTrades"): 5,
    ("POST", "/fapi/v1/leverage"): 1, ("GET", "/fapi/v1/leverageBracket"): 1,
    ("GET", "/fapi/v2/positionRisk"): 5, ("GET", "/fapi/v3/positionRisk"): 5,
    ("GET", "/fapi/v2/account"): 5, ("GET", "/fapi/v3/account"): 5,
    ("GET", "/fapi/v2/balance"): 5, ("GET", "/fapi/v3/balance"): 5,
    ("POST", "/fapi/v1/listenKey"): 1, ("PUT", "/fapi/v1/listenKey"): 1,
    ("DELETE", "/fapi/v1/listenKey"): 1, ("GET", "/fapi/v1/positionSide/dual"): 30,
    ("POST", "/fapi/v1/marginType"): 1, ("GET", "/fapi/v1/rateLimit/order"): 1,
    ("POST", "/fapi/v1/algoOrder"): 0, ("DELETE", "/fapi/v1/algoOrder"): 1,
    ("GET", "/fapi/v1/algoOrder"): 1, ("DELETE", "/fapi/v1/algoOpenOrders"): 1,
    ("GET", "/fapi/v1/allAlgoOrders"): 5, ("POST", "/fapi/v1/countdownCancelAll"): 10,
    ("GET", "/fapi/v1/income"): 30, ("POST", "/fapi/v1/positionSide/dual"): 1,
}


def weight(method: str, path: str, params: dict) -> int:
    """The request weight of one REST call."""
    if path == "/fapi/v1/depth":
        limit = int(params.get("limit") or 500) if str(params.get("limit") or "500").isdigit() else 500
        return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20
    if path in ("/fapi/v1/openOrders", "/fapi/v1/openAlgoOrders"):
        return 1 if params.get("symbol") else 40
    if path == "/fapi/v1/ticker/bookTicker" and not params.get("symbol"):
        return 5
    return WEIGHTS.get((method, path), 1)


class RateLimiter:
    """Fixed one-minute (and ten-second) windows, as Binance counts them."""

    def __init__(self, weight_limit=2400, order_limit=1200, order_limit_10s=300,
                 ban_after=3, ban_s=120.0):
        self.weight_limit = weight_limit
        self.order_limit = order_limit
        self.order_limit_10s = order_limit_10s
        self.ban_after = ban_after
        self.ban_s = ban_s
        self._ip: dict[str, list] = {}        # ip -> [window, used, strikes, banned_until_ms]
        self._orders: dict[str, list] = {}    # account -> [win1m, n1m, win10s, n10s]

    def rate_limits(self) -> list[dict]:
        """The exchangeInfo ``rateLimits`` list."""
        return [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
             "limit": self.weight_limit},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1,
             "limit": self.order_limit},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
             "limit": self.order_limit_10s},
        ]

    def request(self, ip: str, w: int, now_ms: int) -> int:
        """Count a request's weight; raise 418 while banned, 429 when over. Returns the weight used."""
        st = self._ip.get(ip)
        window = now_ms // 60000
        if st is None:
            st = self._ip[ip] = [window, 0, 0, 0]
        if st[3] > now_ms:
            raise errors.banned(st[3], max(1, -(-(st[3] - now_ms) // 1000)))
        if st[0] != window:
            st[0], st[1], st[2] = window, 0, 0
        st[1] += w
        if st[1] > self.weight_limit:
            st[2] += 1
            if st[2] > self.ban_after:
                st[3] = now_ms + int(self.ban_s * 1000)
                raise errors.banned(st[3], max(1, int(self.ban_s)))
            raise errors.too_many_requests(self.weight_limit,
                                           max(1, -(-((window + 1) * 60000 - now_ms) // 1000)))
        return st[1]

    def used(self, ip: str, now_ms: int) -> int:
        st = self._ip.get(ip)
        if st is None or st[0] != now_ms // 60000:
            return 0
        return st[1]

    def order(self, account: str, now_ms: int) -> tuple[int, int]:
        """Count a new order; raise 429 (-1015) when over. Returns (count 10 s, count 1 min)."""
        st = self._orders.get(account)
        w1, w10 = now_ms // 60000, now_ms // 10000
        if st is None:
            st = self._orders[account] = [w1, 0, w10, 0]
        if st[0] != w1:
            st[0], st[1] = w1, 0
        if st[2] != w10:
            st[2], st[3] = w10, 0
        if st[3] >= self.order_limit_10s:
            raise errors.too_many_orders(self.order_limit_10s, "10s",
                                         max(1, -(-((w10 + 1) * 10000 - now_ms) // 1000)))
        if st[1] >= self.order_limit:
            raise errors.too_many_orders(self.order_limit, "1m",
                                         max(1, -(-((w1 + 1) * 60000 - now_ms) // 1000)))
        st[1] += 1
        st[3] += 1
        return st[3], st[1]

    def order_counts(self, account: str, now_ms: int) -> tuple[int, int]:
        st = self._orders.get(account)
        if st is None:
            return 0, 0
        return (st[3] if st[2] == now_ms // 10000 else 0), (st[1] if st[0] == now_ms // 60000 else 0)
