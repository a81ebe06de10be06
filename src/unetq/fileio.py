"""Atomic file writes: a reader never sees a half-written file."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from unetq.errors import storage_error


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`, ending in `path`'s own name (so libraries that
    check suffixes, like Keras, accept it); rename it onto `path` only on success.

    A write the disk refuses (full, read-only, no permission), also when a library wraps the
    OSError, becomes a one-line StorageError naming `path`; the temporary file is removed
    either way.
    """
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=f".part.{path.name}", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        os.chmod(tmp_path, 0o644)  # mkstemp makes files owner-only; results are for all to read
        yield tmp_path
        os.replace(tmp_path, path)
    except Exception as exc:
        error = storage_error(exc, path)
        if error is None:
            raise
        raise error from None
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


def atomic_save(path: Path | str, save: Callable[[str], None]) -> None:
    """`save(file_name)` (e.g. a Keras model's `save`) written atomically onto `path`."""
    with atomic_path(path) as tmp:
        save(str(tmp))


def write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path | str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path | str, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def write_csv(path: Path | str, rows: Iterable[dict[str, Any]], columns: list[str] | None = None):
    """Write dict rows as CSV atomically; columns default to first-seen key order."""
    rows = list(rows)
    if columns is None:
        columns = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def record_dict(record: Any) -> dict[str, Any]:
    """A dataclass or pydantic record as a flat dict for CSV output."""
    if dataclasses.is_dataclass(record):
        return dataclasses.asdict(record)
    if hasattr(record, "model_dump"):
        return record.model_dump()
    return dict(record)
