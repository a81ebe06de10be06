"""One owner per run folder: a second process refuses with one line naming the holder; a holder
killed with SIGKILL leaves nothing that blocks the next run."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from unetq.runfolder import RunFolder
from unetq.runlock import RunFolderBusy, own_run_folder

UNETQ = Path(sys.executable).parent / "unetq"
HOLD = """
import sys, time
from unetq.runlock import own_run_folder
with own_run_folder(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def wait_for_holder(run_dir: Path, pid: int, timeout: float = 120) -> dict:
    """The lock file's holder once it names `pid`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            info = json.loads(RunFolder(run_dir).lock_file.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        if info.get("pid") == pid:
            return info
        time.sleep(0.2)
    raise AssertionError(f"pid {pid} never took the lock of {run_dir}")


def test_a_held_folder_is_refused_until_its_holder_is_killed(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        busy = pytest.raises(RunFolderBusy, match=f"in use by pid {holder.pid} on ")
        with busy, own_run_folder(run_dir):
            pass
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the lock file stays behind
        holder.wait()
    assert RunFolder(run_dir).lock_file.exists()
    with own_run_folder(run_dir), own_run_folder(run_dir):  # re-entrant in one process
        pass


def test_a_missing_folder_is_not_created_when_not_asked(tmp_path):
    with own_run_folder(tmp_path / "absent", create=False):
        pass
    assert not (tmp_path / "absent").exists()


def start(args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [str(UNETQ), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kwargs,
    )


@pytest.mark.slow  # a smoke study, then a benchmark or a study in a child
def test_a_second_unetq_on_a_busy_run_folder_exits_2_and_the_first_finishes(
    smoke_run, cache_env, tmp_path
):
    run_dir = tmp_path / "smoke"
    shutil.copytree(smoke_run, run_dir)
    first = start(["bench", "--run", run_dir, "--remeasure"], env=cache_env)
    wait_for_holder(run_dir, first.pid)
    second = subprocess.run(
        [str(UNETQ), "study", "--preset", "smoke", "--out", str(run_dir)],
        capture_output=True,
        text=True,
        env=cache_env,
        timeout=120,
    )
    assert second.returncode == 2
    lines = [ln for ln in second.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"in use by pid {first.pid}" in lines[0] and "bench" in lines[0]
    assert "Traceback" not in second.stderr
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]


@pytest.mark.slow  # a smoke study, then a benchmark or a study in a child
def test_after_kill_9_a_rerun_takes_the_folder_over_and_completes(smoke_run, cache_env, tmp_path):
    run_dir = tmp_path / "smoke"
    shutil.copytree(smoke_run, run_dir)
    args = ["study", "--preset", "smoke", "--out", run_dir]
    first = start(args, env=cache_env)
    wait_for_holder(run_dir, first.pid)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    rerun = subprocess.run(
        [str(UNETQ), *map(str, args)], capture_output=True, text=True, env=cache_env, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert RunFolder(run_dir).average_csv.exists()
