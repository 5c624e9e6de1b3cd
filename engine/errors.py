"""Errors a user can cause and fix, and the one-line exit the entry points give them."""
from __future__ import annotations

import functools
import os
import sys


class UserError(Exception):
    """Something the user can fix (a path, a flag, a file); the message says what and how."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    # ValueError: the metrics/ and ood/ packages report bad inputs (an empty class, NaN features) with it.
    types: list[type[BaseException]] = [UserError, ValueError]
    try:  # the data registry's own error for missing or malformed dataset files
        from data import DatasetError
        types.append(DatasetError)
    except ImportError:
        pass
    return tuple(types)


def cli_main(fn):
    """Run an entry point; a user error ends with one line on stderr and exit code 2
    (set NCOOD_DEBUG=1 to see the traceback instead)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _user_error_types() as exc:
            if os.environ.get("NCOOD_DEBUG"):
                raise
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
    return wrapper
