"""API keys at rest: ``<home>/secrets/credentials.json`` (file 0600 in a 0700 directory).

    {"profiles": {"testnet": {"api_key": "...", "api_secret": "...", "added": 1718000000.0}}}

``ofi keys add|list|remove`` manage it; the broker reads the profile named by
``broker.keys_profile`` (default: the mode's name) when the config and the environment
(OFI_API_KEY / OFI_API_SECRET) give no key. Keys are never printed, logged or spooled: listing
shows the last four characters of the key only, and never anything of the secret.
A file readable by group or others is refused, as ssh refuses such a private key.
"""
from __future__ import annotations

import os
import re
import stat
import time

import orjson

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class KeysError(Exception):
    """A credentials problem, in one line (never containing a key)."""


def credentials_path(home: str | os.PathLike) -> str:
    return os.path.join(os.path.abspath(os.fspath(home)), "secrets", "credentials.json")


def mask(api_key: str | None) -> str:
    """``****abcd``: enough to tell keys apart, never enough to use one."""
    if not api_key:
        return ""
    return "****" + api_key[-4:] if len(api_key) > 8 else "****"


def _read(home) -> dict:
    path = credentials_path(home)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return {"profiles": {}}
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeysError(f"{path}: permissions {stat.S_IMODE(st.st_mode):04o} are too open; "
                        f"run: chmod 600 {path}")
    try:
        with open(path, "rb") as f:
            data = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise KeysError(f"{path}: unreadable credentials file ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict):
        raise KeysError(f"{path}: not a credentials file")
    return data


def _write(home, data: dict) -> None:
    path = credentials_path(home)
    d = os.path.dirname(path)
    os.makedirs(d, mode=0o700, exist_ok=True)
    os.chmod(d, 0o700)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, orjson.dumps(data, option=orjson.OPT_INDENT_2))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def add(home, name: str, api_key: str, api_secret: str) -> None:
    """Store (or replace) a profile."""
    if not NAME_RE.match(name or ""):
        raise KeysError(f"invalid profile name {name!r} (letters, digits, . _ - only)")
    api_key, api_secret = (api_key or "").strip(), (api_secret or "").strip()
    if not api_key or not api_secret:
        raise KeysError("both an API key and an API secret are needed")
    if any(c.isspace() for c in api_key + api_secret):
        raise KeysError("API key and secret must not contain spaces")
    data = _read(home)
    data["profiles"][name] = {"api_key": api_key, "api_secret": api_secret,
                              "added": round(time.time(), 3)}
    _write(home, data)


def remove(home, name: str) -> bool:
    """Delete a profile; False if there was none of that name."""
    data = _read(home)
    if name not in data["profiles"]:
        return False
    del data["profiles"][name]
    _write(home, data)
    return True


def listing(home) -> list[dict]:
    """Profiles with masked keys: ``[{"name", "api_key", "added"}]``."""
    data = _read(home)
    return [{"name": n, "api_key": mask(p.get("api_key")), "added": p.get("added")}
            for n, p in sorted(data["profiles"].items())]


def lookup(home, name: str) -> tuple[str, str] | None:
    """(api_key, api_secret) of a profile, or None."""
    p = _read(home)["profiles"].get(name)
    if not p:
        return None
    return p["api_key"], p["api_secret"]
