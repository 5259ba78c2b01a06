"""``ofi exchange``: a local Binance USD-M compatible exchange (REST + websocket on one port).

Users point their own Binance clients and bots at it to paper-trade offline, replay recorded
days and rehearse failures. :func:`main` runs it (``ofi exchange``, ``ofi daemon exchange``,
``python -m daemons.tools.exchange``): it prints a JSON log line containing ``ofi-ready`` with the URLs
once it serves, writes the heartbeat ``<home>/run/exchange.json``, and stops cleanly (exit 0)
on SIGTERM or SIGINT.
"""
from __future__ import annotations

import asyncio
import os
import signal
import sys
from decimal import Decimal, InvalidOperation
from types import SimpleNamespace

import click

from ... import config as configmod
from ..cli.common import STANDALONE
from ...log import Logger
from ...log import install as install_logging
from ...runtime import Heartbeat, announce_ready
from ...marketdata import formats
from . import faults as faultsmod

DESCRIPTION = "Local Binance USD-M compatible exchange: REST and websocket on one port."

EPILOG = """\
REST (Binance's paths and JSON): /fapi/v1/{ping,time,exchangeInfo,depth,ticker/bookTicker,
ticker/price,ticker/24hr,premiumIndex,order (POST/GET/DELETE),order/test,openOrder,openOrders,
allOpenOrders (DELETE),allOrders,userTrades,algoOrder (POST/GET/DELETE),openAlgoOrders,
allAlgoOrders,algoOpenOrders (DELETE),countdownCancelAll,income,leverage,marginType,
positionSide/dual (GET/POST),leverageBracket,listenKey (POST/PUT/DELETE)},
/fapi/v2|v3/{positionRisk,account,balance}. Parameters are read like Binance reads them: from
the query string and, on POST/PUT/DELETE, from a form-urlencoded body (also one without a
Content-Type), mixed as you like, the query string winning a clash; a parameter repeated within
one of them is -1101. Signed endpoints check X-MBX-APIKEY, the HMAC-SHA256 signature over the
raw query string + body (-1102 without one, -1022 wrong), and timestamp/recvWindow.
Websocket on the same port: /ws/<stream>[/<stream>...], /stream?streams=a/b, the same under
/public, /market and /private; SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY combined.
Streams: <s>@trade, <s>@aggTrade, <s>@bookTicker, !bookTicker, <s>@depth@0ms, <s>@depth@100ms,
<s>@depth (250 ms), <s>@depth@500ms, <s>@depth5|10|20[@100ms|@500ms], <s>@markPrice[@1s], and the
user data stream on a listenKey (/ws/<listenKey>, /private/ws?listenKey=...).
Trading: MARKET and LIMIT (GTC, IOC, FOK, GTX), reduceOnly; algo orders STOP_MARKET,
TAKE_PROFIT_MARKET, STOP, TAKE_PROFIT (closePosition, MARK_PRICE or CONTRACT_PRICE triggers,
ALGO_UPDATE events); a dead-man switch; one-way positions (the hedge-mode flag is stored, orders
are refused while it is on), cross margin (marginType stored), fees maker 0.02 % / taker 0.05 %,
funding at every funding time (--funding-interval-s, --funding-rate) on the mark = the mid.
Market orders walk the book; a resting limit order fills as maker, at its price, by at most what
the market trades through it (a print beyond its price), so it may fill in parts. A newClientOrderId is refused (-4116) only while an order with it is
open. Balances start at --balance USDT per API key. Details: docs/exchange.md.

""" + faultsmod.HELP


class _Command(click.Command):
    """The exchange's command: --symbols and --input take one or more values (``--input a b``,
    as ``--input a --input b``; a later --input replaces an earlier one), and the epilog (the
    REST, websocket and fault-spec reference) is printed as written."""

    GREEDY = ("--symbols", "--input")

    def parse_args(self, ctx, args):
        return super().parse_args(ctx, _spread(args, self.GREEDY))

    def format_epilog(self, ctx, formatter):
        if self.epilog:
            formatter.write("\n" + self.epilog)


def _spread(args: list[str], greedy) -> list[str]:
    """``--opt a b --x`` -> ``--opt a --opt b --x`` for each option in ``greedy`` (moved to the
    front); of an option given twice, the last occurrence is kept."""
    last: dict[str, list[str]] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        name, eq, value = arg.partition("=")
        i += 1
        if name not in greedy:
            rest.append(arg)
            continue
        values = [value] if eq else []
        while i < len(args) and not args[i].startswith("-"):
            values.append(args[i])
            i += 1
        last[name] = values
    front = [x for name, values in last.items()
             for x in ([y for v in values for y in (name, v)] or [name])]
    return front + rest


