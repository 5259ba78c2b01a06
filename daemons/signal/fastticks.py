"""The book-ticker and trade lines of an hftbacktest recording, read by numba-compiled code a
block at a time (the main process of the two-process ``ofi signals``, :mod:`.offline`).

:func:`tick_lines` reads ``<stamp> {"stream":"<name>","data":{...}}`` lines of the
``bookTicker`` and ``trade`` streams straight from the block's bytes and does what
:meth:`~.offline.OfflineRun._read` does with each, in file order: the merge key (the stream's
frontier, a silence after ``stall_ms``), the CKS term against the previous book update, the
quantities in 1e-8 units. It stops at the first line it does not read exactly as orjson and
``float`` would (anything but flat objects of plain strings, plain integers and booleans with
the keys of those two events; a price or quantity that is not plain decimal digits with at most
15 significant; a line of another kind), and the caller reads that line the Python way, on the
same state, then calls it again from the next line. So the rows, and the silences it notes, are
exactly the Python loop's.

:func:`accumulate` is :meth:`SignalCore.process_items`'s loop over merged rows: the interval
sums, and where an interval closes (the records are then made by the core).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..marketdata.fastbook import _number, batch_count, stalled_key

# float state (``fs``): frontiers of trades and book, the latest receive time, previous bid/ask
F_TRADE, F_BOOK, NEWEST, PB, PA = range(5)
# int state (``is_``): previous bid/ask qty, has a previous book, rows written (trades, book),
# silences noted, the stamp's divisor (0: not known yet)
PQB, PQA, HAS_PREV, NT, NB, NS, DIV = range(7)

#: line kinds of :func:`tick_lines` (see fastbook.scan_block)
_OTHER_STREAM, _DEPTH_STREAM = 0, 1

_DATA_KEY = np.frombuffer(b'","data":{', np.uint8)
_BOOK_TICKER = np.frombuffer(b"bookTicker", np.uint8)
_TRADE = np.frombuffer(b"trade", np.uint8)
_MARKET = np.frombuffer(b"MARKET", np.uint8)
_TAG = np.frombuffer(b'{"stream":"', np.uint8)
_BOOK_STREAM = np.frombuffer(b"@bookTicker", np.uint8)


@njit(cache=True, nogil=True)
def _string(buf, i, end):
    """A plain JSON string at ``buf[i]`` (the opening quote): the index of its closing quote, -1
    when it is not plain printable ASCII without escapes."""
    if i >= end or buf[i] != 34:
        return -1
    i += 1
    while i < end:
        c = buf[i]
        if c == 34:
            return i
        if c == 92 or c < 32 or c >= 127:
            return -1
        i += 1
    return -1


@njit(cache=True, nogil=True)
def _int(buf, i, end):
    """A JSON non-negative integer (at most 18 digits) at ``buf[i]``: (ok, value, next)."""
    v = np.int64(0)
    k = 0
    j = i
    while j < end and buf[j] >= 48 and buf[j] <= 57:
        v = v * 10 + (buf[j] - 48)
        k += 1
        j += 1
    if k == 0 or k > 18 or (k > 1 and buf[i] == 48):
        return False, v, j
    return True, v, j


@njit(cache=True, nogil=True)
def _equal(buf, a, b, word):
    if b - a != word.shape[0]:
        return False
    for k in range(word.shape[0]):
        if buf[a + k] != word[k]:
            return False
    return True


@njit(cache=True, nogil=True)
def _key(t, f, recv, stall, stream, fs_idx, fs, is_, st_stream, st_t, st_until):
    """merge.stalled_key for the stream whose frontier is ``fs[fs_idx]``; the key."""
    floor = recv - stall
    if t >= f and t >= floor:
        fs[fs_idx] = t
        return t
    if floor > f and f != -np.inf:
        n = is_[NS]
        st_stream[n] = stream
        st_t[n] = np.int64(f)
        st_until[n] = t
        is_[NS] = n + 1
    key = f if f > floor else np.float64(floor)
    if t > key:
        key = np.float64(t)
    fs[fs_idx] = key
    return np.int64(key)


#: :func:`_flat` fields (``f``): where the strings e, s start and end, where the quoted b, B, a,
#: A, q, p start, where X starts and ends (-1: absent), the ints E, T, u, t, m (1 true, 0 false,
#: -1 absent), the keys seen (bits: e s b B a A q X p E T u t m M)
FE0, FE1, FS0, FS1, FB, FBB, FA, FAA, FQ, FP, FX0, FX1, FEV, FTV, FUV, FTID, FM, FSEEN = \
    range(18)
NF = 18


@njit(cache=True, nogil=True)
def _flat(buf, i, end, f):
    """The flat object of a book-ticker or trade event at ``buf[i]`` (after its ``{``): its
    fields into ``f``; the index after its ``}``, -1 when it is anything else (another key, a
    key twice, a value that is not a plain string, integer or boolean)."""
    for k in range(NF):
        f[k] = -1
    f[FEV] = f[FTV] = f[FUV] = f[FTID] = 0
    seen = 0
    while True:
        if i >= end or buf[i] != 34 or i + 4 > end or buf[i + 2] != 34 or buf[i + 3] != 58:
            return -1
        c = buf[i + 1]
        i += 4
        if c == 101:
            bit = 1
        elif c == 115:
            bit = 2
        elif c == 98:
            bit = 4
        elif c == 66:
            bit = 8
        elif c == 97:
            bit = 16
        elif c == 65:
            bit = 32
        elif c == 113:
            bit = 64
        elif c == 88:
            bit = 128
        elif c == 112:
            bit = 256
        elif c == 69:
            bit = 512
        elif c == 84:
            bit = 1024
        elif c == 117:
            bit = 2048
        elif c == 116:
            bit = 4096
        elif c == 109:
            bit = 8192
        elif c == 77:
            bit = 16384   # spot's "M" (ignore): a boolean read and left
        else:
            return -1
        if seen & bit:
            return -1
        seen |= bit
        if bit <= 256:   # strings
            q = _string(buf, i, end)
            if q < 0:
                return -1
            if bit == 1:
                f[FE0] = i + 1
                f[FE1] = q
            elif bit == 2:
                f[FS0] = i + 1
                f[FS1] = q
            elif bit == 4:
                f[FB] = i
            elif bit == 8:
                f[FBB] = i
            elif bit == 16:
                f[FA] = i
            elif bit == 32:
                f[FAA] = i
            elif bit == 64:
                f[FQ] = i
            elif bit == 128:
                f[FX0] = i + 1
                f[FX1] = q
            else:
                f[FP] = i
            i = q + 1
        elif bit >= 8192:   # true / false
            if i + 4 <= end and buf[i] == 116 and buf[i + 1] == 114 and buf[i + 2] == 117 \
                    and buf[i + 3] == 101:
                v = 1
                i += 4
            elif i + 5 <= end and buf[i] == 102 and buf[i + 1] == 97 \
                    and buf[i + 2] == 108 and buf[i + 3] == 115 and buf[i + 4] == 101:
                v = 0
                i += 5
            else:
                return -1
            if bit == 8192:
                f[FM] = v
        else:
            ok, v, i = _int(buf, i, end)
            if not ok:
                return -1
            if bit == 512:
                f[FEV] = v
            elif bit == 1024:
                f[FTV] = v
            elif bit == 2048:
                f[FUV] = v
            else:
                f[FTID] = v
        if i >= end:
            return -1
        if buf[i] == 44:
            i += 1
            continue
        if buf[i] != 125:
            return -1
        f[FSEEN] = seen
        return i + 1


@njit(cache=True, nogil=True)
def _data_at(buf, s, end):
    """In the line ``buf[s:end]``, ``<stamp> {"stream":"<name>","data":{...}}``: where the data
    object's fields start and where the stream's name ends; (-1, -1) when it is not such a
    line (the stream name is not a plain string)."""
    i = s
    while buf[i] != 32:
        i += 1
    i += 1 + _TAG.shape[0]
    q = _string(buf, i - 1, end)
    if q < 0 or not _equal(buf, q, min(q + _DATA_KEY.shape[0], end), _DATA_KEY):
        return -1, -1
    return q + _DATA_KEY.shape[0], q


@njit(cache=True, nogil=True)
def tick_lines(buf, starts, ends, stamps, kinds, j, want, stall, fs, is_, f,
               tk, tt, tq, tb, bk, bt, be, bbid, bqb, bask, bqa, st_stream, st_t, st_until):
    """Read lines ``j, j+1, ...`` of a block (``fastbook.scan_block``'s arrays) until one this
    does not read (returned: its index; ``len(starts)`` at the end). Depth stream lines are
    skipped once the stamp's divisor is known. Rows go to the trade arrays (key*4, t, qty,
    is_buy) and book arrays (key*4+1, t, term, bid, bid qty, ask, ask qty) at ``is_[NT]`` /
    ``is_[NB]``; silences to ``st_*`` at ``is_[NS]``. ``f``: :func:`_flat`'s scratch."""
    n = starts.shape[0]
    div = is_[DIV]
    if div == 0:
        return j
    nw = want.shape[0]
    while j < n:
        kind = kinds[j]
        if kind == _DEPTH_STREAM:
            j += 1
            continue
        if kind != _OTHER_STREAM:
            return j
        end = ends[j]
        recv = stamps[j] // div
        i, _q = _data_at(buf, starts[j], end)
        if i < 0:
            return j
        i = _flat(buf, i, end, f)
        if i < 0:
            return j
        e0, e1, s0, s1 = f[FE0], f[FE1], f[FS0], f[FS1]
        b0, B0, a0, A0, q0, X0, X1 = f[FB], f[FBB], f[FA], f[FAA], f[FQ], f[FX0], f[FX1]
        seen = f[FSEEN]
        hasE = (seen & 512) != 0
        hasT = (seen & 1024) != 0
        E, T, m = f[FEV], f[FTV], f[FM]
        if i + 1 != end or buf[i] != 125 or e0 < 0 or s0 < 0:
            return j
        if recv > fs[NEWEST]:
            fs[NEWEST] = recv
        if s1 - s0 != nw:
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
        if _equal(buf, e0, e1, _BOOK_TICKER):
            if b0 < 0 or B0 < 0 or a0 < 0 or A0 < 0:
                return j
            ok1, bid, _z, _n = _number(buf, b0, end)
            ok2, qbf, _z, _n = _number(buf, B0, end)
            ok3, ask, _z, _n = _number(buf, a0, end)
            ok4, qaf, _z, _n = _number(buf, A0, end)
            if not (ok1 and ok2 and ok3 and ok4):
                return j
            t = E if hasE else recv
            key = _key(t, fs[F_BOOK], recv, stall, 1, F_BOOK, fs, is_, st_stream, st_t,
                       st_until)
            qb = np.int64(np.rint(qbf * 100000000.0))
            qa = np.int64(np.rint(qaf * 100000000.0))
            term = np.int64(0)
            if is_[HAS_PREV]:
                pb = fs[PB]
                pa = fs[PA]
                if bid >= pb:
                    term = qb
                if bid <= pb:
                    term -= is_[PQB]
                if ask <= pa:
                    term -= qa
                if ask >= pa:
                    term += is_[PQA]
            fs[PB] = bid
            fs[PA] = ask
            is_[PQB] = qb
            is_[PQA] = qa
            is_[HAS_PREV] = 1
            r = is_[NB]
            bk[r] = key * 4 + 1
            bt[r] = t
            be[r] = term
            bbid[r] = bid
            bqb[r] = qb
            bask[r] = ask
            bqa[r] = qa
            is_[NB] = r + 1
        elif _equal(buf, e0, e1, _TRADE):
            if not hasT:
                return j
            market = X0 < 0 or _equal(buf, X0, X1, _MARKET)
            if market:
                if q0 < 0 or m < 0:
                    return j
                ok, qf, _z, _n = _number(buf, q0, end)
                if not ok:
                    return j
            else:
                qf = 0.0
            key = _key(T, fs[F_TRADE], recv, stall, 0, F_TRADE, fs, is_, st_stream, st_t,
                       st_until)
            if market:
                r = is_[NT]
                tk[r] = key * 4
                tt[r] = T
                tq[r] = np.int64(np.rint(qf * 100000000.0))
                tb[r] = m == 0
                is_[NT] = r + 1
        else:
            return j
        j += 1
    return j


