"""A compiled depth book: :class:`FastDepthTerms` is :class:`~daemons.signal.depth_terms.DepthTerms`
with the level bookkeeping, the top-levels read and the multi-level OFI term in numba.

Same interface and same results: the same items (merge keys, times, terms), ``gaps``,
``stalls``, ``frontier`` and ``prev``. The Binance sync rules (buffering until a snapshot, at most
:data:`~.book.MAX_BUFFER` diffs; bridging; the ``pu`` chain of USD-M, ``U``/``u`` of spot;
gaps), the merge keys and the silences stay in Python, written as in :class:`~.book.LocalBook`
and :class:`~daemons.signal.depth_terms.DepthTerms`; one compiled call per applied diff parses
its levels, applies them, reads the top ``levels`` of each side and returns the term against the
previous top.

Exactness. The levels of a diff are joined into one ASCII text (``" ".join``, C speed) that the
compiled code parses: a number written as decimal digits with at most one point is an integer
mantissa ``m`` with ``k`` decimals, and ``m / 10**k`` in float64 is ``float(text)`` whenever
``m < 2**53`` and ``k <= 22`` (two exact operands, one correctly rounded division: the fast path
of every correct strtod). A price is that float, a quantity ``rint(m / 10**k * 1e8)``, which is
``round(float(q) * SCALE)`` (both round half to even), and a quantity removes its level when it
is one of :data:`~.book._ZEROS`' strings (``"0"``, ``"0."`` with 1 to 16 zeros), as in the book.
Any other text (another format, more digits, a level that is not two strings) goes through a
Python parse to the same values (``float``, ``round``, ``in _ZEROS``) and the same compiled
application. Terms are int64 sums (quantities of 2**53 or more, in 1e-8 units, are refused);
the first term after a snapshot, or against a ``prev`` given to the constructor, is computed by
:func:`~daemons.signal.core.side_term` itself.

The book: per side an open-addressing hash table (price -> quantity in 1e-8 units) and a small
sorted cache of the best prices (as :class:`~.book._Side`: every price at or better than its
edge, at least ``levels`` of them when the side has that many). Prices are held as int64 keys in
price order (the float's bits, negative ones flipped; asks negated, so that on both sides the
best key is the largest), which is how the top levels are compared in the term.

Compiled with ``cache=True``: the first use in a fresh environment compiles (some seconds);
later processes load the machine code from numba's cache (``__pycache__`` next to this file, or
the user-wide cache / ``NUMBA_CACHE_DIR`` when that is not writable). Importing this module
needs numba.
"""
from __future__ import annotations

import math
from collections import deque
from itertools import chain

import numpy as np
from numba import njit

from ..signal.core import DEPTH, SCALE, side_term
from .book import _ZEROS, MAX_BUFFER, snapshot_top
from .merge import STALL_MS

_NEG_INF = float("-inf")
_from_iterable = chain.from_iterable

# -- compiled part ---------------------------------------------------------------------------
# ist (int64), the book's scalars and the previous top; ``s``: 0 bids, 1 asks
_SIZE = 0       # + s: prices held
_NB = 2         # + s: prices in the cache
_EDGE = 4       # + s: the cache holds every key >= edge (_EMPTY: all of them)
_PLEN = 6       # + s: levels in the previous top
_OWN = 8        # 1: the previous top below is the book's own (0: Python's, see FastDepthTerms)
_N = 9          # levels read
_CACHE = 10     # prices kept in the cache after a refill or a trim
_SHIFT = 11     # 64 - log2(table capacity)
_PK = 12        # previous top keys: bids [_PK, _PK + n), asks [_PK + n, _PK + 2n)
# then the previous top quantities at _PK + 2n (same layout)

_EMPTY = -(1 << 63)           # a free table slot; the edge of a cache holding all prices
_PAD = _EMPTY + 1             # the key of a missing level (a -inf bid, a +inf ask)
_FLIP = (1 << 63) - 1
_GONE = -(1 << 63)            # the quantity of a removed level in parsed levels
_ERR = -(1 << 63)             # returned by the compiled apply on text it does not take
_MAX_Q = 1 << 53              # quantities (1e-8 units) the int64 terms sum safely

