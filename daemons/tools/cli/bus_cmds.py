"""``ofi tail`` and ``ofi bus stats|append``: the bus from a shell."""
from __future__ import annotations

import os
import sys
import time

import click
import orjson

from bus import TOPICS, BadRecord, check_payload

from .common import json_option, open_cli_bus, pass_config


@click.command()
@click.argument("topic", type=click.Choice(TOPICS))
@click.option("--from-start", is_flag=True, help="Start at the first record (default: the end).")
@click.option("--no-follow", is_flag=True, help="Stop at the end instead of waiting for more.")
@json_option
@pass_config
def tail(topic, from_start, no_follow, as_json, cfg):
    """Print the records of TOPIC (either sink), following new ones.

    --json prints each record exactly as stored, one a line (lines that are not records are
    reported on stderr instead).

    Example: ofi tail signals --from-start --no-follow --json | jq .fusion
    """
    bus = open_cli_bus(cfg)
    reader = bus.reader(topic, start="beginning" if from_start else "end", raw=as_json)
    bus.watch(topic)
    out = sys.stdout.buffer
    try:
        while True:
            items = reader.read(5000)
            for item in items:
                rec = item[0]
                if isinstance(rec, BadRecord):
                    print(f"ofi tail: unreadable record in {topic}: {rec.reason}", file=sys.stderr)
                    continue
                if as_json:
                    raw = item[2]
                    out.write((raw if isinstance(raw, bytes) else raw.encode()) + b"\n")
                else:
                    out.write(_pretty(rec).encode() + b"\n")
            out.flush()
            if not items:
                if no_follow:
                    break
                bus.wait()
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        # the reader went away (| head): silence the final flush at exit too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        reader.close()
        bus.close()


def _pretty(rec: dict) -> str:
    ts = time.strftime("%H:%M:%S", time.gmtime(rec["ts"] / 1000)) + f".{rec['ts'] % 1000:03d}"
    rest = " ".join(f"{k}={v}" for k, v in rec.items() if k not in ("seq", "ts", "type"))
    return f"{rec['seq']:>8} {ts} {rec['type']:<10} {rest}"


@click.group(name="bus")
def bus_group():
    """Inspect and feed the file bus."""


@bus_group.command()
@json_option
@pass_config
def stats(as_json, cfg):
    """Per topic: records, bytes, last seq; per consumer: position and lag."""
    bus = open_cli_bus(cfg)
    data = bus.stats()
    bus.close()
    if as_json:
        click.echo(orjson.dumps(data).decode())
        return
    click.echo(f"home {data['home']}")
    click.echo(f"{'topic':<12} {'sink':<7} {'records':>10} {'bytes':>12} {'last_seq':>10}")
    for name, t in data["topics"].items():
        click.echo(f"{name:<12} {t['sink']:<7} {t['records']:>10} {t['bytes']:>12} {t['last_seq']:>10}")
    if data["consumers"]:
        click.echo(f"\n{'consumer':<12} {'topic':<12} {'position':>10} {'lag':>8}")
        for c in data["consumers"]:
            click.echo(f"{c['consumer']:<12} {c['topic']:<12} {c['position']:>10} {c['lag']:>8}")


@bus_group.command()
@click.argument("topic", type=click.Choice([t for t in TOPICS if t != "deadletter"]))
@pass_config
def append(topic, cfg):
    """Append JSON objects read from stdin (one a line) to TOPIC as records.

    Each object needs a string "type"; seq and ts are assigned. A line that is not such an
    object goes to deadletter with the reason; the rest are appended.
    """
    bus = open_cli_bus(cfg)
    writer = bus.writer(topic)
    good = bad = 0
    try:
        for lineno, line in enumerate(sys.stdin.buffer, 1):
            if not line.strip():
                continue
            try:
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise BadRecord(f"unparseable JSON: {exc}") from None
                writer.append(check_payload(obj))
                good += 1
            except BadRecord as exc:
                bus.deadletter(exc.reason, line.decode(errors="replace").rstrip("\r\n"),
                               source="stdin", position={"line": lineno}, stage="bus append")
                bad += 1
    finally:
        writer.close()
        bus.close()
    click.echo(f"appended {good} record(s) to {topic}; {bad} to deadletter", err=True)
    if bad:
        sys.exit(1)
