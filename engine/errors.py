"""Errors a user can cause and fix, and the one-line exit the entry points give them."""
from __future__ import annotations

import functools
import sys


class UserError(Exception):
    """Something the user can fix (a path, a flag, a file); the message says what and how."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [UserError]
    try:  # the data registry's own error for missing or malformed dataset files
        from data import DatasetError
        types.append(DatasetError)
    except ImportError:
        pass
    return tuple(types)


def cli_main(fn):
    """Run an entry point; a user error ends with one line on stderr and exit code 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _user_error_types() as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
    return wrapper
