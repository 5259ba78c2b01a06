"""The Binance USD-M REST (and user data stream) client, laid out by protocol surface.

==============  ==========================================================================
module          what it holds
==============  ==========================================================================
urls            base URLs per mode, endpoint paths, the user-stream URL
signing         HMAC-SHA256 signatures, parameter encoding, the server-time offset
errors          typed errors: Rejected, Ambiguous, NotSent (RateLimited, Banned), NotFound
schemas         wire shapes -> domain dicts (``parse_*``), exchangeInfo symbol filters
filters         tick size, step size, min notional and percent price applied before sending
http            the requests session: one method per endpoint, rate limits, -1021 resync
wsconn          one client websocket over websockets' sans-I/O protocol, read by its owner
wsapi           the WebSocket API: order.place, order.cancel, order.status, algo orders
userstream      the user data stream (listenKey) and market streams, read by the owner's loop
==============  ==========================================================================

The same client serves sim (``ofi exchange`` on loopback), testnet and live: only the URLs and
the keys differ.
"""
