"""The ``late`` fault: a new order answered 503 -1007 (or a stalled connection) that reaches the
matching engine seconds later; the client order id rule around it; seeded determinism."""
import json
import time

import pytest
import requests
from websockets.sync.client import connect

from daemons.tools.exchange import errors, faults, signing
from exchange_harness import KEY, SECRET, start_exchange, stop_exchange, um_client, wait_for

pytestmark = pytest.mark.timeout(60)

FAST = "late_min_ms=300,late_max_ms=600"


def _now():
    return int(time.time() * 1000)


def _signed(port, method, path, params, timeout=10):
    q = "&".join(f"{k}={v}" for k, v in {**params, "timestamp": _now()}.items())
    q += "&signature=" + signing.sign(SECRET, q)
    return requests.request(method, f"http://127.0.0.1:{port}{path}?{q}",
                            headers={"X-MBX-APIKEY": KEY}, timeout=timeout)


def _order(port, cid, **kw):
    params = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.010",
              "price": "62000.0", "timeInForce": "GTC", "newClientOrderId": cid, **kw}
    if params["type"] == "MARKET":
        del params["price"], params["timeInForce"]
    return _signed(port, "POST", "/fapi/v1/order", params)


def _query(port, cid):
    return _signed(port, "GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "origClientOrderId": cid})


def _cancel(port, order_id):
    return _signed(port, "DELETE", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": order_id})


def _all_orders(port):
    return _signed(port, "GET", "/fapi/v1/allOrders", {"symbol": "BTCUSDT"}).json()


def _counts(home):
    path = home / "run" / "exchange.json"
    return json.loads(path.read_text())["faults"] if path.exists() else {}


def test_late_order_answered_1007_absent_then_placed_and_reported_on_the_user_stream(procs, home):
    _, port, _ = start_exchange(procs, home, "--faults", f"late=1,{FAST},seed=5")
    c = um_client(port)
    lk = c.new_listen_key()["listenKey"]
    with connect(f"ws://127.0.0.1:{port}/ws/{lk}") as ws:
        sent = _now()
        r = _order(port, "late-rest")
        assert (r.status_code, r.json()) == (503, {"code": -1007, "msg": errors.TIMEOUT_MSG})
        m = _order(port, "late-fill", type="MARKET")
        assert m.status_code == 503 and m.json()["code"] == -1007
        # the hazard: until it lands the venue knows nothing of it
        assert (_query(port, "late-rest").status_code, _query(port, "late-rest").json()["code"]) \
            == (400, -2013)
        assert _signed(port, "GET", "/fapi/v1/openOrders", {"symbol": "BTCUSDT"}).json() == []
        assert _signed(port, "DELETE", "/fapi/v1/order", {"symbol": "BTCUSDT",
                                                          "origClientOrderId": "late-rest"}
                       ).json()["code"] == -2011
        rest = wait_for(lambda: _query(port, "late-rest").status_code == 200
                        and _query(port, "late-rest").json(), timeout=5)
        fill = wait_for(lambda: (_query(port, "late-fill").json().get("status") == "FILLED"
                                 and _query(port, "late-fill").json()), timeout=5)
        events = []
        while not (any(e["e"] == "ACCOUNT_UPDATE" for e in events)
                   and any(e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["c"] == "late-rest"
                           for e in events)):
            events.append(json.loads(ws.recv(timeout=5)))
    # placed as sent then: same client id, the times of the landing, resting or filled as usual
    assert rest["status"] == "NEW" and rest["time"] >= sent + 300
    assert [o["clientOrderId"] for o in c.get_orders(symbol="BTCUSDT")] == ["late-rest"]
    assert fill["executedQty"] == "0.010" and fill["time"] >= sent + 300
    assert c.get_position_risk(symbol="BTCUSDT")[0]["positionAmt"] == "0.010"
    ups = [e["o"] for e in events if e["e"] == "ORDER_TRADE_UPDATE"]
    assert {(u["c"], u["x"]) for u in ups} >= {("late-rest", "NEW"), ("late-fill", "NEW"),
                                              ("late-fill", "TRADE")}
    counts = wait_for(lambda: _counts(home).get("late_landed") == 2 and _counts(home), timeout=5)
    assert counts["late503"] == 2 and "late_rejected" not in counts


def test_late_timeout_mode_stalls_and_closes_then_the_order_lands(procs, home):
    _, port, _ = start_exchange(procs, home, "--faults",
                                f"late=1,late_mode=timeout,timeout_s=1,{FAST}")
    t0 = time.monotonic()
    with pytest.raises(requests.exceptions.ConnectionError):
        _order(port, "stalled-late")
    assert time.monotonic() - t0 >= 0.9
    got = wait_for(lambda: _query(port, "stalled-late").status_code == 200
                   and _query(port, "stalled-late").json(), timeout=5)
    assert got["status"] == "NEW"
    assert wait_for(lambda: _counts(home).get("late_timeout"), timeout=5) == 1


def test_late_resend_while_pending_executes_twice(procs, home):
    _, port, _ = start_exchange(procs, home, "--faults", f"late=1,{FAST}")
    assert _order(port, "twice", type="MARKET").status_code == 503
    assert _query(port, "twice").json()["code"] == -2013        # "not found": resent, same id
    assert _order(port, "twice", type="MARKET").status_code == 503
    both = wait_for(lambda: [o for o in _all_orders(port) if o["status"] == "FILLED"]
                    if len(_all_orders(port)) == 2 else None, timeout=5)
    assert [o["clientOrderId"] for o in both] == ["twice", "twice"]
    assert both[0]["orderId"] != both[1]["orderId"]
    pos = _signed(port, "GET", "/fapi/v3/positionRisk", {"symbol": "BTCUSDT"}).json()
    assert pos[0]["positionAmt"] == "0.020"
    # two resting ones with one id: each is listed, a query answers the older
    assert _order(port, "pair").status_code == 503
    assert _order(port, "pair").status_code == 503
    wait_for(lambda: len(_signed(port, "GET", "/fapi/v1/openOrders",
                                 {"symbol": "BTCUSDT"}).json()) == 2, timeout=5)
    opened = _signed(port, "GET", "/fapi/v1/openOrders", {"symbol": "BTCUSDT"}).json()
    assert _query(port, "pair").json()["orderId"] == opened[0]["orderId"]
    # while one with the id is open, a new one is refused when it arrives (not late then)
    assert _order(port, "pair").json()["code"] == -4116
    _cancel(port, opened[0]["orderId"])
    assert _query(port, "pair").json()["orderId"] == opened[1]["orderId"]
    assert _order(port, "pair").json()["code"] == -4116
    _cancel(port, opened[1]["orderId"])
    assert _order(port, "pair").status_code == 503                # closed: the id is free again


def test_late_refused_request_is_answered_at_once_and_never_lands(procs, home):
    _, port, _ = start_exchange(procs, home, "--faults", f"late=1,{FAST}")
    r = _order(port, "bad-tick", price="62000.05")
    assert r.json()["code"] == -4014
    time.sleep(0.8)
    assert _all_orders(port) == []
    assert "late503" not in _counts(home)


def test_client_order_id_reusable_once_the_first_is_closed(procs, home):
    _, port, _ = start_exchange(procs, home)
    first = _order(port, "again", type="MARKET", newOrderRespType="RESULT").json()
    second = _order(port, "again", type="MARKET", newOrderRespType="RESULT").json()
    assert first["status"] == second["status"] == "FILLED"
    assert first["orderId"] != second["orderId"]
    assert [o["clientOrderId"] for o in _all_orders(port)] == ["again", "again"]
    # a query by client id answers the latest one
    assert _query(port, "again").json()["orderId"] == second["orderId"]
    rest = _order(port, "open-1").json()
    assert rest["status"] == "NEW"
    assert _order(port, "open-1").json() == {"code": -4116, "msg": "clientOrderId is duplicated."}
    _cancel(port, rest["orderId"])
    again = _order(port, "open-1").json()
    assert again["status"] == "NEW" and again["orderId"] != rest["orderId"]


def _outcomes(port, n=24):
    out = []
    for i in range(n):
        r = _order(port, f"d-{i}")
        out.append((r.status_code, r.json().get("code")))
    return out


def test_late_draws_reproducible_by_seed_over_http(procs, home, tmp_path):
    spec = f"late=0.3,unknown503=0.2,http5xx=0.1,seed=5,{FAST},weight_limit=100000"
    runs = []
    for n in range(2):
        h = tmp_path / f"h{n}"
        h.mkdir()
        p, port, _ = start_exchange(procs, h, "--faults", spec)
        outcomes = _outcomes(port)
        at_once = {o["clientOrderId"] for o in _all_orders(port)}
        time.sleep(1.0)
        later = {o["clientOrderId"] for o in _all_orders(port)}
        runs.append((outcomes, at_once, later))
        stop_exchange(p)
    assert runs[0] == runs[1]
    outcomes, at_once, later = runs[0]
    answered_1007 = {f"d-{i}" for i, (s, code) in enumerate(outcomes) if code == -1007}
    late = later - at_once
    assert late and late <= answered_1007              # late ones: 503 -1007, absent, then there
    assert answered_1007 - late                        # unknown503 ones: there at once


def _plan(text):
    return faults.FaultPlan(faults.parse(text))


def test_late_fault_spec_parses_and_refuses_bad_values():
    spec = faults.parse("late=0.2,late_mode=MIXED,late_min_ms=300,late_max_ms=600")
    assert (spec.late, spec.late_mode, spec.late_min_ms, spec.late_max_ms) == (0.2, "mixed",
                                                                               300.0, 600.0)
    d = faults.FaultSpec()
    assert (d.late, d.late_mode, d.late_min_ms, d.late_max_ms) == (0.0, "503", 4000.0, 12000.0)
    for bad in ("late=2", "late_mode=slow", "late_min_ms=900,late_max_ms=100", "late_max_ms=-1"):
        with pytest.raises(ValueError) as exc:
            faults.parse(bad)
        assert "\n" not in str(exc.value)


def test_late_draws_seeded_with_delays_in_range_and_other_families_unchanged():
    text = "late=0.4,late_mode=mixed,late_min_ms=300,late_max_ms=600,seed=9"
    a, b = _plan(text), _plan(text)
    seq = [a.late() for _ in range(300)]
    assert seq == [b.late() for _ in range(300)]
    kinds = {x[0] for x in seq if x}
    assert kinds == {"late503", "late_timeout"}
    assert all(0.3 <= x[1] <= 0.6 for x in seq if x)
    assert 80 < sum(1 for x in seq if x) < 160
    assert [x[0] for x in (_plan("late=1,seed=9").late() for _ in range(5))] == ["late503"] * 5
    assert _plan("late=0,seed=9").late() is None

    # the request loop of the exchange: a late order uses up its order-fault draw unused
    def run(plan):
        out = []
        for _ in range(300):
            before = plan.rest()
            if before:
                out.append(before)
                continue
            late = plan.late()
            if late:
                plan.skip_order()
                out.append("late")
                continue
            out.append(plan.order())
        return out

    base = run(_plan("http5xx=0.1,unknown503=0.2,timeout=0.1,seed=9"))
    mixed = run(_plan("http5xx=0.1,unknown503=0.2,timeout=0.1,late=0.3,seed=9"))
    assert "late" in mixed
    assert all(m == b for m, b in zip(mixed, base) if m != "late")
