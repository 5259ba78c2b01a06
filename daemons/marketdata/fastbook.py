""":class:`ArrayBook`: :class:`~.book.LocalBook` with its two sides in numpy arrays, a diff's
levels parsed and applied by numba-compiled code straight from the message's bytes.

The depth workers of ``ofi signals`` and ``ofi data import`` spend most of their time applying
diffs level by level (``float(price)``, a dict update, the sorted cache of the best prices).
Here a side is an open-addressing hash table (price -> quantity as ``float(q)`` and as
``round(float(q) * 1e8)``) plus the same sorted cache of best prices (:class:`~.book._Side`'s
``best``/``edge`` rules, refill and trim included), so the levels a book reads are exactly
those of :class:`~.book._Side`, and so are :attr:`touched` and the quantities.

The sync rules (buffering, snapshot, bridging, chaining, gaps) are :class:`~.book.LocalBook`'s
own: only the sides differ. A diff's ``b`` / ``a`` can be a :class:`Levels`: the list orjson
parsed and where the same levels start in the message's bytes; the compiled parser reads them
there (no Python object per level). A price or quantity it does not read exactly as ``float``
does (anything but plain decimal digits with at most one point, at most 15 significant digits)
leaves the side untouched, and the list is applied instead, level by level.

Decimal strings are read as ``float`` reads them: ``m / 10**k`` with ``m`` (< 10**15) and
``10**k`` (k <= 22) exact doubles is the correctly rounded value of the string.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .book import _ZEROS, LocalBook

SCALE = 100_000_000
_NEG_INF = float("-inf")
_POS_INF = float("inf")
# st (int64 per side): count of live levels, length of best, n (levels watched), cache,
# bid (1/0), touched (1/0)
_COUNT, _NBEST, _N, _CACHE, _BID, _TOUCHED = range(6)
_MAX_DIGITS = 15
_POW10 = np.array([10.0 ** k for k in range(23)])
_MAX_LEVELS = 8192     # levels of one diff side the scratch arrays hold (more: the list path)


@njit(cache=True, nogil=True)
def _hash(p, mask):
    if not abs(p) < 1e15:   # (NaN too) no exact int64 below
        return np.int64(0)
    h = np.int64(p * 64.0) * np.int64(-7046029254386353131)
    return (h ^ (h >> 29)) & mask


@njit(cache=True, nogil=True)
def _find(keys, used, p, mask):
    i = _hash(p, mask)
    while used[i]:
        if keys[i] == p:
            return i
        i = (i + 1) & mask
    return -1 - i   # not there: -1 - the free slot


@njit(cache=True, nogil=True)
def _remove(keys, used, qf, qs, i, mask):
    """Delete slot ``i`` (linear probing, backward shift: no tombstones)."""
    used[i] = 0
    j = i
    while True:
        j = (j + 1) & mask
        if not used[j]:
            return
        k = _hash(keys[j], mask)
        # can the entry at j move to the hole at i?
        if (j > i and (k <= i or k > j)) or (j < i and (k <= i and k > j)):
            keys[i] = keys[j]
            qf[i] = qf[j]
            qs[i] = qs[j]
            used[i] = 1
            used[j] = 0
            i = j


@njit(cache=True, nogil=True)
def _number(buf, i, end):
    """A quoted decimal at ``buf[i]`` (the opening quote): (ok, value, is_zero_string, next
    index after the closing quote). ``is_zero_string``: one of book._ZEROS's forms."""
    if i >= end or buf[i] != 34:
        return False, 0.0, False, i
    i += 1
    m = np.int64(0)
    digits = 0
    frac = 0
    int_len = 0
    int_zero = True
    seen_point = False
    frac_zero = True
    while i < end:
        c = buf[i]
        if c >= 48 and c <= 57:
            if seen_point:
                frac += 1
                if c != 48:
                    frac_zero = False
            else:
                int_len += 1
                if c != 48:
                    int_zero = False
            if digits > 0 or c != 48:
                digits += 1
                if digits > _MAX_DIGITS:
                    return False, 0.0, False, i
            m = m * 10 + (c - 48)
        elif c == 46 and not seen_point:
            seen_point = True
        elif c == 34:
            break
        else:
            return False, 0.0, False, i
        i += 1
    if i >= end or int_len == 0 or (seen_point and frac == 0) or frac > 22:
        return False, 0.0, False, i
    value = m / _POW10[frac] if frac else float(m)
    zero = int_len == 1 and int_zero and (not seen_point or (frac_zero and frac <= 16))
    return True, value, zero, i + 1


@njit(cache=True, nogil=True)
def _parse_levels(buf, i, end, px, qf, zs):
    """``[["p","q"],...]`` at ``buf[i]`` -> px, qf, zs; the count (-1: not read)."""
    if i >= end or buf[i] != 91:
        return -1
    i += 1
    k = 0
    if i < end and buf[i] == 93:
        return 0
    while True:
        if k >= px.shape[0] or i >= end or buf[i] != 91:
            return -1
        ok, p, _z, i = _number(buf, i + 1, end)
        if not ok or i >= end or buf[i] != 44:
            return -1
        ok, q, z, i = _number(buf, i + 1, end)
        if not ok or i >= end or buf[i] != 93:
            return -1
        px[k] = p
        qf[k] = q
        zs[k] = z
        k += 1
        i += 1
        if i >= end:
            return -1
        if buf[i] == 93:
            return k
        if buf[i] != 44:
            return -1
        i += 1


