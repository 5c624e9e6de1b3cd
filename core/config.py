"""Configuration as plain values: defaults < ``--config`` YAML file(s) < command-line flags.

Every key of an entry point's defaults is also a flag (``--key value``; booleans as
``--key`` / ``--no-key``; lists as ``--key a b c``). YAML files are read with
``yaml.SafeLoader`` and may only set known keys, each once, so a typo or a key written twice is
an error, not a silent no-op. ``--config a.yaml b.yaml`` (or ``--config`` repeated) reads several
files in order, later ones overriding earlier ones.
A file may start from another one: ``base: other.yaml`` (a path relative to the file; the one
key that is not a flag) reads that file first, and the file's own keys override it, so a recipe
shared by several runs is written once (``configs/paper/``). ``--print_config`` prints the
resolved configuration as YAML and exits.

Every value, from a YAML file or a flag, goes through one typed check, :func:`check_value`, for
the key's type (its default's type, or the entry point's ``types``):

- ``bool``: a YAML boolean, or the string ``true`` / ``false`` (any case); anything else is an error
  (a quoted ``"false"`` is false, not a non-empty and therefore true string);
- ``int``: an integer (``1.5`` and ``2.0`` are errors); ``float``: any finite number, also written as
  a string (YAML reads ``1e-3`` as one);
- ``str``: a string, or a number taken as its text (a YAML boolean is an error: quote it);
- ``list[T]``: a list (YAML) or the flag's values, each element checked as ``T``;
- ``None`` (YAML ``null``, or ``none`` / ``null`` as text) only for keys whose default is ``None``.

A mistake is one line naming the file or flag, the key, the value and what it must be; so is an
unknown flag or a flag without its value (argparse's usage text is not printed).
"""
from __future__ import annotations

import argparse
import math
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from core.errors import UserError, cli_main
from core.io import atomic_write_text
from core.lock import command_scope


class ConfigError(UserError):
    """A configuration mistake: unknown key, unreadable or malformed YAML."""


BASE_KEY = "base"


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping (plain YAML keeps the last
    value silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, typing.Hashable):  # the base class reports it
                continue
            if key in seen:
                raise ConfigError(f"sets '{key}' twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1}); "
                                  f"keep one")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping of a YAML file (the safe loader; a key written twice is an error)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file to --config")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except ConfigError as exc:
        raise ConfigError(f"config file {path} {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of key: value, got {type(data).__name__}")
    return data


