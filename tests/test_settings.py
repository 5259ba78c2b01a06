"""The typed settings and ``etc/defaults.yaml`` agree key for key, and the allowed values and
bounds declared on the settings are what the loader checks."""
from __future__ import annotations

import dataclasses
import typing

import pytest

from daemons import config as configmod
from daemons import settings


def _yaml_keys(node: dict, prefix: str = "") -> set:
    out = set()
    for k, v in node.items():
        if isinstance(v, dict) and v:
            out |= _yaml_keys(v, f"{prefix}{k}.")
        else:
            out.add(f"{prefix}{k}")
    return out


def _field_keys(cls, prefix: str = "") -> set:
    out = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            out |= _field_keys(t, f"{prefix}{f.name}.")
        else:
            out.add(f"{prefix}{f.name}")
    return out


def test_every_yaml_key_is_a_field_and_every_field_a_yaml_key():
    yaml_keys, fields = _yaml_keys(configmod.defaults()), _field_keys(settings.Settings)
    assert sorted(yaml_keys - fields) == [], "keys in etc/defaults.yaml without a settings field"
    assert sorted(fields - yaml_keys) == [], "settings fields without a key in etc/defaults.yaml"


def test_no_section_field_carries_a_default_of_its_own():
    def walk(cls):
        for f in dataclasses.fields(cls):
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, \
                f"{cls.__name__}.{f.name} has a default; defaults live in etc/defaults.yaml"
            t = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(t):
                walk(t)
    walk(settings.Settings)


def test_the_yaml_defaults_have_the_declared_types():
    s = settings.of(configmod.load(None, {}))

    def check(obj, cls, prefix=""):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            value, t = getattr(obj, f.name), hints[f.name]
            if dataclasses.is_dataclass(t):
                check(value, t, f"{prefix}{f.name}.")
                continue
            origin = typing.get_origin(t)
            if origin is typing.Literal:
                assert value in typing.get_args(t), f"{prefix}{f.name}"
            elif origin is typing.Union:     # Optional[x]
                assert value is None or isinstance(value, typing.get_args(t)), f"{prefix}{f.name}"
            elif t is float:
                assert type(value) is float, f"{prefix}{f.name}: {value!r}"
            else:
                assert isinstance(value, t) and not (t is int and isinstance(value, bool)), \
                    f"{prefix}{f.name}: {value!r}"
    check(s, settings.Settings)


def test_sections_are_frozen():
    s = settings.of(configmod.load(None, {}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.signal.save_every_s = 5.0


@pytest.mark.parametrize("dotted", sorted(settings.choices()))
def test_every_enumerated_key_refuses_a_value_outside_its_choices(dotted):
    with pytest.raises(configmod.ConfigError, match=f"key '{dotted}' must be one of"):
        configmod.load(None, {dotted: "no-such-value"})


@pytest.mark.parametrize("dotted", sorted(settings.bounds()))
def test_every_bounded_key_refuses_a_value_out_of_bounds(dotted):
    lo, hi = settings.bounds()[dotted]
    with pytest.raises(configmod.ConfigError, match=f"key '{dotted}' must be"):
        configmod.load(None, {dotted: lo - 1})
    if hi is not None:
        with pytest.raises(configmod.ConfigError, match=f"key '{dotted}' must be"):
            configmod.load(None, {dotted: hi + 1})


def test_overrides_reach_the_typed_settings_as_their_type():
    s = settings.of(configmod.load(None, {"signal.save_every_s": 3, "broker.mode": "sim"}))
    assert s.signal.save_every_s == 3.0 and type(s.signal.save_every_s) is float
    assert s.broker.mode == "sim"


def test_secrets_stay_out_of_the_settings_repr():
    s = settings.of(configmod.load(None, {"venue.api_secret": "s3cr3t-value",
                                          "venue.api_key": "k3y-value",
                                          "alerts.webhook_url": "https://hooks.example/T0/B0/x"}))
    text = repr(s)
    assert "s3cr3t" not in text and "k3y-value" not in text and "hooks.example" not in text


def test_a_signal_core_without_settings_takes_the_yaml_defaults():
    """SignalCore() (research code, notebooks) reads what it is not given from the YAML."""
    from daemons.signal.core import PARAMS, SignalCore

    yaml = configmod.defaults()["signal"]
    params = SignalCore().state()["params"]
    assert params == {k: yaml[k] for k in PARAMS}
    assert SignalCore(levels=3).state()["params"] == dict(params, levels=3)


def test_the_order_managers_settings_come_from_the_config_alone():
    from daemons.broker.manager import Settings

    cfg = configmod.load(None, {})
    s = Settings.from_settings(settings.of(cfg))
    b = cfg["broker"]
    assert (s.deadman_ms, s.reconcile_interval_s, s.max_send_attempts, s.intent_ttl_s) == \
        (b["deadman_ms"], b["reconcile_interval_s"], b["max_send_attempts"], b["intent_ttl_s"])
    assert s.protective_stop_bps == cfg["risk"]["protective_stop_bps"]
    with pytest.raises(TypeError):
        Settings(symbols=("BTCUSDT",))      # no setting of its own to fall back on


def test_a_bus_opened_without_settings_uses_the_yaml_defaults(tmp_path):
    from bus import open_bus

    yaml = configmod.defaults()
    bus = open_bus(tmp_path)
    try:
        assert bus.settings == {"sink": yaml["sink"], **yaml["bus"]}
        assert bus.sink == yaml["sink"]
    finally:
        bus.close()