@njit(cache=True, nogil=True)
def _refill(keys, used, best, st, edge):
    cnt = st[_COUNT]
    k = st[_CACHE]
    allp = np.empty(cnt, np.float64)
    j = 0
    for i in range(keys.shape[0]):
        if used[i]:
            allp[j] = keys[i]
            j += 1
    allp.sort()
    if cnt <= k:
        best[:cnt] = allp
        st[_NBEST] = cnt
        edge[0] = -np.inf if st[_BID] else np.inf
    elif st[_BID]:
        best[:k] = allp[cnt - k:]
        st[_NBEST] = k
        edge[0] = best[0]
    else:
        best[:k] = allp[:k]
        st[_NBEST] = k
        edge[0] = best[k - 1]


@njit(cache=True, nogil=True)
def _apply(keys, used, qfs, qss, best, st, edge, px, qf, zs, count):
    """book._Side.apply over parsed levels (``zs``: the quantity is one of the zero strings)."""
    mask = keys.shape[0] - 1
    n = st[_N]
    bid = st[_BID] == 1
    nb = st[_NBEST]
    e = edge[0]
    touched = False
    if bid:
        nth = best[nb - n] if nb >= n else -np.inf
    else:
        nth = best[n - 1] if nb >= n else np.inf
    for j in range(count):
        f = px[j]
        slot = _find(keys, used, f, mask)
        if zs[j]:
            if slot >= 0:
                _remove(keys, used, qfs, qss, slot, mask)
                st[_COUNT] -= 1
                if (f >= e) if bid else (f <= e):
                    at = np.searchsorted(best[:nb], f)
                    for x in range(at, nb - 1):   # (in place: no copy)
                        best[x] = best[x + 1]
                    nb -= 1
                    if (f >= nth) if bid else (f <= nth):
                        touched = True
            continue
        if slot < 0:
            slot = -1 - slot
            keys[slot] = f
            used[slot] = 1
            st[_COUNT] += 1
            if (f >= e) if bid else (f <= e):
                at = np.searchsorted(best[:nb], f)
                for x in range(nb, at, -1):
                    best[x] = best[x - 1]
                best[at] = f
                nb += 1
        qfs[slot] = qf[j]
        qss[slot] = np.int64(np.rint(qf[j] * 100000000.0))
        if (f >= e) if bid else (f <= e):
            if (f >= nth) if bid else (f <= nth):
                touched = True
    st[_NBEST] = nb
    k = st[_CACHE]
    if nb < n and st[_COUNT] > nb:
        _refill(keys, used, best, st, edge)
    elif nb > 2 * k:
        if bid:
            for x in range(k):   # (forward: the source is to the right)
                best[x] = best[nb - k + x]
            edge[0] = best[0]
        else:
            edge[0] = best[k - 1]
        st[_NBEST] = k
    st[_TOUCHED] = 1 if touched else 0
    return touched


@njit(cache=True, nogil=True)
def _apply_bytes(keys, used, qfs, qss, best, st, edge, buf, start, expect, px, qf, zs):
    """Parse the levels at ``buf[start]`` and apply them; -1 (nothing done) when they are not
    read exactly or are not ``expect`` levels, else 1 / 0 (touched or not)."""
    count = _parse_levels(buf, start, buf.shape[0], px, qf, zs)
    if count != expect:
        return -1
    if st[_COUNT] + count > (keys.shape[0] >> 1):
        return -2   # grow first
    return 1 if _apply(keys, used, qfs, qss, best, st, edge, px, qf, zs, count) else 0


@njit(cache=True, nogil=True)
def _top(keys, used, qfs, qss, best, st, n, px, qf, qs):
    """The best ``n`` prices (best first) with their quantities into px, qf, qs; the count."""
    nb = st[_NBEST]
    bid = st[_BID] == 1
    cnt = st[_COUNT]
    mask = keys.shape[0] - 1
    if n > nb and cnt > nb:   # deeper than the cache: from every level
        allp = np.empty(cnt, np.float64)
        j = 0
        for i in range(keys.shape[0]):
            if used[i]:
                allp[j] = keys[i]
                j += 1
        allp.sort()
        m = min(n, cnt)
        for j in range(m):
            px[j] = allp[cnt - 1 - j] if bid else allp[j]
    else:
        m = min(n, nb)
        for j in range(m):
            px[j] = best[nb - 1 - j] if bid else best[j]
    for j in range(m):
        slot = _find(keys, used, px[j], mask)
        qf[j] = qfs[slot]
        qs[j] = qss[slot]
    return m


@njit(cache=True, nogil=True)
def _rehash(keys, used, qfs, qss, nkeys, nused, nqf, nqs):
    mask = nkeys.shape[0] - 1
    for i in range(keys.shape[0]):
        if used[i]:
            s = _find(nkeys, nused, keys[i], mask)
            s = -1 - s
            nkeys[s] = keys[i]
            nused[s] = 1
            nqf[s] = qfs[i]
            nqs[s] = qss[i]