_P10 = np.array([10.0 ** i for i in range(23)])   # exact powers of ten in float64
_GOLD = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, inline="always")
def _order(bits):
    """float64 bits -> an int64 in the float's order."""
    return bits if bits >= 0 else bits ^ _FLIP


@njit(cache=True, inline="always")
def _slot(x, shift):
    return np.int64((np.uint64(x) * _GOLD) >> np.uint64(shift))


@njit(cache=True, inline="always")
def _find(table, s, x, shift):
    mask = table.shape[1] - 1
    i = _slot(x, shift)
    while True:
        k = table[s, i, 0]
        if k == x:
            return i
        if k == _EMPTY:
            return -1
        i = (i + 1) & mask


@njit(cache=True, inline="always")
def _set(table, ist, s, x, v, shift):
    """Set ``x`` -> ``v``; true if ``x`` is new."""
    mask = table.shape[1] - 1
    i = _slot(x, shift)
    while True:
        k = table[s, i, 0]
        if k == x:
            table[s, i, 1] = v
            return False
        if k == _EMPTY:
            table[s, i, 0] = x
            table[s, i, 1] = v
            ist[_SIZE + s] += 1
            return True
        i = (i + 1) & mask


@njit(cache=True)
def _remove(table, ist, s, x, shift):
    """Remove ``x`` (linear probing, backward-shift deletion); true if it was there."""
    i = _find(table, s, x, shift)
    if i < 0:
        return False
    mask = table.shape[1] - 1
    j = i
    while True:
        j = (j + 1) & mask
        k = table[s, j, 0]
        if k == _EMPTY:
            break
        h = _slot(k, shift)
        if i <= j:
            if i < h <= j:
                continue
        elif h > i or h <= j:
            continue
        table[s, i, 0] = k
        table[s, i, 1] = table[s, j, 1]
        i = j
    table[s, i, 0] = _EMPTY
    ist[_SIZE + s] -= 1
    return True


@njit(cache=True)
def _refill(table, best, ist, s):
    """Refill the cache from the table (it fell below ``levels`` prices)."""
    size = ist[_SIZE + s]
    tmp = np.empty(size, np.int64)
    c = 0
    for i in range(table.shape[1]):
        k = table[s, i, 0]
        if k != _EMPTY:
            tmp[c] = k
            c += 1
    tmp.sort()
    k = ist[_CACHE]
    if size <= k:
        best[s, :size] = tmp
        ist[_NB + s] = size
        ist[_EDGE + s] = _EMPTY
    else:
        best[s, :k] = tmp[size - k:]
        ist[_NB + s] = k
        ist[_EDGE + s] = tmp[size - k]


@njit(cache=True)
def _cache_insert(best, ist, s, x):
    nb = ist[_NB + s]
    if nb == best.shape[1]:    # full: keep the best ``cache`` prices
        k = ist[_CACHE]
        d = nb - k
        for i in range(k):
            best[s, i] = best[s, i + d]
        nb = k
        ist[_NB + s] = nb
        ist[_EDGE + s] = best[s, 0]
        if x < best[s, 0]:
            return
    lo, hi = 0, nb
    while lo < hi:
        mid = (lo + hi) >> 1
        if best[s, mid] < x:
            lo = mid + 1
        else:
            hi = mid
    for i in range(nb, lo, -1):
        best[s, i] = best[s, i - 1]
    best[s, lo] = x
    ist[_NB + s] = nb + 1


@njit(cache=True)
def _cache_delete(best, ist, s, x):
    nb = ist[_NB + s]
    lo, hi = 0, nb
    while lo < hi:
        mid = (lo + hi) >> 1
        if best[s, mid] < x:
            lo = mid + 1
        else:
            hi = mid
    for i in range(lo, nb - 1):
        best[s, i] = best[s, i + 1]
    ist[_NB + s] = nb - 1