def load_config_chain(path: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """``[(file, its keys)]`` of a config file and the ``base:`` files it starts from, the deepest base
    first; a missing base or a cycle is a one-line :class:`ConfigError`."""
    chain: list[tuple[Path, dict[str, Any]]] = []
    path = Path(path)
    while True:
        if any(path.resolve() == seen.resolve() for seen, _ in chain):
            raise ConfigError(f"config file {chain[0][0]}: its base files form a cycle through {path}")
        data = load_yaml(path)
        base = data.pop(BASE_KEY, None)
        chain.append((path, data))
        if base is None:
            return chain[::-1]
        if not isinstance(base, str):
            raise ConfigError(f"config file {path}: {BASE_KEY} must be the path of another YAML file, got {base!r}")
        base_path = path.parent / base
        if not base_path.is_file():
            raise ConfigError(f"config file {path} has {BASE_KEY}: {base}, but {base_path} does not exist")
        path = base_path


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one-line :class:`ConfigError` s instead of usage text and exit 2."""

    def error(self, message: str):
        raise ConfigError(f"{message}; see --help")


_NONE_TEXT = ("none", "null", "")


def _kind_name(kind) -> str:
    if typing.get_origin(kind) is list:
        elem = typing.get_args(kind)[0]
        return "a list of " + {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}.get(
            elem, f"{elem.__name__} values")
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(kind, kind.__name__)


def check_value(value: Any, kind, nullable: bool = False) -> Any:
    """``value`` as type ``kind`` (``bool``, ``int``, ``float``, ``str`` or ``list[T]``), by the rules of
    the module doc; ``ValueError`` with the reason when it is not one."""
    if value is None or (nullable and isinstance(value, str) and value.strip().lower() in _NONE_TEXT):
        if nullable:
            return None
        raise ValueError(f"must be {_kind_name(kind)}, not null")
    if typing.get_origin(kind) is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"must be {_kind_name(kind)} (in YAML: [a, b] or one '- a' line each), got {value!r}")
        elem = typing.get_args(kind)[0]
        checked = []
        for i, item in enumerate(value):
            try:
                checked.append(check_value(item, elem))
            except ValueError as exc:
                raise ValueError(f"element {i} {exc}") from None
        return checked
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
    elif kind is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                pass
        if number is not None:
            if math.isfinite(number):
                return number
            raise ValueError(f"must be a finite number, got {value!r}")
    elif kind is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, bool):
            raise ValueError(f"must be a string, got the YAML boolean {str(value).lower()} (quote it)")
    else:
        try:
            return kind(value)
        except (TypeError, ValueError):
            pass
    raise ValueError(f"must be {_kind_name(kind)}, got {value!r}")


def _key_kind(key: str, defaults: dict[str, Any], types: dict[str, Any]):
    """The type of ``key``: ``types[key]``, else its default's (a list default: ``list[type of its
    first element]``, ``list[str]`` when empty), ``str`` for a ``None`` default without a type."""
    kind = types.get(key)
    default = defaults[key]
    if kind is list:
        kind = list[str]
    if kind is None:
        if isinstance(default, (list, tuple)):
            kind = list[type(default[0]) if default else str]
        elif default is None:
            kind = str
        else:
            kind = type(default)
    return kind


def _flag_type(key: str, kind, nullable: bool):
    def convert(text: str):
        try:
            return check_value(text, kind, nullable)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = key
    return convert


def _add_flag(parser: argparse.ArgumentParser, key: str, default: Any, kind, nullable: bool,
              aliases: Sequence[str], help_text: str | None) -> None:
    names = [f"--{key}", *aliases]
    help_text = help_text or " "  # ArgumentDefaultsHelpFormatter appends the default
    if typing.get_origin(kind) is list:
        parser.add_argument(*names, dest=key, default=default, nargs="*",
                            type=_flag_type(key, typing.get_args(kind)[0], False), help=help_text)
    elif kind is bool:
        parser.add_argument(*names, dest=key, default=default, action=argparse.BooleanOptionalAction, help=help_text)
    else:
        parser.add_argument(*names, dest=key, default=default, type=_flag_type(key, kind, nullable), help=help_text)


def parse_config(defaults: dict[str, Any], argv: Sequence[str] | None = None, *, description: str = "",
                 aliases: dict[str, Sequence[str]] | None = None, types: dict[str, type] | None = None,
                 helps: dict[str, str] | None = None) -> argparse.Namespace:
    """Resolve a configuration. ``defaults`` fixes the keys; ``types`` gives the type of keys
    whose default is ``None`` (otherwise ``str``); ``aliases`` adds short flags (``-b``).
    Every value is checked by :func:`check_value` (a mistake is a one-line :class:`ConfigError`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    aliases, types, helps = aliases or {}, types or {}, helps or {}
    kinds = {key: _key_kind(key, defaults, types) for key in defaults}
    nullable = {key: defaults[key] is None for key in defaults}
    pre = _Parser(add_help=False)
    pre.add_argument("--config", action="extend", nargs="+", default=[])
    known, _ = pre.parse_known_args(argv)

    merged = dict(defaults)
    for given in known.config:
        for path, data in load_config_chain(given):
            for key, value in data.items():
                if key not in defaults:
                    raise ConfigError(f"config file {path} sets unknown key '{key}'; valid keys: "
                                      f"{', '.join(sorted(defaults))}")
                try:
                    merged[key] = check_value(value, kinds[key], nullable[key])
                except ValueError as exc:
                    raise ConfigError(f"config file {path}: {key} {exc}") from None

    parser = _Parser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", action="extend", nargs="+", default=[], metavar="YAML",
                        help="YAML file(s) of key: value defaults, read in the order given (--config a.yaml b.yaml, "
                             "or --config repeated), each after the base: file it starts from; later files and "
                             "flags override earlier ones")
    parser.add_argument("--print_config", action="store_true",
                        help="print the resolved configuration (defaults < --config < flags) as YAML and exit")
    for key, default in merged.items():
        _add_flag(parser, key, default, kinds[key], nullable[key], aliases.get(key, ()), helps.get(key))
    cfg = parser.parse_args(argv)
    if cfg.print_config:
        values = {k: v for k, v in vars(cfg).items() if k not in ("config", "print_config")}
        print(yaml.safe_dump(values, sort_keys=False), end="")
        raise SystemExit(0)
    del cfg.print_config
    return cfg


def save_config(cfg: argparse.Namespace | dict, path: str | Path, comments: Sequence[str] = ()) -> Path:
    """Write the resolved configuration beside the results (YAML, atomic); ``comments`` become
    ``#`` lines at the top (a resumed run's history), which ``--config`` ignores."""
    values = dict(vars(cfg)) if isinstance(cfg, argparse.Namespace) else dict(cfg)
    values.pop("config", None)
    header = "".join(f"# {line}\n" for line in comments)
    return atomic_write_text(path, header + yaml.safe_dump(values, sort_keys=False))


def command(options: dict[str, Any], run: Callable[[argparse.Namespace], Any], description: str) -> Callable:
    """The ``main(argv=None)`` of an entry point: resolve the configuration of ``options`` (the
    keyword arguments of :func:`parse_config`: ``defaults``, ``types``, ``helps``, ``aliases``) and
    return ``run(cfg)``; a user error ends in one line and exit code 2 (:func:`core.errors.cli_main`).
    The folder locks the run took are released when it ends (:func:`core.lock.command_scope`)."""
    @cli_main
    def main(argv: Sequence[str] | None = None):
        with command_scope():
            return run(parse_config(argv=argv, description=description, **options))
    return main
