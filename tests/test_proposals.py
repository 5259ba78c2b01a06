"""The proposal logic of the MCP gateway (pure), and the strategy's side of a decision."""
from __future__ import annotations

import pytest

from bus import BadRecord
from conftest import typed_settings
from daemons import proposals as P
from daemons.tools.gateway import calls
from daemons.strategy import risk, rules
from daemons.strategy.core import StrategyCore
from daemons.trading import ACTIVE, HALTED, TradingState

SYMS = ("BTCUSDT", "ETHUSDT")


def _submit(**kw):
    args = {"symbol": "BTCUSDT", "side": "BUY", "qty": 0.001, **kw}
    return P.validate_submit(args, SYMS, "ofi")


def test_validate_submit_normalizes_and_refuses_with_one_line():
    o = _submit(symbol="btcusdt", side="sell", order_type="limit", price=60000, client_order_id="a-1")
    assert o == {"action": "submit", "client_order_id": "a-1", "symbol": "BTCUSDT", "side": "SELL",
                 "qty": 0.001, "order_type": "LIMIT", "price": 60000.0, "reduce_only": False}
    bad = [
        ({"symbol": "XRPUSDT"}, "not traded here"),
        ({"side": "HOLD"}, "side must be BUY or SELL"),
        ({"qty": 0}, "qty must be a positive"),
        ({"qty": float("nan")}, "qty must be a positive"),
        ({"qty": True}, "qty must be a number"),
        ({"qty": None}, "qty is required"),
        ({"order_type": "STOP"}, "order_type must be MARKET or LIMIT"),
        ({"order_type": "LIMIT"}, "price is required"),
        ({"price": 5.0}, "MARKET order takes no price"),
        ({"reduce_only": "yes"}, "reduce_only must be true or false"),
        ({"client_order_id": "has space"}, "client_order_id must match"),
        ({"client_order_id": "x" * 37}, "client_order_id must match"),
        ({"client_order_id": "ofi-BTCUSDT-1"}, "strategy's id space"),
    ]
    for kw, why in bad:
        with pytest.raises(P.ProposalError) as exc:
            _submit(**kw)
        assert why in str(exc.value) and "\n" not in str(exc.value), kw


def test_validate_cancel_needs_an_open_order():
    opens = {"L1": {"symbol": "BTCUSDT", "side": "BUY", "qty": 0.002, "order_type": "LIMIT",
                    "price": 59000.0, "reduce_only": False, "status": "NEW"}}
    c = P.validate_cancel({"client_order_id": "L1"}, opens)
    assert c["action"] == "cancel" and c["symbol"] == "BTCUSDT" and c["client_order_id"] == "L1"
    with pytest.raises(P.ProposalError, match="no open order"):
        P.validate_cancel({"client_order_id": "L2"}, opens)


def _ledger_with(order, pid="P1", ts=1_000, ttl_s=60.0):
    rec = {"seq": int(pid[1:]), "ts": ts, **P.proposal_payload(order, pid, ts, ttl_s, "sim", 60000.0)}
    led = P.Ledger()
    led.add_proposal(rec)
    return led, rec