@click.command(cls=_Command, name="exchange", help=DESCRIPTION, epilog=EPILOG,
               context_settings=STANDALONE)
@click.option("--host", metavar="HOST", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, metavar="PORT", default=None, help="Port (default 8765; 0 picks a free one).")
@click.option("--symbols", multiple=True, metavar="SYM...",
              help="Symbols to list (sim default: the configured symbols; replay: the files').")
@click.option("--feed", type=click.Choice(["sim", "replay"]), default=None,
              help="Market data: sim (default) or replay.")
@click.option("--input", "inputs", multiple=True, metavar="FILE...",
              help="Recorded files for --feed replay (hftbacktest, websocket JSON lines, or "
                   "data.binance.vision aggTrades/trades/bookTicker CSV; gzip or not).")
@click.option("--speed", type=float, metavar="X", default=None,
              help="Replay speed factor (default 1; 0 = no pacing).")
@click.option("--replay-wait", is_flag=True, default=False,
              help="Hold the replay until the first websocket subscription.")
@click.option("--api-key", metavar="KEY", default=None, help="API key accepted (default demo-key).")
@click.option("--api-secret", metavar="SECRET", default=None, help="Its secret (default demo-secret).")
@click.option("--extra-key", "extra_keys", multiple=True, metavar="KEY:SECRET",
              help="One more account (API key and secret) the exchange accepts, e.g. a second "
                   "trader whose orders move the simulated market; repeatable.")
@click.option("--faults", metavar="SPEC", default=None, help="Fault spec (see below).")
@click.option("--seed", type=int, metavar="N", default=None,
              help="Seed of the simulated market and of the faults.")
@click.option("--state", metavar="DIR", default=None,
              help="Keep accounts and orders in DIR across restarts.")
@click.option("--balance", type=float, metavar="USDT", default=None, help="Starting USDT balance of an account.")
@click.option("--funding-interval-s", type=float, metavar="S", default=None,
              help="Seconds between funding times (default 28800 = 8 h, as on Binance; e.g. 10 "
                   "to see several payments in a test).")
@click.option("--funding-rate", metavar="RATE", default=None,
              help="Funding rate charged at every funding time (default 0.0001 = 0.01 %; "
                   "positive: longs pay shorts).")
@click.option("--config", metavar="FILE", default=None,
              help="YAML file overriding etc/defaults.yaml.")
@click.option("--home", metavar="DIR", default=None,
              help="Runtime directory for the heartbeat (default $OFI_HOME, else ./var).")
@click.option("--sink", default=None, hidden=True)    # given to every daemon: not used here
@click.option("--mode", default=None, hidden=True)
@click.pass_context
def command(ctx, **flags) -> int:
    """Parse flags, load config, serve. Expected failures: one line, exit 2."""
    flags["replay_wait"] = flags["replay_wait"] or None   # not given: the configured value
    return main_with(SimpleNamespace(**flags), ctx.command_path)


