"""Errors a user can cause and fix, and the one-line exit the entry points give them."""
from __future__ import annotations

import errno
import functools
import os
import re
import sys
import warnings


class UserError(Exception):
    """Something the user can fix (a path, a flag, a file); the message says what and how."""


class FileSystemError(UserError, OSError):
    """The operating system refused a read or write (a full disk, a read-only folder, a file where a
    folder belongs); the message names the path and the cause. Still an ``OSError`` for callers that catch one."""


_FIXES = {errno.ENOSPC: "free space there or write elsewhere", errno.EDQUOT: "free space there or write elsewhere",
          errno.EACCES: "choose a folder you can write to", errno.EPERM: "choose a folder you can write to",
          errno.EROFS: "choose a folder on a writable file system",
          errno.EEXIST: "a file has the name of a folder that is needed; move it or choose another path",
          errno.ENOTDIR: "a file has the name of a folder that is needed; move it or choose another path"}


def os_error(exc: OSError, path, doing: str = "write") -> FileSystemError:
    """``exc`` as one line: ``cannot <doing> <path>: <cause> (<ERRNO>); <how to fix it>``."""
    if isinstance(exc, FileSystemError):
        return exc
    cause = exc.strerror or str(exc) or type(exc).__name__
    code = errno.errorcode.get(exc.errno or 0)
    fix = _FIXES.get(exc.errno or 0)
    return FileSystemError(f"cannot {doing} {path}: {cause}" + (f" ({code})" if code else "")
                           + (f"; {fix}" if fix else ""))


def _user_error_types() -> tuple[type[BaseException], ...]:
    # ValueError: the metrics/ and ood/ packages report bad inputs (an empty class, NaN features) with it.
    types: list[type[BaseException]] = [UserError, ValueError]
    try:  # the data registry's own error for missing or malformed dataset files
        from data import DatasetError
        types.append(DatasetError)
    except ImportError:
        pass
    return tuple(types)


_WORKER = re.compile(r"^Caught \w+ in (DataLoader worker process \d+|pin memory thread for device \d+)\.")


def one_line(exc: BaseException) -> str:
    """The message of a user error. One raised in a DataLoader worker reaches the main process
    re-raised by torch with the worker's whole traceback as its message; its own message is the
    traceback's last line, after ``module.Type: ``."""
    text = str(exc)
    if _WORKER.match(text):
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        text = re.sub(r"^[\w.]+: ", "", last.strip(), count=1)
    return text


def _format_warning(message, category, filename, lineno, line=None) -> str:
    if issubclass(category, UserWarning):
        return f"warning: {message}\n"
    return _default_format(message, category, filename, lineno, line)


_default_format = warnings.formatwarning


def cli_main(fn):
    """Run an entry point; a user error ends with one line on stderr and exit code 2
    (set NCOOD_DEBUG=1 to see the traceback instead). A warning is one line too, ``warning: ...``."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        previous = warnings.formatwarning
        if not os.environ.get("NCOOD_DEBUG"):
            warnings.formatwarning = _format_warning
        try:
            return fn(*args, **kwargs)
        except _user_error_types() as exc:
            if os.environ.get("NCOOD_DEBUG"):
                raise
            print(f"error: {one_line(exc)}", file=sys.stderr)
            sys.exit(2)
        except OSError as exc:  # one the code did not name: the path the system reported
            if os.environ.get("NCOOD_DEBUG") or exc.filename is None:
                raise
            print(f"error: {one_line(os_error(exc, exc.filename, 'use'))}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        finally:
            warnings.formatwarning = previous
    return wrapper
