"""The wallet check: the venue's USDT wallet balance against the broker's journal.

Pure, clock injected. Between two reads, the wallet balance (``GET /fapi/v2/balance``) must
have changed by what these explain, within :data:`TOLERANCE`:

- the journal: realized PnL - fees + funding of the broker's symbols (``journal_money``);
- the venue's income rows of ours (``GET /fapi/v1/income``: REALIZED_PNL, COMMISSION and
  FUNDING_FEE of our symbols) that the journal has not recorded yet: pending, a fill or a
  payment on its way (the caller says which rows it holds: funding by ``tranId``, fills by
  ``tradeId``);
- every other income row: transfers, other symbols of the account.

Rows newer than the balance's ``updateTime`` wait for the next read. A row of ours still
missing from the journal after :data:`PENDING_S`, or the same unexplained difference on two
reads in a row, is a problem (the caller halts trading); it is reported once, and the check goes
on from the wallet as it is. Fees paid in another asset (BNB) are not modelled.
"""
from __future__ import annotations

from dataclasses import dataclass, field

TOLERANCE = 0.01        # USDT
#: income the journal explains (fills and funding of the broker's symbols)
JOURNAL_INCOME = ("REALIZED_PNL", "COMMISSION", "FUNDING_FEE")
OVERLAP_MS = 60_000     # income rows are read again this far back (ids dedupe)
PENDING_S = 60.0        # a row of ours the journal still lacks after this is a problem
RECHECK_S = 2.0         # an unexplained difference is read again after this long


@dataclass(frozen=True)
class Verdict:
    """What one read says: ``ok``; else ``problem`` (one line, halt) or ``recheck`` (read
    again in :data:`RECHECK_S`); ``pending_funding``: a payment the journal has not read."""

    ok: bool
    problem: str = ""
    recheck: bool = False
    pending_funding: bool = False
    unexplained: float = 0.0


@dataclass
class WalletCheck:
    """The reference (balance, journal money, since when, income rows already in it) and the
    rows of ours waiting for the journal."""

    symbols: tuple[str, ...]
    balance: float | None = None
    journal: float = 0.0
    since_ms: int = 0
    seen: frozenset = frozenset()
    pending: dict = field(default_factory=dict)   # tranId -> when first seen waiting
    suspect: float | None = None
    checks: int = 0                                # reads the journal explained

    @property
    def started(self) -> bool:
        return self.balance is not None

    def ours(self, row: dict) -> bool:
        return row.get("symbol") in self.symbols and row.get("incomeType") in JOURNAL_INCOME

    def start(self, balance: float, rows: list[dict], journal: float, has, now: float) -> None:
        """The reference at start: ``rows`` are the recent income rows (all in ``balance``);
        those of ours the journal lacks (paid while the broker was down, not read yet) count
        when it records them. ``has(row)``: does the journal hold this row of ours?"""
        lacking = [r for r in rows if self.ours(r) and not has(r)]
        self.balance = balance - sum(_amount(r) for r in lacking)
        self.journal = journal
        self.since_ms = int(now * 1000)
        self.seen = frozenset(r.get("tranId") for r in rows) - {r.get("tranId") for r in lacking}

    def read_from_ms(self) -> int:
        """The income rows to read: from this time on."""
        return self.since_ms - OVERLAP_MS

    def judge(self, balance: float, rows: list[dict], updated_ms: int, journal: float, has,
              now: float) -> Verdict:
        """One read: the balance, the income rows from :meth:`read_from_ms`, the balance's
        ``updateTime`` (0: unknown) and the journal's money now."""
        other = pending = 0.0
        late, waiting = [], {}
        for r in rows:
            tid, t = r.get("tranId"), int(r.get("time") or 0)
            if tid in self.seen or t < self.since_ms - OVERLAP_MS or (updated_ms and t > updated_ms):
                continue      # in the reference, too old, or newer than the balance read
            if not self.ours(r):
                other += _amount(r)
            elif not has(r):
                pending += _amount(r)
                since = waiting[tid] = self.pending.get(tid, now)
                if now - since > PENDING_S:
                    late.append(f"{r.get('incomeType')} {_amount(r):+.8f} (tranId {tid}, "
                                f"{r.get('symbol')})")
        self.pending = waiting
        pending_funding = any(r.get("incomeType") == "FUNDING_FEE" and r.get("tranId") in waiting
                              for r in rows)
        diff = (balance - self.balance) - (journal - self.journal) - other - pending
        recent = frozenset(r.get("tranId") for r in rows   # in the balance just read
                           if int(r.get("time") or 0) >= int(now * 1000) - OVERLAP_MS
                           and r.get("tranId") not in waiting
                           and not (updated_ms and int(r.get("time") or 0) > updated_ms))
        if late:
            # reported once: from the wallet as it is, those rows included
            problem = (f"venue income not in the journal for over {PENDING_S:g} s: "
                       + "; ".join(late[:5]))
            self._move(balance, journal, now, recent | set(waiting))
            self.pending = {}
            return Verdict(False, problem=problem, unexplained=diff)
        if abs(diff) <= TOLERANCE:
            self.checks += 1
            if not waiting:   # the reference moves only when the journal holds everything
                self._move(balance, journal, now, recent)
            self.suspect = None
            return Verdict(True, pending_funding=pending_funding)
        if self.suspect is not None and abs(self.suspect - diff) <= 1e-6:
            problem = (f"USDT wallet balance {balance:.8f} changed by "
                       f"{balance - self.balance:+.8f} since the reference; the journal explains "
                       f"{journal - self.journal:+.8f}, its pending venue income "
                       f"{pending:+.8f} and other income {other:+.8f}: {diff:+.8f} unexplained")
            self._move(balance - pending, journal, now, recent)
            return Verdict(False, problem=problem, unexplained=diff)
        # a row may have landed between the balance and the income reads: look again
        self.suspect = diff
        return Verdict(False, recheck=True, pending_funding=pending_funding, unexplained=diff)

    def _move(self, balance: float, journal: float, now: float, seen: frozenset) -> None:
        self.balance, self.journal, self.since_ms = balance, journal, int(now * 1000)
        self.seen = frozenset(seen)
        self.suspect = None


def _amount(row: dict) -> float:
    return float(row.get("income") or 0.0) if row.get("asset", "USDT") == "USDT" else 0.0
