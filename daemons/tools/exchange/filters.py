"""Symbol specifications, exchangeInfo, and the order filters (pure functions).

Prices and quantities are held as integers in units of 10^-pricePrecision and
10^-quantityPrecision ("price units", "qty units"), so that formatting and tick/step checks are
exact. Filter values are real-looking (close to Binance's for the known symbols).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from . import errors

DECIMAL_RE = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")
DECIMAL_LEGAL = "^([0-9]{1,20})(\\.[0-9]{1,20})?$"
ORDER_TYPES = ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
               "TRAILING_STOP_MARKET"]
TIME_IN_FORCE = ["GTC", "IOC", "FOK", "GTX", "GTD"]


@dataclass(frozen=True)
class SymbolSpec:
    """Static trading rules of one symbol (units: see the module docstring)."""

    symbol: str
    base: str
    quote: str
    pp: int                  # pricePrecision: decimals of price units
    qp: int                  # quantityPrecision: decimals of qty units
    tick: int                # tickSize in price units
    step: int                # stepSize in qty units
    min_price: int
    max_price: int
    min_qty: int
    max_qty: int
    market_max_qty: int
    min_notional: int        # in whole quote units (USDT)
    mult_up: str = "1.0500"
    mult_down: str = "0.9500"
    start_price: str = "100"
    max_num_orders: int = 200
    onboard_ms: int = 1569398400000

    # --- conversions ---------------------------------------------------------------------
    def fmt_price(self, units: int) -> str:
        return fmt_units(units, self.pp)

    def fmt_qty(self, units: int) -> str:
        return fmt_units(units, self.qp)

    def price_units(self, text: str, name: str = "price") -> int:
        return parse_units(text, self.pp, name)

    def qty_units(self, text: str, name: str = "quantity") -> int:
        return parse_units(text, self.qp, name)

    def notional(self, price_units: int, qty_units: int) -> Decimal:
        """price * qty in quote currency, exact."""
        return Decimal(price_units * qty_units).scaleb(-(self.pp + self.qp))

    def price_dec(self, units: int) -> Decimal:
        return Decimal(units).scaleb(-self.pp)

    def qty_dec(self, units: int) -> Decimal:
        return Decimal(units).scaleb(-self.qp)


def fmt_units(units: int, prec: int) -> str:
    """Integer units of 10^-prec as a fixed-point decimal string."""
    if prec == 0:
        return str(units)
    sign = "-" if units < 0 else ""
    units = abs(units)
    scale = 10 ** prec
    return f"{sign}{units // scale}.{units % scale:0{prec}d}"


def parse_units(text: str, prec: int, name: str = "value") -> int:
    """A decimal string as integer units of 10^-prec; -1100 on bad text, -1111 on excess precision."""
    text = (text or "").strip()
    neg = text.startswith("-")
    body = text[1:] if neg else text
    if not DECIMAL_RE.match(body):
        raise errors.illegal_chars(name, DECIMAL_LEGAL)
    whole, _, frac = body.partition(".")
    frac = frac.rstrip("0")
    if len(frac) > prec:
        raise errors.bad_precision()
    units = int(whole) * 10 ** prec + (int(frac.ljust(prec, "0")) if prec else 0)
    return -units if neg else units


def _spec(symbol, base, pp, qp, tick, step, min_price, max_price, max_qty, market_max_qty,
          min_notional, start_price, min_qty=None, **kw) -> SymbolSpec:
    return SymbolSpec(symbol=symbol, base=base, quote="USDT", pp=pp, qp=qp, tick=tick, step=step,
                      min_price=min_price, max_price=max_price,
                      min_qty=step if min_qty is None else min_qty, max_qty=max_qty,
                      market_max_qty=market_max_qty, min_notional=min_notional,
                      start_price=start_price, **kw)


# Values close to Binance's live filters (they drift; clients must read exchangeInfo).
KNOWN: dict[str, SymbolSpec] = {s.symbol: s for s in (
    _spec("BTCUSDT", "BTC", 2, 3, 10, 1, 26130, 452976400, 1000_000, 120_000, 100, "65000.00"),
    _spec("ETHUSDT", "ETH", 2, 3, 1, 1, 3943, 30680000, 10000_000, 2000_000, 20, "3400.00"),
    _spec("BNBUSDT", "BNB", 3, 2, 10, 1, 6600, 2000000, 100000, 2000_00, 5, "580.000"),
    _spec("SOLUSDT", "SOL", 4, 0, 100, 1, 42000, 20000000, 1000000, 5000, 5, "150.0000"),
    _spec("XRPUSDT", "XRP", 4, 1, 1, 1, 143, 1000000, 10000000, 2000000, 5, "0.6000"),
)}


def spec_for(symbol: str) -> SymbolSpec:
    """The known spec, or a generic one (tick 0.0001, step 0.1) for any other *USDT symbol."""
    symbol = symbol.upper()
    if symbol in KNOWN:
        return KNOWN[symbol]
    base = symbol[:-4] if symbol.endswith("USDT") else symbol
    return _spec(symbol, base, 4, 1, 1, 1, 1, 2000000000, 100000000, 10000000, 5, "1.0000")


def symbol_info(spec: SymbolSpec) -> dict:
    """The exchangeInfo entry of one symbol, with Binance's field names and string decimals."""
    return {
        "symbol": spec.symbol, "pair": spec.symbol, "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000, "onboardDate": spec.onboard_ms, "status": "TRADING",
        "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
        "baseAsset": spec.base, "quoteAsset": spec.quote, "marginAsset": spec.quote,
        "pricePrecision": spec.pp, "quantityPrecision": spec.qp, "baseAssetPrecision": 8,
        "quotePrecision": 8, "underlyingType": "COIN", "underlyingSubType": ["PoW"],
        "settlePlan": 0, "triggerProtect": "0.0500",
        "liquidationFee": "0.012500", "marketTakeBound": "0.05", "maxMoveOrderLimit": 10000,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": spec.fmt_price(spec.min_price),
             "maxPrice": spec.fmt_price(spec.max_price), "tickSize": spec.fmt_price(spec.tick)},
            {"filterType": "LOT_SIZE", "minQty": spec.fmt_qty(spec.min_qty),
             "maxQty": spec.fmt_qty(spec.max_qty), "stepSize": spec.fmt_qty(spec.step)},
            {"filterType": "MARKET_LOT_SIZE", "minQty": spec.fmt_qty(spec.min_qty),
             "maxQty": spec.fmt_qty(spec.market_max_qty), "stepSize": spec.fmt_qty(spec.step)},
            {"filterType": "MAX_NUM_ORDERS", "limit": spec.max_num_orders},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": str(spec.min_notional)},
            {"filterType": "PERCENT_PRICE", "multiplierUp": spec.mult_up,
             "multiplierDown": spec.mult_down, "multiplierDecimal": "4"},
        ],
        "orderTypes": list(ORDER_TYPES),
        "timeInForce": list(TIME_IN_FORCE),
        "permissionSets": ["GRID", "COPY"],
    }


