"""``ofi keys add|list|remove``: API keys in ``<home>/secrets/credentials.json`` (0600)."""
from __future__ import annotations

import sys

import click
import orjson

from ...broker import keys as keysmod
from .common import home_option, json_option


def _home(home):
    from ... import config as configmod
    return configmod.home_of({"home": home or "./var"})


@click.group(name="keys")
def keys_group():
    """API key management: add from stdin, list masked, remove.

    The broker uses the profile named after its mode (testnet, live, sim) unless
    broker.keys_profile names another, and only when neither the config nor OFI_API_KEY /
    OFI_API_SECRET give a key. Keys are never printed or logged.
    """


@keys_group.command("add")
@click.argument("name")
@home_option
def add_cmd(name, home):
    """Store profile NAME: the API key on the first line of stdin, the secret on the second.

    Example: printf '%s\\n%s\\n' "$KEY" "$SECRET" | ofi keys add testnet
    On a terminal both are prompted for without echo.
    """
    if sys.stdin.isatty():
        api_key = click.prompt("API key", hide_input=True)
        api_secret = click.prompt("API secret", hide_input=True)
    else:
        lines = [ln.strip() for ln in sys.stdin.read().splitlines() if ln.strip()]
        if len(lines) != 2:
            raise click.UsageError("stdin must hold two lines: the API key, then the secret")
        api_key, api_secret = lines
    try:
        keysmod.add(_home(home), name, api_key, api_secret)
    except keysmod.KeysError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"stored profile {name} (key {keysmod.mask(api_key)}) in "
               f"{keysmod.credentials_path(_home(home))}", err=True)


@keys_group.command("list")
@home_option
@json_option
def list_cmd(home, as_json):
    """The stored profiles, keys masked."""
    try:
        rows = keysmod.listing(_home(home))
    except keysmod.KeysError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(orjson.dumps(rows).decode())
        return
    if not rows:
        click.echo("no keys stored")
        return
    click.echo(f"{'profile':<16} {'api key':<12} secret")
    for r in rows:
        click.echo(f"{r['name']:<16} {r['api_key']:<12} ****")


@keys_group.command("remove")
@click.argument("name")
@home_option
def remove_cmd(name, home):
    """Delete profile NAME."""
    try:
        found = keysmod.remove(_home(home), name)
    except keysmod.KeysError as exc:
        raise click.ClickException(str(exc)) from None
    if not found:
        raise click.ClickException(f"no profile named {name!r}")
    click.echo(f"removed profile {name}", err=True)