@njit(cache=True)
def _apply_side(table, best, ist, s, keys, qv, lo, hi):
    """Levels ``lo:hi`` (keys, quantities; _GONE: removed) to side ``s``."""
    shift = ist[_SHIFT]
    for j in range(lo, hi):
        x = keys[j]
        v = qv[j]
        if v == _GONE:
            if _remove(table, ist, s, x, shift) and x >= ist[_EDGE + s]:
                _cache_delete(best, ist, s, x)
        elif _set(table, ist, s, x, v, shift) and x >= ist[_EDGE + s]:
            _cache_insert(best, ist, s, x)
    if ist[_NB + s] < ist[_N] and ist[_SIZE + s] > ist[_NB + s]:
        _refill(table, best, ist, s)


@njit(cache=True)
def _top_term(table, best, ist):
    """Each side's top into the previous-top slots; the term against the previous top (0 when
    that one is Python's)."""
    n = ist[_N]
    shift = ist[_SHIFT]
    own = ist[_OWN] == 1
    pq0 = _PK + 2 * n
    e = 0
    for s in range(2):
        nb = ist[_NB + s]
        c = n if nb > n else nb
        plen = ist[_PLEN + s]
        for i in range(n):
            if i < c:
                k = best[s, nb - 1 - i]
                q = table[s, _find(table, s, k, shift), 1]
            else:
                k = _PAD
                q = 0
            if own:
                if i < plen:
                    pk = ist[_PK + s * n + i]
                    pq = ist[pq0 + s * n + i]
                else:
                    pk = _PAD
                    pq = 0
                # bids: p >= p' -> +q, p <= p' -> -q'; asks: p <= p' -> -q, p >= p' -> +q'
                if s == 0:
                    if k >= pk:
                        e += q
                    if k <= pk:
                        e -= pq
                else:
                    if k >= pk:
                        e -= q
                    if k <= pk:
                        e += pq
            ist[_PK + s * n + i] = k
            ist[pq0 + s * n + i] = q
        ist[_PLEN + s] = c
    ist[_OWN] = 1
    return e


@njit(cache=True)
def _parse(buf, pos, count, nbid, keys, qv):
    """``count`` price, quantity pairs (bids first) from ``buf[pos:]``, each number followed by
    a space or the end -> keys, quantities; the position after them, or -1 if any is not plain
    decimal text (then none of them is used)."""
    end = len(buf)
    for j in range(2 * count):
        if pos > end:
            return -1
        start = pos
        m = 0
        nd = 0
        k = -1
        while pos < end:
            c = buf[pos]
            if c == 32:
                break
            if 48 <= c <= 57:
                m = m * 10 + (c - 48)
                nd += 1
                if k >= 0:
                    k += 1
            elif c == 46 and k < 0:
                k = 0
            else:
                return -1
            pos += 1
        if nd == 0 or nd > 18 or m >= 9007199254740992:
            return -1
        if k < 0:
            k = 0
        if k > 22:
            return -1
        f = m / _P10[k]
        i = j >> 1
        if j & 1 == 0:
            o = _order(np.float64(f).view(np.int64))
            keys[i] = o if i < nbid else -o
        else:
            ln = pos - start
            if buf[start] == 48 and m == 0 and (ln == 1 or (3 <= ln <= 18
                                                           and buf[start + 1] == 46)):
                qv[i] = _GONE
            else:
                v = np.rint(f * 1e8)
                if v >= 9007199254740992.0:
                    return -1
                qv[i] = np.int64(v)
        pos += 1     # the separator (or one past the end)
    return pos


@njit(cache=True)
def _apply_text(table, best, ist, buf, nbid, nask):
    """One diff, its levels as text (bids first) -> the term; _ERR if the text is not plain."""
    count = nbid + nask
    keys = np.empty(count, np.int64)
    qv = np.empty(count, np.int64)
    pos = _parse(buf, 0, count, nbid, keys, qv)
    if pos < 0 or pos < len(buf) or (count > 0 and pos != len(buf) + 1):
        return _ERR
    _apply_side(table, best, ist, 0, keys, qv, 0, nbid)
    _apply_side(table, best, ist, 1, keys, qv, nbid, count)
    return _top_term(table, best, ist)


