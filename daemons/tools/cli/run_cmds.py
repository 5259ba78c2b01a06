"""``ofi run`` and ``ofi status``: the pipeline under supervisord."""
from __future__ import annotations

import click
import orjson

from ..supervise import conf, control
from ..supervise.run import run as run_pipeline
from ..supervise.status import format_status, status as get_status
from ..supervise.summary import format_summary
from .common import MODES, json_option, load_config, pass_config, runtime_options


@click.command()
@runtime_options
@click.option("--enable", default=",".join(conf.STAGES), show_default=True,
              help="Comma-separated stages to run.")
@click.option("--mode", type=click.Choice(MODES), default=None,
              help="Broker venue (default: config / EXECUTOR_MODE).")
@click.option("--symbols", default=None, help="Comma-separated symbols, e.g. BTCUSDT,ETHUSDT.")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Run this long, then stop (default: until Ctrl-C).")
@json_option
def run(config_path, home, sink, enable, mode, symbols, minutes, as_json):
    """Run the pipeline under supervisord: start in order, run, stop in reverse, summarize.

    A program that refuses to start (bad config, missing keys, a production host outside live
    mode, an unreachable venue) is not restarted: the run stops and prints its reason, exit 2.

    Example: ofi run --mode sim --minutes 2 --home /tmp/ofi
    """
    cfg = load_config(config_path, home=home, sink=sink, **{
        "broker.mode": mode,
        "symbols": [s.strip().upper() for s in symbols.split(",") if s.strip()] if symbols else None,
    })
    stages = [s.strip() for s in enable.split(",") if s.strip()]
    try:
        conf.programs_for(stages, cfg["broker"]["mode"])
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    echo = (lambda *_: None) if as_json else click.echo
    try:
        summary = run_pipeline(cfg, stages, minutes, echo=echo)
    except control.SupervisorError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(orjson.dumps(summary).decode())
    else:
        click.echo(format_summary(summary))
    if not summary["all_ready"]:
        exc = click.ClickException(summary["error"] or "not every program became ready")
        if summary.get("refused"):
            exc.exit_code = 2   # a refusal to start: configuration, keys or venue
        raise exc


@click.command()
@json_option
@pass_config
def status(as_json, cfg):
    """Each program's state, pid, readiness, heartbeat age and lag; trading state; venue."""
    s = get_status(cfg)
    click.echo(orjson.dumps(s).decode() if as_json else format_status(s))


@click.command(name="health-listener", hidden=True)
@click.option("--home", required=True)
@click.option("--config", "config_path", default=None)
def health_listener(home, config_path):
    """supervisord event listener (readiness and health); started by supervisord."""
    from ..supervise.listener import serve

    return serve(home, config_path)


def _programs_by_priority(home: str) -> list[str]:
    infos = control.rpc_for(home).supervisor.getAllProcessInfo()
    names = [i["name"] for i in infos if i["name"] in conf.POLICY]
    return sorted(names, key=lambda n: conf.POLICY[n].priority)


@click.command()
@click.option("--wait-supervisord", type=float, default=0.0, metavar="S",
              help="Wait up to S seconds for supervisord to answer first.")
@pass_config
def start(wait_supervisord, cfg):
    """Start every program of a running supervisord in order, each once the one before is ready.

    For servers where supervisord runs as a service (etc/systemd/ofi.service).
    """
    import time

    from ... import config as configmod

    home = str(configmod.home_of(cfg))
    deadline = time.time() + wait_supervisord
    while not control.is_running(home):
        if time.time() >= deadline:
            raise click.ClickException(f"no supervisord answers on {home}/supervisor.sock")
        time.sleep(0.2)
    try:
        control.start_in_order(home, _programs_by_priority(home),
                               cfg["supervise"]["start_timeout_s"],
                               on_ready=lambda n, dt: click.echo(f"{n} ready in {dt:.1f}s"))
    except control.SupervisorError as exc:
        err = click.ClickException(str(exc))
        if isinstance(exc, control.RefusedError):
            err.exit_code = 2
        raise err from None


@click.command()
@pass_config
def stop(cfg):
    """Stop every program of a running supervisord in reverse priority order."""
    from ... import config as configmod

    home = str(configmod.home_of(cfg))
    if not control.is_running(home):
        raise click.ClickException(f"no supervisord answers on {home}/supervisor.sock")
    control.stop_in_order(home, list(reversed(_programs_by_priority(home))),
                          on_stopped=lambda n: click.echo(f"{n} stopped"))