def test_states_pending_approved_sent_rejected_expired_denied():
    order = _submit(client_order_id="m-1")
    led, _ = _ledger_with(order)
    assert led.state("P1", 2_000) == P.PENDING
    assert led.state("P1", 61_000) == P.EXPIRED          # not decided within the ttl
    dec = P.decide(led, "P1", True, 2_000, "ofi:alice", "ok")
    assert dec["decision"] == "approved" and dec["client_order_id"] == "m-1"
    assert dec["qty"] == 0.001 and dec["symbol"] == "BTCUSDT" and dec["action"] == "submit"
    led.add_decision({"seq": 1, "ts": 2_000, **dec})
    assert led.state("P1", 2_000) == P.APPROVED
    assert led.state("P1", 99_000) == P.APPROVED         # decided: never expires
    with pytest.raises(P.ProposalError, match="is approved"):
        P.decide(led, "P1", False, 3_000, "ofi:bob")     # decided once
    led.add_intent({"seq": 7, "ts": 2_100, "type": "intent", "proposal_id": "P1"})
    assert led.state("P1", 3_000) == P.SENT
    assert led.view("P1", 3_000)["outcome"]["intent_seq"] == 7

    led2, _ = _ledger_with(order)
    led2.add_decision({"seq": 1, "ts": 2, **P.decide(led2, "P1", False, 2_000, "ofi:a", "no")})
    assert led2.state("P1", 2_000) == P.REJECTED
    with pytest.raises(P.ProposalError, match="only a pending"):
        P.decide(led2, "P1", True, 2_000, "ofi:a")
    led3, _ = _ledger_with(order)
    with pytest.raises(P.ProposalError, match="expired"):
        P.decide(led3, "P1", True, 61_000, "ofi:a")
    led3.add_decision({"seq": 1, "ts": 2, **P.decide(led3, "P1", True, 2_000, "ofi:a")})
    led3.add_intent({"seq": 8, "ts": 3, "type": "risk_denied", "proposal_id": "P1",
                     "code": "halted", "detail": "trading is HALTED"})
    assert led3.state("P1", 3_000) == P.DENIED
    with pytest.raises(P.ProposalError, match="no proposal"):
        P.decide(led3, "P9", True, 1, "x")


def test_client_order_id_is_the_idempotency_key():
    order = _submit(client_order_id="m-1")
    led, rec = _ledger_with(order)
    assert led.find("submit", "m-1")["id"] == "P1"
    assert P.same_order(led.find("submit", "m-1"), _submit(client_order_id="m-1"))
    assert not P.same_order(led.find("submit", "m-1"), _submit(client_order_id="m-1", qty=0.002))
    led.add_proposal(dict(rec, seq=2, id="P2"))    # a second record with the key: the first wins
    assert led.find("submit", "m-1")["id"] == "P1"
    assert led.find("cancel", "m-1") is None
    # the fold over records gives the same ledger whatever the order of the topics
    a = P.fold([rec], [], [])
    assert a.view("P1", 2_000) == led.view("P1", 2_000)


def test_make_client_order_id_fits_binance():
    cid = P.make_client_order_id("mcp", 12, 1_796_536_129_259)
    assert P.CLIENT_ID_RE.match(cid) and cid.startswith("mcp-") and cid.endswith("-12")


def test_risk_view_and_reference_price():
    assert P.risk_view(None) == 0.0
    rec = {"qty": 0.002, "in_flight": [{"side": "SELL", "qty": 0.001}, {"side": "BUY", "qty": 0.003}]}
    assert P.risk_view(rec) == pytest.approx(0.004)
    assert P.reference_price({"price": 10.0}, 20.0, 30.0) == 10.0
    assert P.reference_price({"price": None}, None, 30.0) == 30.0
    assert P.reference_price({"price": None}, None, None) is None


def test_rate_limit_window():
    rl = calls.RateLimit(2)
    assert rl.allow(0.0) and rl.allow(1.0) and not rl.allow(2.0)
    assert rl.allow(60.5)          # the first call left the window
    assert all(calls.RateLimit(0).allow(float(t)) for t in range(100))


def test_redact_masks_secret_names_and_values():
    args = {"symbol": "BTCUSDT", "api_key": "K", "nested": {"apiSecret": "S", "signature": "x"},
            "note": "my key is abcd1234 ok"}
    out = calls.redact(args, secrets=("abcd1234",))
    assert out["api_key"] == "***" and out["nested"]["apiSecret"] == "***"
    assert out["nested"]["signature"] == "***" and out["note"] == "my key is *** ok"
    assert out["symbol"] == "BTCUSDT"
    assert calls.strip_userinfo("https://u:p@host:1/x") == "https://host:1/x"
    assert calls.one_line("a\nb") == "a"


def test_report_summary_reads_the_summary_table():
    md = ("# OFI pipeline report\n\n## Summary\n\n| Metric | Value |\n|---|---:|\n"
          "| Net PnL | -1.2000 |\n| Fills | 4 |\n\n## PnL\n\n| Metric | Value |\n| x | y |\n")
    assert calls.report_summary(md) == {"Net PnL": "-1.2000", "Fills": "4"}