def exchange_info(specs, rate_limits: list[dict], server_ms: int) -> dict:
    """GET /fapi/v1/exchangeInfo."""
    return {
        "timezone": "UTC", "serverTime": server_ms, "futuresType": "U_MARGINED",
        "rateLimits": rate_limits, "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
        "symbols": [symbol_info(s) for s in specs],
    }


# --- validation --------------------------------------------------------------------------

def check_price(spec: SymbolSpec, price: int) -> None:
    """PRICE_FILTER: bounds and tick."""
    if price <= 0:
        raise errors.ApiError(-4001, "Price less than 0.")
    if price < spec.min_price:
        raise errors.price_below_min()
    if price > spec.max_price:
        raise errors.price_above_max()
    if (price - spec.min_price) % spec.tick:
        raise errors.price_not_tick()


def check_qty(spec: SymbolSpec, qty: int, market: bool) -> None:
    """LOT_SIZE (or MARKET_LOT_SIZE for market orders): bounds and step."""
    if qty <= 0:
        raise errors.qty_not_positive()
    if qty < spec.min_qty:
        raise errors.qty_below_min()
    if qty > (spec.market_max_qty if market else spec.max_qty):
        raise errors.qty_above_max()
    if (qty - spec.min_qty) % spec.step:
        raise errors.qty_not_step()


def check_notional(spec: SymbolSpec, price: int, qty: int, reduce_only: bool) -> None:
    """MIN_NOTIONAL: price (the mark price for market orders) times qty, unless reduce-only."""
    if reduce_only:
        return
    if spec.notional(price, qty) < spec.min_notional:
        raise errors.min_notional(str(spec.min_notional))


def check_percent_price(spec: SymbolSpec, side: str, price: int, mark: int) -> None:
    """PERCENT_PRICE: a BUY at most mark*multiplierUp, a SELL at least mark*multiplierDown."""
    if mark <= 0:
        return
    if side == "BUY" and Decimal(price) > Decimal(mark) * Decimal(spec.mult_up):
        raise errors.price_above_cap()
    if side == "SELL" and Decimal(price) < Decimal(mark) * Decimal(spec.mult_down):
        raise errors.price_below_floor()
