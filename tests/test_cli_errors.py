"""The installed `unetq` command as a user meets it: usage errors, Ctrl-C, a refused write, and a
run folder copied with `cp -r`. Every case runs the console script in a child process."""

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from csvcompare import assert_same_results

UNETQ = Path(sys.executable).parent / "unetq"


def unetq(args, env=None, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    assert UNETQ.exists(), f"the console script is not installed: {UNETQ}"
    return subprocess.run(
        [str(UNETQ), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        **kwargs,
    )


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


# --- usage errors -------------------------------------------------------------------------------


def test_no_arguments_prints_the_usage_without_a_traceback():
    proc = unetq([])
    out = proc.stdout + proc.stderr
    assert "Usage" in out and "study" in out
    assert "Traceback" not in out
    assert proc.returncode in (0, 2)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["nosuchcmd"], "No such command 'nosuchcmd'"),
        (["study", "--bogus"], "No such option: --bogus"),
        (["bench"], "Missing option '--run'"),
        (["bench", "--run"], "'--run' requires an argument"),
        (["evaluate", "--run", "x", "--split", "nope"], "'nope' is not train, val or test"),
    ],
)
def test_usage_errors_exit_2_with_the_usage(args, says):
    proc = unetq(args)
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_user_error_is_one_line_and_exit_2(tmp_path):
    proc = unetq(["report", "--run", tmp_path / "missing"])
    assert proc.returncode == 2
    assert lines(proc.stderr) == [
        f"error: {tmp_path / 'missing'} is not a unetq run folder (no config.toml)"
    ]


# --- a write the disk refuses -------------------------------------------------------------------


def _small_files_only(limit: int):
    def limit_file_size():  # in the child: writes past `limit` bytes fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_file_size


@pytest.mark.slow
def test_a_refused_write_is_one_line_naming_the_path_and_leaves_nothing_half_written(
    smoke_run, tmp_path, cache_env
):
    # smoke_run has filled the data cache, so the first refused write is the run folder's own
    out = tmp_path / "run"
    env = {**cache_env, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = unetq(
        ["study", "--preset", "smoke", "--out", out],
        env=env,
        preexec_fn=_small_files_only(20_000),
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    [message] = [ln for ln in lines(proc.stderr) if ln.startswith("error:")]
    assert message.startswith(f"error: cannot write {out}")
    assert message.endswith("File too large")
    assert [p for p in out.rglob("*") if ".part." in p.name] == [], "a temporary file was left"


# --- Ctrl-C -------------------------------------------------------------------------------------


def _start_study(out: Path, env) -> subprocess.Popen:
    return subprocess.Popen(
        [str(UNETQ), "study", "--preset", "smoke", "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )


def _wait_for(proc: subprocess.Popen, found, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if found():
            return
        time.sleep(0.05)
    raise AssertionError(f"the study ended before {what}: {proc.stderr.read()[-2000:]}")


def _living(group: int) -> list[str]:
    """Processes of the group that still run (zombies wait only for their reaper)."""
    ps = subprocess.run(
        ["ps", "-o", "pid=,stat=,args=", "-g", str(group)], capture_output=True, text=True
    )
    return [ln for ln in ps.stdout.splitlines() if ln.split()[1][0] != "Z"]


def _interrupt(proc: subprocess.Popen) -> tuple[int, list[str], float]:
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    return proc.returncode, lines(stderr), time.monotonic() - started


@pytest.mark.slow
def test_ctrl_c_during_compression_and_benchmark_exits_130_and_resumes_exactly(
    smoke_run, cache_env, tmp_path
):
    out = tmp_path / "smoke"
    proc = _start_study(out, cache_env)
    _wait_for(proc, lambda: list(out.glob("models/*/tflite-fp32.tflite")), "compression")
    code, said, seconds = _interrupt(proc)
    assert code == 130
    assert said == [
        "interrupted (SIGINT): finished work is saved; rerun the same command to resume"
    ]
    assert seconds < 15, f"took {seconds:.1f} s to stop"
    assert _living(proc.pid) == []
    assert not (out / "compressed_models_info.csv").exists()

    proc = _start_study(out, cache_env)
    _wait_for(proc, lambda: (out / "machine.json").exists(), "benchmarking")
    time.sleep(1.0)  # the probes are loaded and timing
    code, said, seconds = _interrupt(proc)
    assert code == 130 and len(said) == 1 and said[0].startswith("interrupted"), said
    assert seconds < 15, f"took {seconds:.1f} s to stop"
    assert _living(proc.pid) == []
    assert not (out / "report" / "index.html").exists()

    proc = unetq(["study", "--preset", "smoke", "--out", out], env=cache_env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_same_results(smoke_run, out)


# --- a run folder copied with cp -r -----------------------------------------------------------


@pytest.mark.slow
def test_a_run_folder_copied_with_cp_r_reruns_nothing(smoke_run, cache_env, tmp_path):
    copy = tmp_path / "copied"
    subprocess.run(["cp", "-r", str(smoke_run), str(copy)], check=True)  # new file times
    average = (copy / "model_performance_average_results.csv").read_bytes()
    proc = unetq(["study", "--preset", "smoke", "--out", copy], env=cache_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (copy / "model_performance_average_results.csv").read_bytes() == average
    for step in ("evaluate", "bench", "robustness"):
        assert f"{step}: nothing to redo" in proc.stdout, proc.stdout[-3000:]
    shutil.rmtree(copy)