class Levels(list):
    """A diff side's levels as orjson parsed them (the list), and where they start in the
    message's bytes (``buf``: uint8 array, ``start``: the index of their ``[``)."""

    __slots__ = ("buf", "start")

    def __init__(self, raw, buf, start: int):
        super().__init__(raw)
        self.buf = buf
        self.start = start


class ArraySide:
    """One side of an :class:`ArrayBook` (the :class:`~.book._Side` rules, in arrays)."""

    __slots__ = ("keys", "used", "qf", "qs", "best", "st", "edge", "bid", "n", "cache",
                 "_px", "_qf", "_zs", "_opx", "_oqf", "_oqs")

    def __init__(self, bid: bool, n: int, capacity: int = 1 << 13):
        self.bid = bid
        self.n = n
        self.cache = max(32, 4 * n)
        self._alloc(capacity)
        self.best = np.empty(2 * self.cache + _MAX_LEVELS + 1, np.float64)
        self.st = np.array([0, 0, n, self.cache, 1 if bid else 0, 1], np.int64)
        self.edge = np.array([_NEG_INF if bid else _POS_INF])
        self._px = np.empty(_MAX_LEVELS)
        self._qf = np.empty(_MAX_LEVELS)
        self._zs = np.empty(_MAX_LEVELS, np.bool_)
        self._opx = np.empty(max(n, 1))
        self._oqf = np.empty(max(n, 1))
        self._oqs = np.empty(max(n, 1), np.int64)

    def _alloc(self, capacity: int) -> None:
        self.keys = np.zeros(capacity)
        self.used = np.zeros(capacity, np.uint8)
        self.qf = np.zeros(capacity)
        self.qs = np.zeros(capacity, np.int64)

    def _grow(self, need: int) -> None:
        cap = len(self.keys)
        while need > cap >> 1:
            cap <<= 1
        old = (self.keys, self.used, self.qf, self.qs)
        self._alloc(cap)
        _rehash(*old, self.keys, self.used, self.qf, self.qs)

    @property
    def touched(self) -> bool:
        return bool(self.st[_TOUCHED])

    def __len__(self) -> int:
        return int(self.st[_COUNT])

    def clear(self) -> None:
        self.used[:] = 0
        self.st[_COUNT] = self.st[_NBEST] = 0
        self.edge[0] = _NEG_INF if self.bid else _POS_INF
        self.st[_TOUCHED] = 1

    def load(self, raw) -> None:
        """Replace the side by snapshot levels ``[[price, qty], ...]`` (levels with
        ``float(qty) > 0``)."""
        self.clear()
        rows = [(float(p), float(q)) for p, q in raw if float(q) > 0.0]
        self._apply_arrays([p for p, _ in rows], [q for _, q in rows], [False] * len(rows))
        _refill(self.keys, self.used, self.best, self.st, self.edge)
        self.st[_TOUCHED] = 1

    def apply(self, raw) -> bool:
        """Apply diff levels; true if the top ``n`` may have changed."""
        if not raw:
            self.st[_TOUCHED] = 0
            return False
        if isinstance(raw, Levels) and len(raw) <= _MAX_LEVELS:
            while True:
                r = _apply_bytes(self.keys, self.used, self.qf, self.qs, self.best, self.st,
                                 self.edge, raw.buf, raw.start, len(raw), self._px, self._qf,
                                 self._zs)
                if r == -2:
                    self._grow(len(self) + len(raw) + 1)
                    continue
                if r >= 0:
                    return r == 1
                break
        zero = _ZEROS
        return self._apply_arrays([float(p) for p, _ in raw],
                                  [0.0 if q in zero else float(q) for _, q in raw],
                                  [q in zero for _, q in raw])

    def _apply_arrays(self, px, qf, zs) -> bool:
        k = len(px)
        if len(self) + k + 1 > len(self.keys) >> 1:
            self._grow(len(self) + k + 1)
        if len(self.best) < 2 * self.cache + k + 1:
            best = np.empty(2 * self.cache + k + 1)
            best[:len(self.best)] = self.best
            self.best = best
        return _apply(self.keys, self.used, self.qf, self.qs, self.best, self.st, self.edge,
                      np.array(px, np.float64), np.array(qf, np.float64),
                      np.array(zs, np.bool_), k)

    def top(self, n: int) -> tuple[list, list, list]:
        """The best ``n`` levels, best first: prices, ``float(qty)``, qty in 1e-8 units."""
        if n > len(self._opx):
            self._opx, self._oqf = np.empty(n), np.empty(n)
            self._oqs = np.empty(n, np.int64)
        m = _top(self.keys, self.used, self.qf, self.qs, self.best, self.st, n, self._opx,
                 self._oqf, self._oqs)
        return self._opx[:m].tolist(), self._oqf[:m].tolist(), self._oqs[:m].tolist()

    def top_prices(self, n: int) -> list[float]:
        return self.top(n)[0]