# -- the strategy's side -------------------------------------------------------------------------
def _core(**limits):
    lim = risk.Limits(**{"max_position_usdt": 1000.0, "max_order_usdt": 500.0,
                         "max_orders_per_minute": 30, "daily_loss_limit_usdt": 200.0,
                         "max_drawdown_usdt": 0.0, **limits})
    params = rules.Params.from_settings(typed_settings(strategy={
        "entry_threshold": 1.5, "exit_threshold": 0.0, "notional_usdt": 250.0, "max_hold_s": 120.0,
        "stop_loss_bps": 50.0, "cooldown_s": 5.0, "order_type": "MARKET",
        "exit_order_type": "MARKET", "instruments": []}).strategy)
    core = StrategyCore(params, lim, "ofi", ["BTCUSDT"], 2000)
    core.last_price["BTCUSDT"] = 60000.0
    return core


def _decision(pid="P1", ts=10_000, **kw):
    order = {**_submit(client_order_id="m-1"), **kw}
    return {"seq": 1, "ts": ts, "type": "decision", "proposal_id": pid, "decision": "approved",
            "by": "ofi:alice", "reason": "", **order}


def test_approved_submit_becomes_one_intent_through_the_risk_check():
    core = _core()
    step = core.on_decision(_decision(), TradingState(ACTIVE), 10_050, 60_000)
    (p,) = step.payloads
    assert p["type"] == "intent" and p["client_order_id"] == "m-1" and p["proposal_id"] == "P1"
    assert p["origin"] == "operator" and p["qty"] == 0.001 and p["decision_ms"] == 10_050
    assert core.views["BTCUSDT"].qty == pytest.approx(0.001)     # the view counts it
    # the same decision again (a re-delivery) gives nothing
    assert core.on_decision(_decision(), TradingState(ACTIVE), 10_060, 60_000).payloads == []
    # rejected decisions give nothing
    rej = dict(_decision("P2"), decision="rejected")
    assert core.on_decision(rej, TradingState(ACTIVE), 10_060, 60_000).payloads == []


def test_approved_submit_is_denied_like_any_intent():
    core = _core()
    (p,) = core.on_decision(_decision(), TradingState(HALTED, "manual"), 10_050, 60_000).payloads
    assert p["type"] == "risk_denied" and p["code"] == "halted" and p["proposal_id"] == "P1"
    (p,) = _core().on_decision(_decision(qty=0.1), TradingState(ACTIVE), 10_050, 60_000).payloads
    assert p["type"] == "risk_denied" and p["code"] == "max_order_notional"
    (p,) = _core().on_decision(_decision(), TradingState(ACTIVE), 80_000, 60_000).payloads
    assert p["type"] == "risk_denied" and p["code"] == "expired"
    with pytest.raises(BadRecord):
        _core().on_decision(_decision(side="HOLD"), TradingState(ACTIVE), 10_050, 60_000)


def test_approved_cancel_becomes_a_cancel_intent_and_restart_remembers_used_proposals():
    core = _core()
    dec = dict(_decision("P3"), action="cancel", client_order_id="L1")
    (p,) = core.on_decision(dec, TradingState(HALTED), 10_050, 60_000).payloads
    assert p == {"type": "cancel", "client_order_id": "L1", "symbol": "BTCUSDT",
                 "reason": "operator cancel (P3)", "origin": "operator", "proposal_id": "P3",
                 "decision_ms": 10_050}
    # a restart: the snapshot, or the intents replayed, say P3 was used
    fresh = _core()
    fresh.restore(core.snapshot(), same_signals=True)
    assert fresh.on_decision(dec, TradingState(ACTIVE), 10_060, 60_000).payloads == []
    replayed = _core()
    replayed.replay_intent({"seq": 5, "ts": 10_050, **p}, 10_060)
    assert replayed.on_decision(dec, TradingState(ACTIVE), 10_060, 60_000).payloads == []