@njit(cache=True, nogil=True)
def accumulate(kind, t, v, buy, bid, ask, qb, qa, interval, si, sf, ci, cf):
    """:meth:`SignalCore.process_items` over merged rows (kind 0 trade, 1 book, 2 depth; ``v``
    the trade qty or the term). ``si``: bucket (-1: none yet), ofi1, ofi5, buy, sell, trades,
    books, has a best bid/ask, last book's bid qty, ask qty, has a last book; ``sf``: best bid,
    ask. Each time a row starts a later interval, the sums before it go to ``ci`` (the bucket
    the row is in, ofi1, ofi5, buy, sell, trades, books, has a best bid/ask) and ``cf`` (bid,
    ask); returns how many."""
    n = kind.shape[0]
    if n == 0:
        return 0
    bucket = si[0]
    if bucket < 0:
        bucket = t[0] // interval
    end = (bucket + 1) * interval
    ofi1, ofi5, bsum, ssum, trades, books, hp = si[1], si[2], si[3], si[4], si[5], si[6], si[7]
    pb, pa = sf[0], sf[1]
    nc = 0
    for r in range(n):
        tr = t[r]
        if tr >= end:
            b = tr // interval
            ci[nc, 0] = b
            ci[nc, 1] = ofi1
            ci[nc, 2] = ofi5
            ci[nc, 3] = bsum
            ci[nc, 4] = ssum
            ci[nc, 5] = trades
            ci[nc, 6] = books
            ci[nc, 7] = hp
            cf[nc, 0] = pb
            cf[nc, 1] = pa
            nc += 1
            bucket = b
            end = (b + 1) * interval
            ofi1 = ofi5 = bsum = ssum = trades = books = 0
        k = kind[r]
        if k == 1:
            ofi1 += v[r]
            pb = bid[r]
            pa = ask[r]
            hp = 1
            books += 1
            si[8] = qb[r]
            si[9] = qa[r]
            si[10] = 1
        elif k == 0:
            if buy[r]:
                bsum += v[r]
            else:
                ssum += v[r]
            trades += 1
        else:
            ofi5 += v[r]
    si[0] = bucket
    si[1], si[2], si[3], si[4], si[5], si[6], si[7] = ofi1, ofi5, bsum, ssum, trades, books, hp
    sf[0], sf[1] = pb, pa
    return nc


