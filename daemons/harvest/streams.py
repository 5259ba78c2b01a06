"""Which websocket URLs carry which market streams (pure functions, no I/O).

Binance USD-M now routes market streams by category (``/public`` for the high-frequency book
streams, ``/market`` for the rest); the unrouted ``/stream`` path is the legacy layout. The
``harvest.route`` setting chooses:

==========  ===========================================================================
route       connections
==========  ===========================================================================
routed      one connection per category: ``<ws>/public/stream?streams=<book streams>``
            and ``<ws>/market/stream?streams=<trade streams>`` (what Binance needs now)
market      every stream on ``<ws>/market/stream?streams=...``
public      every stream on ``<ws>/public/stream?streams=...``
legacy      every stream on ``<ws>/stream?streams=...`` (the unrouted layout)
==========  ===========================================================================
"""
from __future__ import annotations

ROUTES = ("routed", "market", "public", "legacy")

# Stream kinds Binance serves on /public (KB websocket-market-streams, routing notice):
# bookTicker and every depth stream. Trades (aggTrade, and the undocumented @trade the recordings
# carry) and everything else live on /market.
_PUBLIC_PREFIXES = ("bookTicker", "depth")


def stream_names(symbols: list[str], streams: list[str]) -> list[str]:
    """Combined-stream names, ``<symbol lowercase>@<stream>``, symbol by symbol."""
    return [f"{sym.lower()}@{kind}" for sym in symbols for kind in streams]


def category_of(stream: str) -> str:
    """``public`` or ``market``: where Binance's routed layout serves this stream."""
    kind = stream.split("@", 1)[1] if "@" in stream else stream
    return "public" if kind.startswith(_PUBLIC_PREFIXES) else "market"


def base_url(ws_url: str) -> str:
    """The venue's websocket root: trailing ``/``, ``/ws`` or ``/stream`` removed."""
    if not ws_url.startswith(("ws://", "wss://")):
        raise ValueError(f"websocket URL must start with ws:// or wss://, not {ws_url!r}")
    url = ws_url.rstrip("/")
    for suffix in ("/ws", "/stream"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
    return url


def connection_urls(ws_url: str, symbols: list[str], streams: list[str],
                    route: str = "routed") -> dict[str, str]:
    """Connection name -> combined-stream URL for ``route`` (see the module docstring)."""
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; choose one of: {', '.join(ROUTES)}")
    root = base_url(ws_url)
    names = stream_names(symbols, streams)
    if not names:
        raise ValueError("no streams to subscribe")
    if route == "legacy":
        groups = {"legacy": names}
    elif route in ("market", "public"):
        groups = {route: names}
    else:
        groups: dict[str, list[str]] = {}
        for name in names:
            groups.setdefault(category_of(name), []).append(name)
    prefix = {"legacy": ""}
    return {group: f"{root}{prefix.get(group, '/' + group)}/stream?streams={'/'.join(members)}"
            for group, members in groups.items()}