def settings_from(args, cfg: dict) -> dict:
    """The server's settings from parsed flags over the loaded config."""
    ex = cfg["exchange"]
    symbols = args.symbols or cfg.get("symbols") or ["BTCUSDT"]
    symbols = [s.strip().upper() for item in symbols for s in item.split(",") if s.strip()]
    key = args.api_key or ex["api_key"]
    secret = args.api_secret or ex["api_secret"]
    if bool(args.api_key) != bool(args.api_secret):
        raise ValueError("--api-key and --api-secret go together")
    credentials = {key: secret}
    for item in args.extra_keys or []:
        k, sep, sec = item.partition(":")
        if not sep or not k or not sec:
            raise ValueError(f"--extra-key wants KEY:SECRET, not '{item}'")
        credentials[k] = sec
    feed = args.feed or ex["feed"]
    inputs = args.inputs or ex["inputs"]
    if feed == "replay" and not inputs:
        raise ValueError("--feed replay needs --input FILE...")
    for f in inputs if feed == "replay" else []:
        if not os.path.isfile(f):
            raise ValueError(f"no such input file: {f}")
        fmt = formats.detect(f)    # FormatError is a ValueError: one line
        if fmt.startswith("csv") and not formats.symbol_from_path(f) and \
                not (args.symbols and len(symbols) == 1):
            raise ValueError(f"{f}: CSV files carry no symbol and the name starts with none: "
                             "give one with --symbols SYM")
    interval = float(args.funding_interval_s if args.funding_interval_s is not None
                     else ex["funding_interval_s"])
    if interval < 0.5:
        raise ValueError("--funding-interval-s must be at least 0.5")
    rate = str(args.funding_rate if args.funding_rate is not None else ex["funding_rate"])
    try:
        if not abs(Decimal(rate)) < 1:
            raise InvalidOperation
    except InvalidOperation:
        raise ValueError(f"--funding-rate wants a rate such as 0.0001, not '{rate}'") from None
    fault_text = args.faults if args.faults is not None else ex["faults"]
    seed = args.seed if args.seed is not None else ex["seed"]
    return {
        "host": args.host or ex["host"],
        "port": args.port if args.port is not None else ex["port"],
        "symbols": symbols, "symbols_given": bool(args.symbols),
        "feed": feed, "inputs": list(inputs),
        "speed": args.speed if args.speed is not None else ex["replay_speed"],
        "replay_wait": args.replay_wait if args.replay_wait is not None else ex["replay_wait"],
        "credentials": credentials,
        "faults": faultsmod.parse(fault_text),
        "seed": seed,
        "state_dir": args.state or ex["state_dir"],
        "balance": args.balance if args.balance is not None else ex["balance_usdt"],
        "funding_interval_s": interval,
        "funding_rate": rate,
        "home": str(configmod.home_of(cfg)),
        "heartbeat_s": float(cfg["daemon"]["heartbeat_s"]),
    }


async def serve(settings: dict, log: Logger) -> int:
    """Run the exchange until SIGTERM/SIGINT."""
    from aiohttp import web

    from ... import sched
    from .app import Exchange

    placed = sched.apply_from_env()   # the venue's stand-in answers at once (see sched)
    exchange = Exchange(settings, log)
    runner = web.AppRunner(exchange.application(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings["host"], settings["port"], backlog=512)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        exchange.store.close()
        log.error("fatal", error=f"cannot listen on {settings['host']}:{settings['port']}: {exc.strerror}")
        return 1
    port = site._server.sockets[0].getsockname()[1]
    host = settings["host"]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    exchange.start_background()
    run_dir = os.path.join(settings["home"], "run")
    heartbeat = Heartbeat(run_dir, "exchange", settings["heartbeat_s"])

    def beat(ready: bool, health: dict) -> None:
        try:
            os.makedirs(run_dir, exist_ok=True)
            heartbeat.write(ready, port=port, **health)
        except OSError:
            pass

    beat(True, exchange.health())
    announce_ready(log, host=host, port=port,
                   rest_url=f"http://{host}:{port}", ws_url=f"ws://{host}:{port}",
                   symbols=sorted(exchange.specs), feed=settings["feed"],
                   faults={k: v for k, v in vars(settings["faults"]).items()
                           if v != getattr(faultsmod.FaultSpec(), k)},
                   state=settings["state_dir"], **placed)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=settings["heartbeat_s"])
        except asyncio.TimeoutError:
            # the file's create and rename take 0.3-0.6 ms here, more under load: off the event
            # loop, so that an order arriving then is not held up (health read on the loop)
            await loop.run_in_executor(None, beat, True, exchange.health())
    await exchange.stop()
    await runner.cleanup()
    beat(False, exchange.health())
    log.info("stopped", **exchange.health())
    return 0


def main(argv: list[str] | None = None, prog: str = "ofi exchange") -> int:
    """``ofi exchange`` run on its own (as ``prog``), with ``ofi``'s error handling."""
    from ..cli import run_command

    return run_command(command, sys.argv[1:] if argv is None else list(argv), prog)


def main_with(args, prog: str) -> int:
    """Load config, check the flags (``args``: :func:`command`'s values), serve."""
    try:
        cfg = configmod.load(args.config, {"home": args.home})
        settings = settings_from(args, cfg)
    except (configmod.ConfigError, ValueError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    log = Logger("exchange", cfg["log"]["level"])
    install_logging("exchange", cfg["log"]["level"])
    try:
        return asyncio.run(serve(settings, log))
    except KeyboardInterrupt:
        return 0
    except FileNotFoundError as exc:
        print(f"{prog}: no such file: {exc}", file=sys.stderr)
        return 2
    except formats.FormatError as exc:     # a bad line among a replay file's first messages
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
