"""Request parameters as Binance USD-M reads them, over real HTTP: query string, form body (with
or without a Content-Type), both mixed, the signature over query + body, and the refusals."""
import http.client
import json
import time

import pytest

from daemons.tools.exchange import signing
from exchange_harness import KEY, SECRET, start_exchange

pytestmark = pytest.mark.timeout(60)

FORM = "application/x-www-form-urlencoded"


def _send(port, method, path, query="", body="", ctype=None, sign=None):
    """One raw request; ``sign`` = "both" (query + body), "query", "body" or None.

    The signature goes last into the body when there is one, else into the query string."""
    if sign:
        payload = {"both": query + body, "query": query, "body": body}[sign]
        sig = "signature=" + signing.sign(SECRET, payload)
        if body:
            body += "&" + sig
        else:
            query += ("&" if query else "") + sig
    headers = {"X-MBX-APIKEY": KEY}
    if ctype:
        headers["Content-Type"] = ctype
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path + (f"?{query}" if query else ""), body=body.encode() or None,
                     headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _ts():
    return f"timestamp={int(time.time() * 1000)}"


ORDER_Q = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC"


def _order_body(cid, qty="0.010"):
    return f"quantity={qty}&price=60000.0&newClientOrderId={cid}&{_ts()}"


@pytest.fixture
def port(procs, home):
    return start_exchange(procs, home)[1]


@pytest.mark.parametrize("tag,ctype", [("form", FORM), ("charset", FORM + "; charset=UTF-8"),
                                       ("none", None)])
def test_requests_form_body_alone_or_mixed_with_query_any_content_type(port, tag, ctype):
    # everything in the body
    status, r = _send(port, "POST", "/fapi/v1/order",
                      body=f"{ORDER_Q}&{_order_body('body-' + tag)}", ctype=ctype, sign="body")
    assert (status, r["status"], r["clientOrderId"]) == (200, "NEW", "body-" + tag)
    # mixed: the signature covers the query string followed by the body, no separator
    status, r = _send(port, "POST", "/fapi/v1/order", query=ORDER_Q,
                      body=_order_body("mixed-" + tag), ctype=ctype, sign="both")
    assert (status, r["status"], r["origQty"], r["side"]) == (200, "NEW", "0.010", "BUY")
    # DELETE with the parameters in the body
    status, r = _send(port, "DELETE", "/fapi/v1/order",
                      body=f"symbol=BTCUSDT&origClientOrderId=mixed-{tag}&{_ts()}", ctype=ctype,
                      sign="body")
    assert (status, r["status"]) == (200, "CANCELED")
    status, r = _send(port, "GET", "/fapi/v1/openOrders", query=f"symbol=BTCUSDT&{_ts()}",
                      sign="query")
    assert status == 200 and [o["clientOrderId"] for o in r] == ["body-" + tag]


def test_requests_query_wins_a_parameter_sent_in_both(port):
    status, r = _send(port, "POST", "/fapi/v1/order", query=ORDER_Q + "&quantity=0.010",
                      body=_order_body("both-places", qty="0.020"), ctype=FORM, sign="both")
    assert (status, r["origQty"]) == (200, "0.010")


def test_requests_signature_must_cover_query_and_body(port):
    status, r = _send(port, "POST", "/fapi/v1/order", query=ORDER_Q, body=_order_body("q-only"),
                      ctype=FORM, sign="query")
    assert (status, r["code"]) == (400, -1022)
    status, r = _send(port, "POST", "/fapi/v1/order", query=ORDER_Q, body=_order_body("b-only"),
                      sign="body")
    assert (status, r["code"]) == (400, -1022)


def test_requests_missing_signature_is_1102(port):
    status, r = _send(port, "POST", "/fapi/v1/order", query=ORDER_Q, body=_order_body("unsigned"),
                      ctype=FORM)
    assert (status, r) == (400, {"code": -1102, "msg": "Mandatory parameter 'signature' was not "
                                                       "sent, was empty/null, or malformed."})


@pytest.mark.parametrize("where", ["query", "body"])
def test_requests_parameter_repeated_is_1101(port, where):
    dup = "&price=61000.0"
    query, body = ORDER_Q, _order_body(f"dup-{where}")
    if where == "query":
        query += "&price=60000.0" + dup
        body = body.replace("price=60000.0&", "")
    else:
        body += dup
    status, r = _send(port, "POST", "/fapi/v1/order", query=query, body=body, ctype=FORM,
                      sign="both")
    assert (status, r) == (400, {"code": -1101,
                                 "msg": "Duplicate values for a parameter detected."})
    status, r = _send(port, "GET", "/fapi/v1/openOrders", query=f"symbol=BTCUSDT&{_ts()}",
                      sign="query")
    assert r == []


def test_requests_body_binance_does_not_read_is_missing(port):
    # a GET reads its query string only
    status, r = _send(port, "GET", "/fapi/v1/openOrders", body=f"symbol=BTCUSDT&{_ts()}",
                      ctype=FORM, sign="body")
    assert (status, r["code"]) == (400, -1102)
    # a JSON body is not parameters
    body = json.dumps({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.010",
                       "timestamp": int(time.time() * 1000)})
    status, r = _send(port, "POST", "/fapi/v1/order", body=body, ctype="application/json")
    assert (status, r["code"]) == (400, -1102)
    # an empty body with a JSON Content-Type (binance-futures-connector) is fine
    status, r = _send(port, "GET", "/fapi/v1/openOrders", query=f"symbol=BTCUSDT&{_ts()}",
                      ctype="application/json;charset=utf-8", sign="query")
    assert (status, r) == (200, [])


def test_requests_listen_key_with_form_body_parameters(port):
    status, r = _send(port, "POST", "/fapi/v1/listenKey")
    lk = r["listenKey"]
    assert status == 200 and lk
    status, r = _send(port, "PUT", "/fapi/v1/listenKey", body=f"listenKey={lk}")
    assert (status, r) == (200, {"listenKey": lk})
    status, r = _send(port, "DELETE", "/fapi/v1/listenKey", body=f"listenKey={lk}", ctype=FORM)
    assert (status, r) == (200, {})