class ArrayBook(LocalBook):
    """:class:`~.book.LocalBook` on :class:`ArraySide` sides. Read its levels with
    ``bid_side.top(n)`` / ``ask_side.top(n)`` or :meth:`top` (``bids`` / ``asks`` are not
    dicts here)."""

    def __init__(self, spot: bool | None = None, max_buffer: int | None = None,
                 levels: int = 5):
        kw = {} if max_buffer is None else {"max_buffer": max_buffer}
        super().__init__(spot=spot, levels=levels, **kw)
        self.bid_side = ArraySide(True, levels)
        self.ask_side = ArraySide(False, levels)
        self.bids = self.asks = None

    def top(self, n: int):
        b, a = self.bid_side.top(n), self.ask_side.top(n)
        return ([[p, q] for p, q in zip(b[0], b[1])], [[p, q] for p, q in zip(a[0], a[1])])

    def best(self):
        b, a = self.bid_side.top(1)[0], self.ask_side.top(1)[0]
        return (b[0] if b else None, a[0] if a else None)


def with_levels(d: dict, line: bytes, at: int) -> dict:
    """``d`` (a diff orjson parsed from ``line[at:]``) with its ``b`` and ``a`` as
    :class:`Levels` found in ``line``'s bytes (left as they are when not found)."""
    bi = line.find(b'"b":[', at)
    ai = line.find(b'"a":[', at)
    if bi < 0 or ai < 0:
        return d
    buf = np.frombuffer(line, np.uint8)
    b, a = d.get("b"), d.get("a")
    if type(b) is list and type(a) is list:
        d["b"] = Levels(b, buf, bi + 4)
        d["a"] = Levels(a, buf, ai + 4)
    return d


# -- scanning a block of hftbacktest lines ---------------------------------------------------------

#: :func:`scan_block` kinds: a line of a combined stream other than depth (``<stamp>
#: {"stream":"<name>"`` with no ``@depth`` in the name, the stamp plain digits), a line of a
#: depth stream (the same with ``@depth``), anything else (untagged, blank, malformed)
OTHER_STREAM, DEPTH_STREAM, UNTAGGED = 0, 1, 2
_STREAM_TAG = np.frombuffer(b'{"stream":"', np.uint8)
_DEPTH_TAG = np.frombuffer(b"@depth", np.uint8)


@njit(cache=True, nogil=True)
def _scan(buf, tag, dtag, starts, ends, stamps, kinds):
    """Classify each line ``buf[starts[k]:ends[k]]`` as the workers' bytes checks do
    (``line.find(b" ")``, ``startswith(tag, sp + 1)``, ``find(dtag, sp + len(tag) + 1,
    find(b'"', sp + len(tag) + 1))``)."""
    nt = tag.shape[0]
    nd = dtag.shape[0]
    for k in range(starts.shape[0]):
        s = starts[k]
        e = ends[k]
        stamps[k] = -1
        kinds[k] = UNTAGGED
        sp = -1
        for i in range(s, e):
            if buf[i] == 32:
                sp = i
                break
        if sp > s and sp - s <= 19 and (sp - s < 19 or buf[s] <= 56):
            v = np.int64(0)
            ok = True
            for i in range(s, sp):
                c = buf[i]
                if c < 48 or c > 57:
                    ok = False
                    break
                v = v * 10 + (c - 48)
            if ok:
                stamps[k] = v
                tagged = sp + 1 + nt <= e
                if tagged:
                    for i in range(nt):
                        if buf[sp + 1 + i] != tag[i]:
                            tagged = False
                            break
                if tagged:
                    lo = sp + 1 + nt   # = sp + NAME_AT
                    hi = -1
                    for i in range(lo, e):
                        if buf[i] == 34:
                            hi = i
                            break
                    if hi < 0:
                        hi = e - 1     # bytes.find's end -1: up to the last byte
                    depth = False
                    for i in range(lo, hi - nd + 1):
                        m = True
                        for j in range(nd):
                            if buf[i + j] != dtag[j]:
                                m = False
                                break
                        if m:
                            depth = True
                            break
                    kinds[k] = DEPTH_STREAM if depth else OTHER_STREAM


def scan_block(block: bytes):
    """The lines of a block (:func:`~.formats.iter_blocks`): ``(starts, ends, stamps, kinds)``
    arrays, one entry per line (``stamps``: the local stamp when the line starts with digits
    and a space, else -1; ``kinds``: :data:`OTHER_STREAM`, :data:`DEPTH_STREAM` or
    :data:`UNTAGGED`)."""
    buf = np.frombuffer(block, np.uint8)
    ends = np.flatnonzero(buf == 10)   # (vectorized: the lines' ends)
    if len(buf) and buf[-1] != 10:
        ends = np.append(ends, len(buf))
    starts = np.empty(len(ends), np.int64)
    if len(ends):
        starts[0] = 0
        np.add(ends[:-1], 1, out=starts[1:])
    stamps = np.empty(len(ends), np.int64)
    kinds = np.empty(len(ends), np.int8)
    _scan(buf, _STREAM_TAG, _DEPTH_TAG, starts, ends, stamps, kinds)
    return starts, ends, stamps, kinds


