"""Binance USD-M error codes, messages and HTTP statuses, as the venue sends them.

Every business rejection is an :class:`ApiError`; the HTTP layer turns it into
``{"code": <int>, "msg": <str>}`` with the status Binance uses (400 for request and business
errors, 401 for key problems, 429/418 for rate limits, 503 for unknown execution status).
"""
from __future__ import annotations


class ApiError(Exception):
    """A rejection with a Binance error code, message and HTTP status."""

    def __init__(self, code: int, msg: str, status: int = 400, headers: dict | None = None):
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status
        self.headers = headers or {}

    def body(self) -> dict:
        return {"code": self.code, "msg": self.msg}


TIMEOUT_MSG = ("Timeout waiting for response from backend server. "
               "Send status unknown; execution status unknown.")


def unknown() -> ApiError:
    return ApiError(-1000, "An unknown error occured while processing the request.", 500)


def too_many_requests(limit: int, retry_after: int) -> ApiError:
    return ApiError(-1003, f"Too many requests; current limit of IP is {limit} requests per "
                    "minute. Please use the websocket for live updates to avoid polling the API.",
                    429, {"Retry-After": str(retry_after)})


def banned(until_ms: int, retry_after: int) -> ApiError:
    return ApiError(-1003, f"Way too many requests; IP banned until {until_ms}. Please use the "
                    "websocket for live updates to avoid bans.", 418, {"Retry-After": str(retry_after)})


def too_many_orders(limit: int, interval: str, retry_after: int) -> ApiError:
    # an order-count 429 carries no Retry-After on Binance; we send one anyway (harmless)
    return ApiError(-1015, f"Too many new orders; current limit is {limit} orders per {interval}.",
                    429, {"Retry-After": str(retry_after)})


def timeout_unknown() -> ApiError:
    return ApiError(-1007, TIMEOUT_MSG, 503)


def service_unavailable(status: int = 503) -> ApiError:
    msgs = {500: "Request occur unknown error.", 502: "Request occur unknown error.",
            503: "Service Unavailable."}
    return ApiError(-1001 if status != 503 else -1008, msgs.get(status, "Request occur unknown error."),
                    status)


def invalid_timestamp(ahead: bool) -> ApiError:
    if ahead:
        return ApiError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
    return ApiError(-1021, "Timestamp for this request is outside of the recvWindow.")


def bad_signature() -> ApiError:
    return ApiError(-1022, "Signature for this request is not valid.")


def duplicate_values() -> ApiError:
    # -1101 TOO_MANY_PARAMETERS (Binance names no parameter in this message)
    return ApiError(-1101, "Duplicate values for a parameter detected.")


def mandatory(name: str) -> ApiError:
    return ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def illegal_chars(name: str, legal: str) -> ApiError:
    return ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '{legal}'.")


def bad_precision() -> ApiError:
    return ApiError(-1111, "Precision is over the maximum defined for this asset.")


def invalid_tif() -> ApiError:
    return ApiError(-1115, "Invalid timeInForce.")


def invalid_order_type() -> ApiError:
    return ApiError(-1116, "Invalid orderType.")


def invalid_side() -> ApiError:
    return ApiError(-1117, "Invalid side.")


def bad_symbol() -> ApiError:
    return ApiError(-1121, "Invalid symbol.")


def invalid_listen_key() -> ApiError:
    return ApiError(-1125, "This listenKey does not exist. Please use `POST /fapi/v1/listenKey` "
                    "to recreate `listenKey`")


def cancel_rejected() -> ApiError:
    return ApiError(-2011, 'Unknown order sent.')


def no_such_order() -> ApiError:
    return ApiError(-2013, "Order does not exist.")


def rejected_key() -> ApiError:
    return ApiError(-2015, "Invalid API-key, IP, or permissions for action.", 401)


def margin_insufficient() -> ApiError:
    return ApiError(-2019, "Margin is insufficient.")


def reduce_only_rejected() -> ApiError:
    return ApiError(-2022, "ReduceOnly Order is rejected.")


def max_open_orders() -> ApiError:
    return ApiError(-2025, "Reach max open order limit.")


def qty_not_positive() -> ApiError:
    return ApiError(-4003, "Quantity less than or equal to zero.")


def qty_below_min() -> ApiError:
    return ApiError(-4004, "Quantity less than min quantity.")


def qty_above_max() -> ApiError:
    return ApiError(-4005, "Quantity greater than max quantity.")


def price_below_min() -> ApiError:
    return ApiError(-4013, "Price less than min price.")


def price_not_tick() -> ApiError:
    return ApiError(-4014, "Price not increased by tick size.")


def client_order_id_invalid() -> ApiError:
    return ApiError(-4015, "Client order id is not valid.")


def price_above_cap() -> ApiError:
    return ApiError(-4016, "Price is higher than mark price multiplier cap.")


def qty_not_step() -> ApiError:
    return ApiError(-4023, "Qty not increased by step size.")


def price_below_floor() -> ApiError:
    return ApiError(-4024, "Price is lower than mark price multiplier floor.")


def price_above_max() -> ApiError:
    return ApiError(-4002, "Price greater than max price.")


def invalid_leverage(lev) -> ApiError:
    return ApiError(-4028, f"Leverage {lev} is not valid")


def position_side_mismatch() -> ApiError:
    return ApiError(-4061, "Order's position side does not match user's setting.")


def duplicate_client_order_id() -> ApiError:
    return ApiError(-4116, "clientOrderId is duplicated.")


def stop_order_switch_algo() -> ApiError:
    return ApiError(-4120, "Order type not supported for this endpoint. Please use the Algo Order "
                    "API endpoints instead.")


def min_notional(notional: str) -> ApiError:
    return ApiError(-4164, f"Order's notional must be no smaller than {notional} (unless you choose "
                    "reduce only).")


def fok_rejected() -> ApiError:
    return ApiError(-5021, "Due to the order could not be filled immediately, the FOK order has been "
                    "rejected. The order will not be recorded in the order history")


def gtx_rejected() -> ApiError:
    return ApiError(-5022, "Due to the order could not be executed as maker, the Post Only order will "
                    "be rejected. The order will not be recorded in the order history")


def invalid_param(name: str) -> ApiError:
    return ApiError(-1130, f"Data sent for parameter '{name}' is not valid.")


def not_required(name: str) -> ApiError:
    return ApiError(-1106, f"Parameter '{name}' sent when not required.")


def quantity_with_close_position() -> ApiError:
    return ApiError(-4137, "Quantity must be zero with closePosition equals true")


def would_immediately_trigger() -> ApiError:
    return ApiError(-2021, "Order would immediately trigger.")


def max_stop_orders() -> ApiError:
    return ApiError(-4045, "Reach max stop order limit.")
