"""fileio.py: a reader never sees half a file; a write the disk refuses is one line naming it."""

import errno

import pytest

from unetq.errors import Interrupted, StorageError, storage_error
from unetq.fileio import atomic_path, atomic_save, write_json


def test_the_file_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "deep" / "result.csv"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        assert tmp.name.endswith(".result.csv") and tmp.parent == target.parent
        raise RuntimeError("a bug, not the disk")  # keeps its own type
    assert not target.exists() and list(target.parent.iterdir()) == []
    write_json(target, {"a": 1})
    assert target.read_text() == '{\n  "a": 1\n}\n' and len(list(target.parent.iterdir())) == 1


def test_a_refused_write_names_the_path_even_when_a_library_wraps_it(tmp_path):
    target = tmp_path / "model.keras"

    def full_disk(name: str) -> None:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise ValueError("Unable to synchronously create file") from exc

    with pytest.raises(StorageError) as exc:
        atomic_save(target, full_disk)
    assert str(exc.value) == f"cannot write {target}: No space left on device"
    assert exc.value.exit_code == 1 and list(tmp_path.iterdir()) == []
    # an errno only in the message (h5py's style) counts too
    h5 = RuntimeError("Unable to create file (file write failed: errno = 27, error message)")
    assert str(storage_error(h5, "x")) == "cannot write x: File too large"
    assert storage_error(ValueError("errno = 2"), "x") is None  # not the disk's refusal


def test_interrupted_is_not_an_exception_and_knows_its_exit_code():
    stop = Interrupted(2)
    assert not isinstance(stop, Exception)
    assert (stop.signal_name, stop.exit_code) == ("SIGINT", 130)
    assert Interrupted(15).exit_code == 143
