"""Binance market data: recorded-file readers, normalized topic records, the local order book.

- :mod:`.formats`  detect and read recorded files (hftbacktest, websocket JSON lines,
  data.binance.vision CSV; gzip or plain) as raw :class:`~.formats.Message` objects, and turn
  websocket payloads into ``trades`` / ``book`` topic records (``trade_record``, ``book_record``).
- :mod:`.book`     ``LocalBook`` (Binance's documented diff/snapshot sync) and ``DepthFeed``
  (diffs and snapshots -> ``depth`` / ``snapshot`` / ``gap`` topic records).
- :mod:`.merge`    ``Merger``: deterministic merge of FIFO streams by exchange time.
- :mod:`.replay`   recorded files -> topic records in exchange-time order (harvest replay,
  ``ofi signals``).
"""