# -- book-ticker and trade lines as catalog rows (ofi data import) ------------------------------

#: :func:`tick_rows` int state: the stamp's divisor, messages counted, the count at which the
#: next batch floor is taken, book rows in the buffer and its capacity, the same of trades,
#: silences written
R_DIV, R_COUNT, R_NB, R_NBK, R_CAPB, R_NTR, R_CAPT, R_NS = range(8)
#: :func:`tick_rows` float state: the merge frontiers of trades and book, their last keys, the
#: newest receive time
R_FT, R_FB, R_LT, R_LB, R_NEWEST = range(5)


@njit(cache=True, nogil=True)
def tick_rows(buf, starts, ends, stamps, kinds, j, want, stall, batch, si, sf, f,
              bi, bnull, bf, ti, tf, tb, st_idx, st_stream, st_t, st_until):
    """The lines ``j, j+1, ...`` of a block as the import's main process reads them while the
    depth worker reads the depth stream: every depth line counted (Replay's batches), each
    ``bookTicker`` and ``trade`` event of ``want`` (a book ticker without ``e`` on a
    ``@bookTicker`` stream too, as spot's) a row with its merge key (the silence before it
    noted: message number, stream 0 trades / 1 book, t, until).

    Book rows: ``bi`` (key, t, recv, E, T, u) with ``bnull`` (E, T, u absent) and ``bf`` (bid,
    bid qty, ask, ask qty) at ``si[R_NBK]``; trade rows: ``ti`` (key, t, recv, E, trade id),
    ``tf`` (price, qty), ``tb`` (is buy, MARKET) at ``si[R_NTR]``. Returns the index of the
    first line it leaves to the caller (another symbol or event, a value it does not read
    exactly as orjson and ``float`` would, a full buffer), ``len(starts)`` at the end."""
    n = starts.shape[0]
    div = si[R_DIV]
    if div == 0:
        return j
    nw = want.shape[0]
    while j < n:
        kind = kinds[j]
        if kind == _DEPTH_STREAM:   # the worker's: counted only
            batch_count(si, sf, stamps[j] // div, stall, batch, R_COUNT, R_NB, R_NEWEST, R_FT,
                        R_FB)
            j += 1
            continue
        if kind != _OTHER_STREAM:
            return j
        end = ends[j]
        i, name_end = _data_at(buf, starts[j], end)
        if i < 0:
            return j
        i = _flat(buf, i, end, f)
        if i < 0 or i + 1 != end or buf[i] != 125 or f[FS0] < 0:
            return j
        s0 = f[FS0]
        if f[FS1] - s0 != nw:
            return j
        for k in range(nw):
            if buf[s0 + k] != want[k]:
                return j
        if f[FE0] >= 0:
            book = _equal(buf, f[FE0], f[FE1], _BOOK_TICKER)
            if not book and not _equal(buf, f[FE0], f[FE1], _TRADE):
                return j
        else:   # no event type (spot's book ticker): the stream's name says
            nb = _BOOK_STREAM.shape[0]
            book = name_end - nb >= 0 and _equal(buf, name_end - nb, name_end, _BOOK_STREAM)
            if not book:
                return j
        seen = f[FSEEN]
        hasE = (seen & 512) != 0
        recv = stamps[j] // div
        if book:
            r = si[R_NBK]
            if r >= si[R_CAPB] or f[FB] < 0 or f[FBB] < 0 or f[FA] < 0 or f[FAA] < 0:
                return j
            ok1, bid, _z, _n = _number(buf, f[FB], end)
            ok2, bq, _z, _n = _number(buf, f[FBB], end)
            ok3, ask, _z, _n = _number(buf, f[FA], end)
            ok4, aq, _z, _n = _number(buf, f[FAA], end)
            if not (ok1 and ok2 and ok3 and ok4):
                return j
            batch_count(si, sf, recv, stall, batch, R_COUNT, R_NB, R_NEWEST, R_FT, R_FB)
            t = f[FEV] if hasE else recv
            key = stalled_key(t, recv, stall, sf, R_FB, R_LB, si, R_NS, R_COUNT, 1, st_idx,
                              st_stream, st_t, st_until)
            bi[0, r] = key
            bi[1, r] = t
            bi[2, r] = recv
            bi[3, r] = f[FEV]
            bi[4, r] = f[FTV]
            bi[5, r] = f[FUV]
            bnull[0, r] = not hasE
            bnull[1, r] = (seen & 1024) == 0
            bnull[2, r] = (seen & 2048) == 0
            bf[0, r] = bid
            bf[1, r] = bq
            bf[2, r] = ask
            bf[3, r] = aq
            si[R_NBK] = r + 1
        else:
            r = si[R_NTR]
            hasT = (seen & 1024) != 0
            if r >= si[R_CAPT] or not (hasT or hasE) or (seen & 4096) == 0 or f[FP] < 0 \
                    or f[FQ] < 0 or f[FM] < 0:
                return j
            ok1, price, _z, _n = _number(buf, f[FP], end)
            ok2, qty, _z, _n = _number(buf, f[FQ], end)
            if not (ok1 and ok2):
                return j
            batch_count(si, sf, recv, stall, batch, R_COUNT, R_NB, R_NEWEST, R_FT, R_FB)
            T = f[FTV] if hasT else f[FEV]
            E = f[FEV] if hasE else T
            key = stalled_key(T, recv, stall, sf, R_FT, R_LT, si, R_NS, R_COUNT, 0, st_idx,
                              st_stream, st_t, st_until)
            ti[0, r] = key
            ti[1, r] = T
            ti[2, r] = recv
            ti[3, r] = E
            ti[4, r] = f[FTID]
            tf[0, r] = price
            tf[1, r] = qty
            tb[0, r] = f[FM] == 0
            tb[1, r] = f[FX0] < 0 or _equal(buf, f[FX0], f[FX1], _MARKET)
            si[R_NTR] = r + 1
        j += 1
    return j
