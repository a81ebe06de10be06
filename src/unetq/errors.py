"""Errors a user can cause. The CLI prints them as one line and exits non-zero."""

from __future__ import annotations

import errno
import importlib
import os
import re
import signal

# OSError numbers that mean "this folder cannot take the write", not a bug in unetq.
STORAGE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}
)


class UnetqError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2


class DataError(UnetqError):
    """The dataset is missing, empty or malformed."""


class ModelError(UnetqError):
    """A model file is missing, unreadable or not a per-pixel classifier."""


class ConfigError(UnetqError):
    """A config, preset or override is invalid."""


class StorageError(UnetqError):
    """A file could not be written: full disk, read-only folder, no permission."""

    exit_code = 1


def require_extra(module: str, extra: str, feature: str):
    """Import an optional dependency, or end with one line naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UnetqError(
            f"{feature} needs {module}, which is not installed: pip install 'unetq[{extra}]'"
        ) from None


class Interrupted(BaseException):  # noqa: N818 (not an error: the user asked to stop)
    """Ctrl-C or SIGTERM. A BaseException, so no `except Exception` on the way swallows it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def storage_error(exc: BaseException, path: object | None = None) -> StorageError | None:
    """A one-line StorageError when `exc` (or what caused it) means the disk refused a write.

    Libraries wrap the OSError (Keras' zip writer, h5py): the cause chain is searched, and a
    message carrying the errno ("errno = 28") counts too. None for any other error.
    """
    seen = exc
    while seen is not None:
        number = getattr(seen, "errno", None)
        if number is None:
            found = re.search(r"errno\s*=\s*(\d+)", str(seen))
            number = int(found.group(1)) if found else None
        if number in STORAGE_ERRNOS:
            where = path if path is not None else getattr(seen, "filename", None)
            reason = os.strerror(number)
            return StorageError(f"cannot write {where}: {reason}" if where else reason)
        seen = seen.__cause__ or seen.__context__
    return None


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message (its type name if it has none)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:limit]