# -- a depth stream's message without orjson ----------------------------------------------------

_F_E, _F_T, _F_PU, _F_S = 1, 2, 4, 8
_DEPTH_KEY = np.frombuffer(b'","data":{', np.uint8)
_DEPTH_UPDATE = np.frombuffer(b"depthUpdate", np.uint8)


@njit(cache=True, nogil=True)
def _uint(buf, i, end):
    """Plain digits (at most 18) at ``buf[i]``: (ok, value, next index)."""
    v = np.int64(0)
    k = 0
    while i < end and buf[i] >= 48 and buf[i] <= 57:
        v = v * 10 + (buf[i] - 48)
        k += 1
        i += 1
    return k > 0 and k <= 18, v, i


@njit(cache=True, nogil=True)
def _levels_end(buf, i, end, px, qf, zs):
    """:func:`_parse_levels` and the index after the closing ``]``: (count, next index)."""
    count = _parse_levels(buf, i, end, px, qf, zs)
    if count < 0:
        return -1, i
    depth = 0
    while i < end:   # the levels were read: plain strings, no brackets inside
        c = buf[i]
        if c == 91:
            depth += 1
        elif c == 93:
            depth -= 1
            if depth == 0:
                return count, i + 1
        i += 1
    return -1, i


@njit(cache=True, nogil=True)
def _depth_message(buf, i, tag, key, update, px, qf, zs, out, apx=None, aqf=None, azs=None):
    """``{"stream":"<name>","data":{...}}`` of a diff at ``buf[i]`` (the line's end is the
    message's): its fields into ``out`` (E, T, U, u, pu, flags, s start, s end, b start,
    b count, a start, a count); False when it is anything else (other keys, null values,
    escapes, numbers that are not plain digits, levels not read exactly)."""
    end = buf.shape[0]
    nt = tag.shape[0]
    if i + nt > end:
        return False
    for k in range(nt):
        if buf[i + k] != tag[k]:
            return False
    i += nt
    while i < end and buf[i] != 34:
        if buf[i] == 92:
            return False
        i += 1
    nk = key.shape[0]
    if i + nk > end:
        return False
    for k in range(nk):
        if buf[i + k] != key[k]:
            return False
    i += nk
    seen = 0
    flags = 0
    while True:
        if i + 4 > end or buf[i] != 34:
            return False
        k0 = i + 1
        i = k0
        while i < end and buf[i] != 34:
            i += 1
        klen = i - k0
        i += 1
        if i >= end or buf[i] != 58 or klen < 1 or klen > 2:
            return False
        i += 1
        c0 = buf[k0]
        c1 = buf[k0 + 1] if klen == 2 else 0
        if klen == 2:
            if c0 != 112 or c1 != 117:   # "pu"
                return False
            bit = 64
        elif c0 == 101:
            bit = 1      # e
        elif c0 == 69:
            bit = 2      # E
        elif c0 == 84:
            bit = 4      # T
        elif c0 == 115:
            bit = 8      # s
        elif c0 == 85:
            bit = 16     # U
        elif c0 == 117:
            bit = 32     # u
        elif c0 == 98:
            bit = 128    # b
        elif c0 == 97:
            bit = 256    # a
        else:
            return False
        if seen & bit:
            return False
        seen |= bit
        if bit == 1 or bit == 8:   # strings
            if i >= end or buf[i] != 34:
                return False
            s0 = i + 1
            i = s0
            while i < end and buf[i] != 34:
                if buf[i] == 92:
                    return False
                i += 1
            if i >= end:
                return False
            if bit == 1:
                if i - s0 != update.shape[0]:
                    return False
                for k in range(update.shape[0]):
                    if buf[s0 + k] != update[k]:
                        return False
            else:
                out[6] = s0
                out[7] = i
                flags |= _F_S
            i += 1
        elif bit == 128 or bit == 256:
            start = i
            if bit == 256 and apx is not None:   # the asks' levels kept apart
                count, i = _levels_end(buf, i, end, apx, aqf, azs)
            else:
                count, i = _levels_end(buf, i, end, px, qf, zs)
            if count < 0:
                return False
            if bit == 128:
                out[8] = start
                out[9] = count
            else:
                out[10] = start
                out[11] = count
        else:
            ok, v, i = _uint(buf, i, end)
            if not ok:
                return False
            if bit == 2:
                out[0] = v
                flags |= _F_E
            elif bit == 4:
                out[1] = v
                flags |= _F_T
            elif bit == 16:
                out[2] = v
            elif bit == 32:
                out[3] = v
            else:
                out[4] = v
                flags |= _F_PU
        if i >= end:
            return False
        if buf[i] == 44:
            i += 1
            continue
        if buf[i] != 125:
            return False
        i += 1
        break
    if i + 1 != end or buf[i] != 125:
        return False
    if (seen & (1 | 16 | 32 | 128 | 256)) != (1 | 16 | 32 | 128 | 256):
        return False
    out[5] = flags
    return True