@njit(cache=True)
def _to_keys(pf, nbid):
    """Prices (float64, +0.0 for zero) -> keys (asks from ``nbid`` on)."""
    keys = np.empty(len(pf), np.int64)
    for i in range(len(pf)):
        o = _order(np.float64(pf[i]).view(np.int64))
        keys[i] = o if i < nbid else -o
    return keys


@njit(cache=True)
def _apply_parsed(table, best, ist, pf, qv, nbid):
    """As :func:`_apply_text`, the levels parsed in Python."""
    keys = _to_keys(pf, nbid)
    _apply_side(table, best, ist, 0, keys, qv, 0, nbid)
    _apply_side(table, best, ist, 1, keys, qv, nbid, len(keys))
    return _top_term(table, best, ist)


@njit(cache=True)
def _load_side(table, best, ist, s, pf, qv):
    """Side ``s`` := snapshot levels (quantity -1: not held, the quantity was <= 0)."""
    table[s, :, 0] = _EMPTY
    ist[_SIZE + s] = 0
    keys = _to_keys(pf, len(pf) if s == 0 else 0)
    shift = ist[_SHIFT]
    for j in range(len(keys)):
        if qv[j] >= 0:
            _set(table, ist, s, keys[j], qv[j], shift)
    ist[_NB + s] = 0
    ist[_EDGE + s] = _EMPTY
    _refill(table, best, ist, s)


@njit(cache=True)
def _clear(table, ist):
    table[:, :, 0] = _EMPTY
    for s in range(2):
        ist[_SIZE + s] = 0
        ist[_NB + s] = 0
        ist[_EDGE + s] = _EMPTY


@njit(cache=True)
def _rehash(table, new, ist):
    """Both sides into the larger ``new`` table (``ist[_SHIFT]`` already its own)."""
    new[:, :, 0] = _EMPTY
    shift = ist[_SHIFT]
    for s in range(2):
        ist[_SIZE + s] = 0
        for i in range(table.shape[1]):
            k = table[s, i, 0]
            if k != _EMPTY:
                _set(new, ist, s, k, table[s, i, 1], shift)


# -- Python part -----------------------------------------------------------------------------
def _py_levels(raw, pf, qv, at: int) -> None:
    """The general parse of diff levels (the values the compiled one gives plain text)."""
    for j, (p, q) in enumerate(raw, at):
        f = float(p) + 0.0
        if q in _ZEROS:
            v = _GONE
        else:
            v = round(float(q) * SCALE)
            if not -_MAX_Q < v < _MAX_Q:
                raise ValueError(f"depth quantity out of range: {q!r}")
        if not math.isfinite(f):
            raise ValueError(f"depth price out of range: {p!r}")
        pf[j] = f
        qv[j] = v


def _py_snapshot_levels(raw):
    """Snapshot levels -> (prices, quantities in 1e-8 units; -1 where the quantity is <= 0)."""
    ps, qs = [], []
    for p, q in raw:
        fq = float(q)
        f = float(p) + 0.0
        if fq > 0.0:
            v = round(fq * SCALE)
            if not (math.isfinite(f) and v < _MAX_Q):
                raise ValueError(f"depth level out of range: {p!r} {q!r}")
        else:
            v = -1
        ps.append(f)
        qs.append(v)
    return np.array(ps, np.float64), np.array(qs, np.int64)


def _prices(keys: np.ndarray) -> list:
    """Bid keys -> prices (floats)."""
    return np.where(keys >= 0, keys, keys ^ _FLIP).view(np.float64).tolist()


class _Outcome:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


_BUFFERED, _DROPPED, _GAP = _Outcome("buffered"), _Outcome("dropped"), _Outcome("gap")


