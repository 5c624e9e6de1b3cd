"""Configuration as plain values: defaults < ``--config`` YAML file(s) < command-line flags.

Every key of an entry point's defaults is also a flag (``--key value``; booleans as
``--key`` / ``--no-key``; lists as ``--key a b c``). YAML files are read with
``yaml.safe_load`` and may only set known keys, so a typo is an error, not a silent no-op.
"""
from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path
from typing import Any, Sequence

import yaml

from engine.errors import UserError
from engine.io import atomic_write_text


class ConfigError(UserError):
    """A configuration mistake: unknown key, unreadable or malformed YAML."""


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file to --config")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of key: value, got {type(data).__name__}")
    return data


def _add_flag(parser: argparse.ArgumentParser, key: str, default: Any, kind: type | None,
              aliases: Sequence[str], help_text: str | None) -> None:
    names = [f"--{key}", *aliases]
    help_text = help_text or " "  # ArgumentDefaultsHelpFormatter appends the default
    if typing.get_origin(kind) is list:
        parser.add_argument(*names, dest=key, default=default, nargs="*", type=typing.get_args(kind)[0], help=help_text)
    elif kind is bool or isinstance(default, bool):
        parser.add_argument(*names, dest=key, default=default, action=argparse.BooleanOptionalAction, help=help_text)
    elif isinstance(default, (list, tuple)) or kind is list:
        elem = type(default[0]) if default else str
        parser.add_argument(*names, dest=key, default=default, nargs="*", type=elem, help=help_text)
    else:
        ftype = kind or (type(default) if default is not None else str)
        parser.add_argument(*names, dest=key, default=default, type=_nullable(ftype), help=help_text)


def _nullable(ftype: type):
    def convert(text: str):
        if text.lower() in ("none", "null", ""):
            return None
        return ftype(text)
    convert.__name__ = ftype.__name__
    return convert


def parse_config(defaults: dict[str, Any], argv: Sequence[str] | None = None, *, description: str = "",
                 aliases: dict[str, Sequence[str]] | None = None, types: dict[str, type] | None = None,
                 helps: dict[str, str] | None = None) -> argparse.Namespace:
    """Resolve a configuration. ``defaults`` fixes the keys; ``types`` gives the type of keys
    whose default is ``None`` (otherwise ``str``); ``aliases`` adds short flags (``-b``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    aliases, types, helps = aliases or {}, types or {}, helps or {}
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", action="append", default=[])
    known, _ = pre.parse_known_args(argv)

    merged = dict(defaults)
    for path in known.config:
        for key, value in load_yaml(path).items():
            if key not in defaults:
                raise ConfigError(f"config file {path} sets unknown key '{key}'; valid keys: {', '.join(sorted(defaults))}")
            merged[key] = value

    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="YAML file(s) of key: value defaults; later files and flags override earlier ones")
    for key, default in merged.items():
        kind = types.get(key)
        if kind is None and defaults[key] is not None and not isinstance(defaults[key], (list, tuple)):
            kind = type(defaults[key])
        _add_flag(parser, key, default, kind, aliases.get(key, ()), helps.get(key))
    return parser.parse_args(argv)


def save_config(cfg: argparse.Namespace | dict, path: str | Path) -> Path:
    """Write the resolved configuration beside the results (YAML, atomic)."""
    values = dict(vars(cfg)) if isinstance(cfg, argparse.Namespace) else dict(cfg)
    values.pop("config", None)
    return atomic_write_text(path, yaml.safe_dump(values, sort_keys=False))