class _LineLevels(Levels):
    """:class:`Levels` read by :func:`depth_message`: the count is known, the list is parsed
    (orjson) only if the side has to be applied level by level after all."""

    __slots__ = ("count", "line", "at", "key", "loaded")

    def __init__(self, buf, start: int, count: int, line: bytes, at: int, key: str):
        list.__init__(self)
        self.buf, self.start, self.count = buf, start, count
        self.line, self.at, self.key, self.loaded = line, at, key, False

    def _load(self) -> None:
        if not self.loaded:
            import orjson

            self.loaded = True
            list.extend(self, orjson.loads(self.line[self.at:])["data"][self.key])

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0

    def __iter__(self):
        self._load()
        return list.__iter__(self)

    def __getitem__(self, i):
        self._load()
        return list.__getitem__(self, i)


_MSG_PX = np.empty(_MAX_LEVELS)
_MSG_QF = np.empty(_MAX_LEVELS)
_MSG_ZS = np.empty(_MAX_LEVELS, np.bool_)
_MSG_OUT = np.zeros(12, np.int64)


def depth_message(line: bytes, at: int) -> dict | None:
    """The ``data`` of a depth stream's message ``line[at:]`` (``{"stream":...,"data":{...}}``)
    as orjson would give it, its ``b`` and ``a`` as :class:`Levels`; None when the message is
    not a plain diff this reads exactly (then parse it with orjson)."""
    buf = np.frombuffer(line, np.uint8)
    out = _MSG_OUT
    if not _depth_message(buf, at, _STREAM_TAG, _DEPTH_KEY, _DEPTH_UPDATE, _MSG_PX, _MSG_QF,
                          _MSG_ZS, out):
        return None
    E, T, U, u, pu, flags, s0, s1, b0, bn, a0, an = out.tolist()
    d = {"e": "depthUpdate"}
    if flags & _F_E:
        d["E"] = E
    if flags & _F_T:
        d["T"] = T
    if flags & _F_S:
        d["s"] = line[s0:s1].decode()
    d["U"] = U
    d["u"] = u
    if flags & _F_PU:
        d["pu"] = pu
    d["b"] = _LineLevels(buf, b0, bn, line, at, "b")
    d["a"] = _LineLevels(buf, a0, an, line, at, "a")
    return d


# -- chained diffs of one symbol, applied a block at a time ------------------------------------

#: :func:`chained_diffs` int state: the book's last ``u``, touched, the items / silences
#: written, the previous levels' counts (bids, asks), the stamp's divisor
CH_LAST_U, CH_TOUCHED, CH_NI, CH_NS, CH_NPB, CH_NPA, CH_DIV = range(7)


@njit(cache=True, nogil=True)
def _side_term(ppx, pqs, pn, cpx, cqs, cn, n, bid):
    """core.side_term over arrays (a thin side's missing levels at -inf / +inf, qty 0)."""
    e = np.int64(0)
    edge = -np.inf if bid else np.inf
    for i in range(n):
        if i < cn:
            p = cpx[i]
            q = cqs[i]
        else:
            p = edge
            q = np.int64(0)
        if i < pn:
            pp = ppx[i]
            pq = pqs[i]
        else:
            pp = edge
            pq = np.int64(0)
        if bid:
            if p >= pp:
                e += q
            if p <= pp:
                e -= pq
        else:
            if p <= pp:
                e -= q
            if p >= pp:
                e += pq
    return e


@njit(cache=True, nogil=True)
def _apply_side(keys, used, qfs, qss, best, st, edge, px, qf, zs, count):
    """A diff side's ``count`` parsed levels applied (``ArraySide.apply``): touched or not."""
    if count == 0:
        st[_TOUCHED] = 0
        return False
    return _apply(keys, used, qfs, qss, best, st, edge, px, qf, zs, count)


