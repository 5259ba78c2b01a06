"""Configuration: ``etc/defaults.yaml``, then ``--config FILE``, then the environment, then flags.

Every key a user may set is declared, with its default and a comment, in ``etc/defaults.yaml``;
its type is the type of that default. An unknown key or a value of the wrong type stops the
program with one line naming the file and the key (exit code 2), never a traceback.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml

from . import settings
from .settings import ConfigError  # noqa: F401  (defined with the settings, a leaf; raised here)

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS_FILE = Path(os.environ.get("OFI_DEFAULTS", ROOT / "etc" / "defaults.yaml"))

#: libyaml's safe loader when PyYAML was built with it (the same results, several times faster
#: than the pure-Python one), else the pure-Python one; a file it refuses is read again by the
#: pure-Python one, whose error (and line) is the one reported
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# environment variable -> (dotted key, converter)
ENVIRONMENT = {
    "OFI_HOME": ("home", str),
    "OFI_SINK": ("sink", str),
    "OFI_SYMBOLS": ("symbols", lambda v: [s.strip().upper() for s in v.split(",") if s.strip()]),
    "EXECUTOR_MODE": ("broker.mode", str),
    "OFI_MODE": ("broker.mode", str),
    "OFI_REST_URL": ("venue.rest_url", str),
    "OFI_WS_URL": ("venue.ws_url", str),
    "OFI_API_KEY": ("venue.api_key", str),
    "OFI_API_SECRET": ("venue.api_secret", str),
    "OFI_LOG_LEVEL": ("log.level", str),
    "OFI_ALERTS_WEBHOOK_URL": ("alerts.webhook_url", str),   # a secret: keep it out of YAML files
}


def _type_name(value) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "mapping", type(None): "null"}.get(type(value), type(value).__name__)


def _compatible(default, value) -> bool:
    if default is None or value is None:
        return True   # a null default accepts any value; null turns a setting off
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def merge(base: dict, override: dict, source: str, prefix: str = "") -> dict:
    """Overlay ``override`` on ``base``, checking every key and type against ``base``."""
    if not isinstance(override, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'top level'} must be a mapping")
    out = dict(base)
    for key, value in override.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(f"{source}: unknown key '{dotted}'")
        default = base[key]
        if isinstance(default, dict) and default:
            out[key] = merge(default, value, source, f"{dotted}.")
            continue
        if not _compatible(default, value):
            raise ConfigError(f"{source}: key '{dotted}' must be a {_type_name(default)}, "
                              f"not {_type_name(value)} ({value!r})")
        if isinstance(default, float) and isinstance(value, int):
            value = float(value)
        out[key] = value
    return out


def read_yaml(path) -> dict:
    """The mapping in a YAML file (ConfigError with one line when it cannot be read)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        try:
            data = yaml.load(text, Loader=_SafeLoader)
        except yaml.YAMLError:   # the pure-Python loader's error (its line, as before)
            if _SafeLoader is yaml.SafeLoader:
                raise
            data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} not valid YAML") from None
    return data or {}


def defaults() -> dict:
    """The built-in defaults (``etc/defaults.yaml``)."""
    return read_yaml(DEFAULTS_FILE)


def set_dotted(cfg: dict, dotted: str, value, source: str) -> dict:
    """Return ``cfg`` with one dotted key replaced (validated like a file's)."""
    parts = dotted.split(".")
    override: dict = {}
    node = override
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return merge(cfg, override, source)


def load(path: str | os.PathLike | None = None, overrides: dict | None = None,
         environ: dict | None = None) -> dict:
    """Defaults, then ``path``, then the environment, then ``overrides`` (dotted keys)."""
    cfg = defaults()
    if path:
        cfg = merge(cfg, read_yaml(Path(path)), str(path))
    env = os.environ if environ is None else environ
    for var, (dotted, conv) in ENVIRONMENT.items():
        if env.get(var):
            try:
                value = conv(env[var])
            except ValueError:
                raise ConfigError(f"environment: {var} has an invalid value") from None
            cfg = set_dotted(cfg, dotted, value, f"environment {var}")
    for dotted, value in (overrides or {}).items():
        if value is not None:
            cfg = set_dotted(cfg, dotted, value, f"option {dotted}")
    validate(cfg)
    return cfg


#: ``CHOICES`` and ``RANGES``: the allowed values of every enumerated key and the bounds of
#: bounded numbers, declared on the typed settings (``daemons/settings.py``) and checked at load;
#: computed when first asked for (module ``__getattr__``), not at import
_LAZY = {"CHOICES": settings.choices, "RANGES": settings.bounds}


def __getattr__(name: str):
    make = _LAZY.get(name)
    if make is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = make()
    return value


def get(cfg: dict, dotted: str, default=None):
    """Value at a dotted key (``default`` if absent)."""
    node = cfg
    for p in dotted.split("."):
        if not isinstance(node, dict) or p not in node:
            return default
        node = node[p]
    return node


def validate(cfg: dict) -> None:
    """Checks beyond types: allowed values, bounds, at least one symbol (by building the typed
    settings, which declare them)."""
    settings.of(cfg)   # its SettingsError is a ConfigError
    if not cfg.get("symbols"):
        raise ConfigError("config: key 'symbols' must list at least one symbol")


def home_of(cfg: dict) -> Path:
    """The runtime directory (spools, logs, state) as an absolute path."""
    return Path(cfg["home"]).expanduser().resolve()


def snapshot(cfg: dict) -> dict:
    """A deep copy with secrets masked, fit for logs and ``ofi status``."""
    out = copy.deepcopy(cfg)
    venue = out.get("venue") or {}
    for key in ("api_key", "api_secret"):
        if venue.get(key):
            venue[key] = "****" + str(venue[key])[-4:] if key == "api_key" else "****"
    return out