class FastDepthTerms:
    """:class:`~daemons.signal.depth_terms.DepthTerms` on a compiled book (the same results)."""

    def __init__(self, levels: int, prev=None, stall_ms: int = STALL_MS,
                 max_buffer: int = MAX_BUFFER):
        self.n = n = int(levels)
        if n < 1:
            raise ValueError("levels must be at least 1")
        self.stall_ms = int(stall_ms)
        self.stalls: list[dict] = []
        self.frontier = _NEG_INF
        self.items: list = []
        self.gaps = 0
        # the previous top: Python's (the constructor's, a snapshot's, None after a gap) until
        # the next applied diff, then the compiled book's own (``_own``)
        pb, pa = prev if prev is not None else (None, None)
        self._prev = None if pb is None else (pb, pa)
        self._own = False
        # the sync state, as LocalBook's
        self.spot: bool | None = None
        self.max_buffer = max_buffer
        self.synced = False
        self.last_u: int | None = None
        self.snapshot_id: int | None = None
        self._bridged = False
        self.buffer: deque = deque(maxlen=max_buffer)
        # the compiled book
        cache = max(32, 4 * n)
        self._ist = ist = np.zeros(_PK + 4 * n, np.int64)
        ist[_N] = n
        ist[_CACHE] = cache
        self._best = np.zeros((2, 2 * cache), np.int64)
        self._table = self._new_table(1 << 12)
        _clear(self._table, ist)

    # -- results ----------------------------------------------------------------------------
    @property
    def prev(self):
        return self._read_top() if self._own else self._prev

    def _read_top(self):
        n, ist = self.n, self._ist
        lb, la = int(ist[_PLEN]), int(ist[_PLEN + 1])
        q0 = _PK + 2 * n
        return (list(zip(_prices(ist[_PK:_PK + lb]), ist[q0:q0 + lb].tolist())),
                list(zip(_prices(-ist[_PK + n:_PK + n + la]),
                         ist[q0 + n:q0 + n + la].tolist())))

    # -- the tables --------------------------------------------------------------------------
    def _new_table(self, cap: int) -> np.ndarray:
        self._ist[_SHIFT] = 64 - (cap.bit_length() - 1)
        self._room = cap // 2
        return np.empty((2, cap, 2), np.int64)

    def _ensure(self, need: int) -> None:
        """Room for ``need`` more prices on each side (load factor at most 1/2)."""
        cap = self._table.shape[1]
        size = int(max(self._ist[_SIZE], self._ist[_SIZE + 1]))
        if size + need > cap // 2:
            while size + need > cap // 2:
                cap *= 2
            old = self._table
            self._table = self._new_table(cap)
            _rehash(old, self._table, self._ist)
        self._room = cap // 2 - size

    # -- merge keys (as DepthTerms) ----------------------------------------------------------
    def _key(self, t, recv):
        f = self.frontier
        floor = recv - self.stall_ms
        if t >= f and t >= floor:
            self.frontier = t
            return t
        key = f if f > floor else floor
        if t > key:
            key = t
        if floor > f != _NEG_INF:
            self.stalls.append({"stream": "depth", "t": f, "until": t})
        self.frontier = key
        return key

    def _push(self, t, term, recv) -> None:
        self.items.append((self._key(t, recv) * 4 + 2, DEPTH, t, term))

    # -- the book ----------------------------------------------------------------------------
    def _apply(self, d: dict):
        """A chained diff onto the book -> its term."""
        return self._apply_levels(d["b"], d["a"])

    def _apply_levels(self, b, a):
        nb = len(b)
        need = nb + len(a)
        if need > self._room:
            self._ensure(need)
        self._room -= need
        try:
            text = " ".join(_from_iterable(b + a)).encode()
        except TypeError:      # not lists of strings
            term = _ERR
        else:
            term = _apply_text(self._table, self._best, self._ist, text, nb, need - nb)
        if term == _ERR:
            term = self._apply_general(b, a)
        if not self._own:
            term = self._first_term()
        return term

    def _apply_general(self, b, a):
        nb = len(b)
        pf = np.empty(nb + len(a), np.float64)
        qv = np.empty(nb + len(a), np.int64)
        _py_levels(b, pf, qv, 0)
        _py_levels(a, pf, qv, nb)
        return _apply_parsed(self._table, self._best, self._ist, pf, qv, nb)

    def _first_term(self):
        """The term against Python's previous top (as DepthTerms computes it)."""
        prev = self._prev
        if prev is None:
            term = 0
        else:
            cb, ca = self._read_top()
            term = side_term(prev[0], cb, self.n, True) + side_term(prev[1], ca, self.n, False)
        self._prev = None
        self._own = True
        return term

    def _load(self, snap: dict) -> None:
        sides = [_py_snapshot_levels(snap.get("bids", ())),
                 _py_snapshot_levels(snap.get("asks", ()))]
        self._ensure(max(len(sides[0][0]), len(sides[1][0])))
        for s, (pf, qv) in enumerate(sides):
            _load_side(self._table, self._best, self._ist, s, pf, qv)
        self._ensure(0)

    def _chain(self, d: dict):
        """As LocalBook._chain: the term if applied, else _DROPPED or _GAP."""
        u = d["u"]
        last = self.last_u
        if not self._bridged:
            # the snapshot already holds diffs up to lastUpdateId
            if (u <= last) if self.spot else (u < last):
                return _DROPPED
            U = d["U"]
            target = last + 1 if self.spot else last
            if not U <= target <= u:
                return self._break(d)    # the snapshot does not bridge the first diff
            self._bridged = True
        elif self.spot:
            U = d["U"]
            if u <= last:
                return _DROPPED
            if U != last + 1:
                return self._break(d)
        else:
            if u <= last and d.get("pu") != last:
                return _DROPPED
            if d.get("pu") != last:
                return self._break(d)
        term = self._apply(d)
        self.last_u = u
        return term

    def _break(self, d: dict):
        """The chain broke: empty book, buffering again (the diff first)."""
        _clear(self._table, self._ist)
        self.synced = False
        self._bridged = False
        self.last_u = None
        self.buffer.clear()
        self.buffer.append((d, None))
        return _GAP

    def _gap(self, t, recv) -> None:
        self.gaps += 1
        self._prev = None
        self._own = False
        self._ist[_OWN] = 0
        self._push(t, 0, recv)

    # -- feeding (as DepthTerms) -------------------------------------------------------------
    def diff(self, d: dict, recv: int) -> None:
        if self._bridged:  # in sync, chained: the common case, checked first
            last = self.last_u
            if (d["U"] == last + 1 and d["u"] > last) if self.spot else d.get("pu") == last:
                term = self._apply_levels(d["b"], d["a"])
                self.last_u = d["u"]
                E = d.get("E")
                t = recv if E is None else E
                if t >= self.frontier and t >= recv - self.stall_ms:
                    self.frontier = t
                    self.items.append((t * 4 + 2, DEPTH, t, term))
                else:
                    self.items.append((self._key(t, recv) * 4 + 2, DEPTH, t, term))
                return
        if self.spot is None:
            self.spot = "pu" not in d
        if not self.synced:
            self.buffer.append((d, recv))
            res = _BUFFERED
        else:
            res = self._chain(d)
        if res is _BUFFERED or res is _DROPPED:
            E = d.get("E", recv)  # as Replay: the stream moved on without a record
            if E is not None and E > self.frontier:
                self.frontier = E
        elif res is _GAP:
            E = d.get("E")
            self._gap(recv if E is None else E, recv)
        else:
            E = d.get("E")
            self._push(recv if E is None else E, res, recv)

    def snapshot(self, snap: dict, recv: int) -> None:
        E = snap.get("E")
        self._push(recv if E is None else E, 0, recv)
        bids, asks = snapshot_top(snap, self.n)
        self._prev = ([(p, round(q * SCALE)) for p, q in bids],
                      [(p, round(q * SCALE)) for p, q in asks])
        self._own = False
        self._ist[_OWN] = 0
        last_update_id = snap["lastUpdateId"]
        self._load(snap)
        self.snapshot_id = self.last_u = int(last_update_id)
        self.synced = True
        self._bridged = False
        pending, self.buffer = self.buffer, deque(maxlen=self.max_buffer)
        while pending:  # replay the buffered diffs on it
            d, tag = pending.popleft()
            res = self._chain(d)
            ts = recv if tag is None else tag
            E = d.get("E")
            t = ts if E is None else E
            if res is _GAP:
                self._gap(t, ts)
                self.buffer.clear()    # the gap diff (with its tag) waits again
                self.buffer.append((d, tag))
                self.buffer.extend(pending)
                break
            if res is not _DROPPED:
                self._push(t, res, ts)