@njit(cache=True, nogil=True)
def chained_diffs(buf, starts, ends, stamps, kinds, j, want, stall, si, sf,
                  bkeys, bused, bqf, bqs, bbest, bst, bedge,
                  akeys, aused, aqf, aqs, abest, ast, aedge,
                  n, pbpx, pbqs, papx, paqs, tpx, tqf, tqs, px, qf, zs, out, sapx, saqf, sazs,
                  ik, it, ie, st_t, st_until):
    """The depth lines ``j, j+1, ...`` of a block (``scan_block``'s arrays) that chain on an
    in-sync USD-M :class:`ArrayBook` whose previous levels are its top (``DepthTerms``'s
    ``prev_is_book``), applied as :meth:`DepthTerms.diff` applies them: the book's sides,
    ``si[CH_LAST_U]`` / ``si[CH_TOUCHED]``, the previous levels (``pb*`` / ``pa*``, counts in
    ``si``), the frontier ``sf[0]``, the items (key*4+2, t, term) and the silences (t, until).
    Lines of other streams are skipped, diffs of other symbols too; returns the index of the
    first line it leaves to the caller (anything else: a diff that does not chain, a message
    :func:`_depth_message` does not read, a side that must grow first), ``len(starts)`` at the
    end."""
    nl = starts.shape[0]
    div = si[CH_DIV]
    if div == 0:
        return j
    nw = want.shape[0]
    while j < nl:
        kind = kinds[j]
        if kind == OTHER_STREAM:
            j += 1
            continue
        if kind != DEPTH_STREAM:
            return j
        s = starts[j]
        e = ends[j]
        i = s
        while buf[i] != 32:
            i += 1
        line = buf[:e]
        if not _depth_message(line, i + 1, _STREAM_TAG, _DEPTH_KEY, _DEPTH_UPDATE, px, qf, zs,
                              out, sapx, saqf, sazs):
            return j
        flags = out[5]
        if not flags & _F_S:
            return j
        s0 = out[6]
        if out[7] - s0 != nw:
            j += 1
            continue
        same = True
        for k in range(nw):
            if buf[s0 + k] != want[k]:
                same = False
                break
        if not same:
            j += 1
            continue
        if not flags & _F_PU or out[4] != si[CH_LAST_U]:
            return j
        bn = out[9]
        an = out[11]
        if bst[_COUNT] + bn > (bkeys.shape[0] >> 1) or ast[_COUNT] + an > (akeys.shape[0] >> 1):
            return j
        recv = stamps[j] // div
        # (the message's levels were read: the bids' into px, qf, zs, the asks' into sapx, ...)
        tb = _apply_side(bkeys, bused, bqf, bqs, bbest, bst, bedge, px, qf, zs, bn)
        ta = _apply_side(akeys, aused, aqf, aqs, abest, ast, aedge, sapx, saqf, sazs, an)
        si[CH_TOUCHED] = 1 if (tb or ta) else 0
        si[CH_LAST_U] = out[3]
        t = out[0] if flags & _F_E else recv
        # the key: t raised to the frontier and to recv - stall (DepthTerms._key)
        f = sf[0]
        floor = recv - stall
        if t >= f and t >= floor:
            sf[0] = t
            key = np.int64(t)
        else:
            kf = f if f > floor else np.float64(floor)
            if t > kf:
                kf = np.float64(t)
            if floor > f and f != -np.inf:
                m = si[CH_NS]
                st_t[m] = np.int64(f)
                st_until[m] = t
                si[CH_NS] = m + 1
            sf[0] = kf
            key = np.int64(kf)
        term = np.int64(0)
        if tb:
            c = _top(bkeys, bused, bqf, bqs, bbest, bst, n, tpx, tqf, tqs)
            term += _side_term(pbpx, pbqs, si[CH_NPB], tpx, tqs, c, n, True)
            pbpx[:c] = tpx[:c]
            pbqs[:c] = tqs[:c]
            si[CH_NPB] = c
        if ta:
            c = _top(akeys, aused, aqf, aqs, abest, ast, n, tpx, tqf, tqs)
            term += _side_term(papx, paqs, si[CH_NPA], tpx, tqs, c, n, False)
            papx[:c] = tpx[:c]
            paqs[:c] = tqs[:c]
            si[CH_NPA] = c
        r = si[CH_NI]
        ik[r] = key * 4 + 2
        it[r] = t
        ie[r] = term
        si[CH_NI] = r + 1
        j += 1
    return j


# -- chained diffs of one symbol as catalog rows (ofi data import) ------------------------------

#: :func:`import_diffs` int state: the book's last ``u``, touched, may apply (the book is in
#: sync and chained, USD-M), the current top levels are valid, their counts (bids, asks), rows
#: in the buffer, its capacity, silences written, the stamp's divisor, messages counted, the
#: message count at which the next batch floor is taken
IM_LAST_U, IM_TOUCHED, IM_SYNC, IM_VALID, IM_NPB, IM_NPA, IM_N, IM_CAP, IM_NS, IM_DIV, \
    IM_COUNT, IM_NB = range(12)
#: :func:`import_diffs` float state: the merge frontier, the last key, the newest receive time
IF_F, IF_LAST, IF_NEWEST = range(3)


@njit(cache=True, nogil=True)
def batch_count(si, sf, recv, stall, batch, count, nb, newest, fa, fb):
    """One more message read (``si[count]``): Replay's batch floor first (the frontiers
    ``sf[fa]`` and ``sf[fb]`` rise to the newest receive time read, ``sf[newest]``, minus
    ``stall`` each time ``batch`` more messages were read, ``si[nb]`` the next such count),
    then the count and the newest time."""
    if si[count] == si[nb]:
        si[nb] += batch
        fl = sf[newest] - stall
        if fl > sf[fa]:
            sf[fa] = fl
        if fl > sf[fb]:
            sf[fb] = fl
    si[count] += 1
    if recv > sf[newest]:
        sf[newest] = recv


@njit(cache=True, nogil=True)
def stalled_key(t, recv, stall, sf, fi, li, si, ns, count, stream, st_idx, st_stream, st_t,
                st_until):
    """The import's merge key of a row at time ``t`` (``merge.stalled_key``) of the stream whose
    frontier and last key are ``sf[fi]`` and ``sf[li]`` (both become the key); a silence before
    it (``recv - stall`` past the last key) is noted at ``si[ns]``: the message number
    ``si[count]``, ``stream``, the last key, ``t``."""
    fl = recv - stall
    last = sf[li]
    if fl > last and last != -np.inf:
        m = si[ns]
        st_idx[m] = si[count]
        st_stream[m] = stream
        st_t[m] = np.int64(last)
        st_until[m] = t
        si[ns] = m + 1
    f = sf[fi]
    if t >= f and t >= fl:
        key = np.float64(t)
    else:
        key = f if f > t else np.float64(t)
        if fl > key:
            key = np.float64(fl)
    sf[fi] = key
    sf[li] = key
    return np.int64(key)


