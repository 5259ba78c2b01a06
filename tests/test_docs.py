"""The documentation and the command line agree (in the spirit of sqlite-utils' test_docs).

Every verb (``ofi VERB``, ``ofi GROUP VERB``) and every ``--flag`` written in README.md or
docs/*.md exists, and every verb and flag of ``ofi`` is written somewhere there. The commands
come from walking the click group (lazily loaded verbs included); no subprocess is started.
"""
from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from daemons.tools.cli import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: flags the docs write for other programs than ofi (the line they are on, for the record)
FOREIGN_FLAGS = {
    "--system": "sudo useradd --system --home /opt/ofi ofi",
    "--now": "sudo systemctl enable --now ofi",
    "--fast": "bin/test --fast",
}
#: click's own flags: they exist everywhere and need no documentation of ours
BUILTIN_FLAGS = {"--help", "--version"}

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
# `ofi WORD [WORD]` where ofi is the command (not part of a path, a name such as ofi-pipeline
# or the user of `sudo -u ofi`)
WORD = r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*"
# a word or alternatives (`ofi keys add|list|remove`, `\|` in a table)
VERB = re.compile(rf"(?<![\w/.-])(?<!-u )ofi((?: {WORD}(?:\\?\|{WORD})*(?![\w./-]))+)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")


def _walk(cmd: click.Command, path: tuple[str, ...]):
    yield path, cmd
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd, info_name=path[-1])
        for name in cmd.list_commands(ctx):
            yield from _walk(cmd.get_command(ctx, name), path + (name,))


def _flags(cmd: click.Command) -> set[str]:
    return {o for p in cmd.params if isinstance(p, click.Option) and not p.hidden
            for o in (*p.opts, *p.secondary_opts) if o.startswith("--")}


COMMANDS = {path[1:]: cmd for path, cmd in _walk(cli, ("ofi",)) if len(path) > 1}
PUBLIC = {path: cmd for path, cmd in COMMANDS.items() if not cmd.hidden}


def _code(text: str) -> list[str]:
    """The code of a Markdown text: fenced blocks, indented blocks and inline spans."""
    parts = [m.group(0) for m in FENCE.finditer(text)]
    rest = FENCE.sub("", text)
    parts += [line for line in rest.splitlines() if line.startswith("    ")]
    parts += INLINE.findall(rest)
    return parts


def _written_verbs() -> dict[tuple[str, ...], str]:
    """(verb path) -> where it is written, for each ``ofi ...`` in the docs' code."""
    found = {}
    for doc in DOCS:
        for code in _code(doc.read_text()):
            for m in VERB.finditer(code):
                for path in _paths(m.group(1).split()):
                    found.setdefault(path, f"{doc.name}: {m.group(0)!r}")
    return found


def _paths(words: list[str], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The verbs ``ofi WORDS...`` names: the verb, and below a group its sub-command (each of
    a word's alternatives); what follows a verb is its arguments."""
    out = []
    for word in re.split(r"\\?\|", words[0]):
        sub = path + (word,)
        group = isinstance(COMMANDS.get(sub), click.Group)
        out += _paths(words[1:], sub) if group and len(words) > 1 else [sub]
    return out


def _written_flags() -> dict[str, str]:
    found = {}
    for doc in DOCS:
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            for flag in FLAG.findall(line):
                found.setdefault(flag, f"{doc.name}:{n}")
    return found


def test_the_walk_finds_lazy_verbs_and_their_flags():
    assert ("signals",) in COMMANDS and ("data", "import") in COMMANDS
    assert ("daemon", "broker") in COMMANDS
    assert "--confirm-live" in _flags(COMMANDS["daemon", "broker"])
    assert {"--config", "--home", "--sink", "--symbols", "--mode"} <= \
        _flags(COMMANDS["daemon", "harvest"])


def test_every_written_verb_exists():
    missing = {path: where for path, where in _written_verbs().items() if path not in COMMANDS}
    assert not missing, f"documented verbs that ofi does not have: {missing}"


@pytest.mark.parametrize("path", sorted(PUBLIC), ids=lambda p: "ofi " + " ".join(p))
def test_every_verb_is_documented(path):
    written = _written_verbs()
    if isinstance(PUBLIC[path], click.Group):   # a group: one of its verbs written is enough
        assert any(w[:len(path)] == path for w in written), f"ofi {' '.join(path)}"
    else:
        assert path in written, f"ofi {' '.join(path)} is documented nowhere (README.md, docs/)"


def test_every_written_flag_exists():
    known = set().union(*(_flags(c) for c in COMMANDS.values())) | BUILTIN_FLAGS
    missing = {f: where for f, where in _written_flags().items()
               if f not in known and f not in FOREIGN_FLAGS}
    assert not missing, f"documented flags that no ofi verb has: {missing}"


def test_every_flag_is_documented():
    written = _written_flags()
    undocumented = {}
    for path, cmd in PUBLIC.items():
        for flag in sorted(_flags(cmd) - BUILTIN_FLAGS - set(written)):
            undocumented.setdefault(flag, "ofi " + " ".join(path))
    assert not undocumented, f"flags documented nowhere (README.md, docs/): {undocumented}"
