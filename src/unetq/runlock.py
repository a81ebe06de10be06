"""One owner per run folder: a second unetq process that would write into it refuses.

The lock is `flock` on the run folder's lock file, so the kernel releases it when its holder
ends, however it ends: after `kill -9` the next run simply takes it (the file left behind only
names the last holder). The file holds the holder's pid, host and command for the refusal
message. The lock is advisory and local to one machine's kernel (a network file system may not
carry it between machines).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from unetq.errors import UnetqError, storage_error
from unetq.runfolder import RunFolder

_HELD: set[str] = set()  # lock files this process holds (re-entrance)


class RunFolderBusy(UnetqError):
    """Another process owns the run folder."""


def holder_text(info: dict) -> str:
    command = info.get("command") or "?"
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')} ({command})"


@contextmanager
def own_run_folder(run_dir: Path, create: bool = True) -> Iterator[None]:
    """Hold `run_dir`'s lock for the duration; raise RunFolderBusy naming the holder when
    another process holds it. Re-entrant in one process. The folder is created, unless
    `create` is False: then a missing folder is left to the command to report."""
    run = RunFolder(run_dir)
    path = run.lock_file
    key = str(path.absolute().resolve())
    if key in _HELD or (not create and not run.root.is_dir()):
        yield
        return
    try:
        run.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise storage_error(exc, path) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderBusy(
                f"{run.root} is in use by {holder_text(_read_holder(fd))}; wait for it to "
                "finish or choose another --out"
            ) from None
        _write_holder(fd, path)
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
    finally:
        os.close(fd)  # releases the lock


def _read_holder(fd: int) -> dict:
    try:
        data = os.pread(fd, 65536, 0)
        return json.loads(data.decode()) if data else {}
    except (OSError, ValueError):
        return {}


def _write_holder(fd: int, path: Path) -> None:
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(["unetq", *sys.argv[1:]]),
        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
    except OSError as exc:
        raise storage_error(exc, path) from None