@njit(cache=True, nogil=True)
def import_diffs(buf, starts, ends, stamps, kinds, j, want, stall, batch, si, sf,
                 bkeys, bused, bqf, bqs, bbest, bst, bedge,
                 akeys, aused, aqf, aqs, abest, ast, aedge,
                 n, cur, tpx, tqf, tqs, px, qf, zs, out, sapx, saqf, sazs,
                 rint, rlv, st_idx, st_stream, st_t, st_until):
    """The lines ``j, j+1, ...`` of a block (``scan_block``'s arrays) as the import's depth
    worker reads them: every line of another stream counted (Replay's batches), and the diffs
    of ``want`` that chain on its in-sync USD-M :class:`ArrayBook` applied, each one a
    ``depth`` row (the import's ``DepthRows``: its key, silences and top ``n`` levels).

    Rows go to the buffer at ``si[IM_N]``: ``rint`` (key, t, recv, U, u, pu) x rows and
    ``rlv`` (bid px, bid qty, ask px, ask qty) x levels x rows, NaN past the book's levels;
    ``cur`` holds the top levels of the last row (same layout, counts in ``si``). Returns the
    index of the first line it leaves to the caller (anything else, a full buffer, a side that
    must grow first), ``len(starts)`` at the end."""
    nl = starts.shape[0]
    div = si[IM_DIV]
    if div == 0:
        return j
    nw = want.shape[0]
    while j < nl:
        kind = kinds[j]
        if kind == OTHER_STREAM:
            batch_count(si, sf, stamps[j] // div, stall, batch, IM_COUNT, IM_NB, IF_NEWEST, IF_F,
                        IF_F)
            j += 1
            continue
        if kind != DEPTH_STREAM or si[IM_SYNC] == 0 or si[IM_N] >= si[IM_CAP]:
            return j
        s = starts[j]
        e = ends[j]
        i = s
        while buf[i] != 32:
            i += 1
        if not _depth_message(buf[:e], i + 1, _STREAM_TAG, _DEPTH_KEY, _DEPTH_UPDATE, px, qf,
                              zs, out, sapx, saqf, sazs):
            return j
        flags = out[5]
        if not flags & _F_S or not flags & _F_PU or out[4] != si[IM_LAST_U]:
            return j
        s0 = out[6]
        if out[7] - s0 != nw:
            return j
        for k in range(nw):
            if buf[s0 + k] != want[k]:
                return j
        bn = out[9]
        an = out[11]
        if bst[_COUNT] + bn > (bkeys.shape[0] >> 1) or ast[_COUNT] + an > (akeys.shape[0] >> 1):
            return j
        recv = stamps[j] // div
        batch_count(si, sf, recv, stall, batch, IM_COUNT, IM_NB, IF_NEWEST, IF_F, IF_F)
        tb = _apply_side(bkeys, bused, bqf, bqs, bbest, bst, bedge, px, qf, zs, bn)
        ta = _apply_side(akeys, aused, aqf, aqs, abest, ast, aedge, sapx, saqf, sazs, an)
        si[IM_TOUCHED] = 1 if (tb or ta) else 0
        si[IM_LAST_U] = out[3]
        t = out[0] if flags & _F_E else recv
        # the key and the silence before it (DepthRows._key)
        key = stalled_key(t, recv, stall, sf, IF_F, IF_LAST, si, IM_NS, IM_COUNT, 2, st_idx,
                          st_stream, st_t, st_until)
        # the top levels, read again where the side may have changed (DepthRows._top)
        valid = si[IM_VALID] == 1
        if not valid or bst[_TOUCHED]:
            c = _top(bkeys, bused, bqf, bqs, bbest, bst, n, tpx, tqf, tqs)
            for x in range(n):
                cur[0, x] = tpx[x] if x < c else np.nan
                cur[1, x] = tqf[x] if x < c else np.nan
            si[IM_NPB] = c
        if not valid or ast[_TOUCHED]:
            c = _top(akeys, aused, aqf, aqs, abest, ast, n, tpx, tqf, tqs)
            for x in range(n):
                cur[2, x] = tpx[x] if x < c else np.nan
                cur[3, x] = tqf[x] if x < c else np.nan
            si[IM_NPA] = c
        si[IM_VALID] = 1
        r = si[IM_N]
        rint[0, r] = key
        rint[1, r] = t
        rint[2, r] = recv
        rint[3, r] = out[2]
        rint[4, r] = out[3]
        rint[5, r] = out[4]
        for k in range(4):
            for x in range(n):
                rlv[k, x, r] = cur[k, x]
        si[IM_N] = r + 1
        j += 1
    return j
