"""The wallet check (daemons/broker/wallet.py), pure: what explains a wallet balance change."""
from daemons.broker.wallet import PENDING_S, WalletCheck

T = 1_000_000.0


def _row(tid, kind, amount, t, symbol="BTCUSDT", trade=None):
    return {"tranId": tid, "incomeType": kind, "income": str(amount), "asset": "USDT",
            "symbol": symbol, "time": int(t * 1000), "tradeId": trade}


def test_rows_newer_than_the_balance_wait_for_the_next_read():
    w = WalletCheck(("BTCUSDT",))
    w.start(1000.0, [], 0.0, lambda r: False, T)
    # a transfer landed after the balance was read: not in it yet, not counted yet
    v = w.judge(1000.0, [_row(1, "TRANSFER", 50.0, T + 2, symbol="")], int((T + 1) * 1000),
                0.0, lambda r: False, T + 3)
    assert v.ok
    v = w.judge(1050.0, [_row(1, "TRANSFER", 50.0, T + 2, symbol="")], int((T + 2) * 1000),
                0.0, lambda r: False, T + 4)
    assert v.ok and w.checks == 2


def test_a_fill_on_its_way_is_pending_then_explained_by_the_journal():
    w = WalletCheck(("BTCUSDT",))
    w.start(1000.0, [], 0.0, lambda r: False, T)
    rows = [_row(7, "REALIZED_PNL", 3.0, T + 1, trade=70), _row(8, "COMMISSION", -0.1, T + 1,
                                                                  trade=70)]
    v = w.judge(1002.9, rows, 0, 0.0, lambda r: False, T + 2)   # the journal lacks the fill
    assert v.ok and set(w.pending) == {7, 8}
    v = w.judge(1002.9, rows, 0, 2.9, lambda r: True, T + 3)     # now it has it
    assert v.ok and w.pending == {}


def test_a_row_the_journal_never_gets_and_money_gone_without_a_row_are_problems():
    w = WalletCheck(("BTCUSDT",))
    w.start(1000.0, [], 0.0, lambda r: False, T)
    rows = [_row(9, "FUNDING_FEE", -1.0, T + 1)]
    v = w.judge(999.0, rows, 0, 0.0, lambda r: False, T + 2)
    assert v.ok and v.pending_funding
    v = w.judge(999.0, rows, 0, 0.0, lambda r: False, T + 3 + PENDING_S)
    assert not v.ok and "tranId 9" in v.problem
    v = w.judge(994.0, rows, 0, 0.0, lambda r: False, T + 70)      # 5 USDT gone, no row
    assert v.recheck and not v.problem
    v = w.judge(994.0, rows, 0, 0.0, lambda r: False, T + 72)
    assert "-5.00000000 unexplained" in v.problem
