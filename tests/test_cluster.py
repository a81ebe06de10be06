"""`unetq study --executor ray`: units as Ray tasks on a real cluster, files written back by the
driver, results equal to the local executor's, a killed worker retried."""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from csvcompare import CSVS, assert_same_results
from runhelp import run_cli
from unetq.cluster import TASK_NAME, pack, run_unit, unpack
from unetq.runfolder import RunFolder
from unetq.runtimes import THREADS_ENV, usable_cores

BIN = Path(sys.executable).parent


def _write_three(root: Path, marker: str) -> str:
    (root / "models" / "m").mkdir(parents=True, exist_ok=True)
    (root / "models" / "m" / "model.keras").write_text(marker)
    time.sleep(0.01)
    (root / "models" / "m" / "done.json").write_text("{}")
    (root / "kept.txt").write_text((root / "kept.txt").read_text())  # same content, rewritten
    return "written"


def test_a_unit_returns_only_what_it_wrote_oldest_first_and_the_driver_writes_it_back(tmp_path):
    source = tmp_path / "run"
    (source / "models" / "m").mkdir(parents=True)
    (source / "kept.txt").write_text("k")
    (source / "untouched.txt").write_text("u")
    files = pack(source, [source / "kept.txt", source / "untouched.txt", source / "models"])
    assert files == {"kept.txt": b"k", "untouched.txt": b"u"}

    back, result = run_unit(_write_three, files, 3, "weights")
    assert result == "written"
    assert list(back) == ["models/m/model.keras", "models/m/done.json", "kept.txt"]
    assert back["models/m/model.keras"] == b"weights"
    assert os.environ[THREADS_ENV] == "3" and usable_cores() == min(3, len(os.sched_getaffinity(0)))
    os.environ.pop(THREADS_ENV)

    unpack(source, back)
    assert (source / "models/m/model.keras").read_text() == "weights"
    assert (source / "untouched.txt").read_text() == "u"
    assert not list(source.rglob(".*part*"))  # atomic writes leave no temporaries


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head():
    """A real Ray head started with `ray start`: 2 CPUs, the custom resource 'bench', token
    authentication (the driver needs RAY_AUTH_MODE=token too). Its token is in the session's
    private HOME (tests/conftest.py), where `ray start` and every driver look for it."""
    pytest.importorskip("ray", reason="ray is not installed (pip install 'unetq[ray]')")
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    generate = [str(BIN / "ray"), "get-auth-token", "--generate"]  # $HOME/.ray/auth_token
    subprocess.run(generate, check=True, capture_output=True, env=env, timeout=120)
    temp = tempfile.mkdtemp(prefix="head", dir=os.environ.get("RAY_TMPDIR"))  # short: sockets
    start = [str(BIN / "ray"), "start", "--head", f"--port={port}", "--num-cpus=2"]
    start += ["--resources", json.dumps({"bench": 1}), "--include-dashboard=false"]
    start += [f"--temp-dir={temp}"]
    try:
        subprocess.run(start, check=True, capture_output=True, env=env, timeout=180)
        yield f"127.0.0.1:{port}"
    finally:
        _stop_head(temp, port)
        shutil.rmtree(temp, ignore_errors=True)


def _stop_head(temp: str, port: int) -> None:
    """End the processes of the head started in `temp` on `port`, and their children: not every
    Ray process of the machine, as `ray stop` would (another user's cluster among them)."""
    ours = re.compile(rf"{re.escape(temp)}|:{port}\b")
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        if ours.search(" ".join(proc.info["cmdline"] or [])):
            with contextlib.suppress(psutil.NoSuchProcess):
                found.update({p.pid: p for p in [proc, *proc.children(recursive=True)]})
    found.pop(os.getpid(), None)
    for proc in found.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(list(found.values()), timeout=5)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


def _kill_first_unit(proc: subprocess.Popen, timeout: float) -> int | None:
    """SIGKILL the first worker process seen running a unetq unit; its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for p in psutil.process_iter(["cmdline"]):
            if (p.info["cmdline"] or [""])[0].startswith(f"ray::{TASK_NAME}"):
                p.send_signal(signal.SIGKILL)
                return p.pid
        time.sleep(0.2)
    return None


@pytest.mark.slow
def test_the_smoke_study_on_a_ray_cluster_equals_the_local_one_though_a_worker_is_killed(
    smoke_run, cache_env, tmp_path, ray_head
):
    out = tmp_path / "smoke"
    args = ["study", "--preset", "smoke", "--out", str(out), "--executor", "ray"]
    args += ["--ray-address", ray_head, "--set", "cluster.bench_resource=bench"]
    proc = subprocess.Popen(
        [str(BIN / "unetq"), *args],
        env={**cache_env, "RAY_AUTH_MODE": "token"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    killed = _kill_first_unit(proc, timeout=300)
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, output[-3000:]
    assert killed is not None, "no worker was seen running a unit"
    assert "will be retried" in output  # Ray said so; the study went on
    assert_same_results(smoke_run, out)
    machine = json.loads(RunFolder(out).machine.read_text())
    assert machine  # measured on the node with the 'bench' resource, and described


@pytest.mark.slow
def test_a_finished_study_rerun_on_a_local_ray_instance_computes_nothing(
    smoke_run, cache_env, tmp_path
):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'unetq[ray]')")
    out = tmp_path / "smoke"
    shutil.copytree(smoke_run, out)
    before = {name: (out / name).read_bytes() for name in CSVS}
    artifacts = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.suffix == ".tflite"}
    proc = run_cli(["study", "--preset", "smoke", "--out", out, "--executor", "ray"], cache_env)
    assert "ray: 1 node(s)" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in artifacts} == artifacts
    for name in ("trained_models_info.csv", "robustness.csv"):  # (the others name their paths)
        assert (out / name).read_bytes() == before[name], name
    assert_same_results(smoke_run, out)


# --- a head that does not answer: one line within cluster.connect_timeout_s ---------------------


def _ray_nodes_of(pid: int) -> list[str]:
    """The raylet and GCS processes of a Ray session that process `pid` started (Ray names the
    session folder after it), whoever else runs Ray on this machine."""
    session = re.compile(rf"session_[0-9_-]+_{pid}\b")
    return [
        " ".join(p.info["cmdline"])
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] in ("raylet", "gcs_server")
        and session.search(" ".join(p.info["cmdline"] or []))
    ]


@pytest.fixture
def silent_port():
    """A port that accepts TCP connections and never says a word (not a Ray head); yields the
    port and the times connections were accepted."""
    server = socket.create_server(("", 0))
    accepted: list[float] = []
    conns = []

    def accept():
        while True:
            try:
                conns.append(server.accept()[0])
            except OSError:  # closed
                return
            accepted.append(time.monotonic())

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        server.close()
        for conn in conns:
            conn.close()


@pytest.mark.parametrize(
    "listening",
    # not-ray waits for Ray's own handshake to time out: slow tier
    [False, pytest.param(True, marks=pytest.mark.slow)],
    ids=["nothing-listens", "not-ray"],
)
def test_a_ray_head_that_does_not_answer_is_one_line_within_the_timeout(
    listening, request, cache_env, tmp_path
):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'unetq[ray]')")
    port, accepted = request.getfixturevalue("silent_port") if listening else (_free_port(), [])
    address, timeout = f"127.0.0.1:{port}", 5
    args = ["study", "--preset", "smoke", "--out", tmp_path / "smoke", "--executor", "ray"]
    args += ["--ray-address", address, "--set", f"cluster.connect_timeout_s={timeout}"]
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(BIN / "unetq"), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**cache_env, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    stdout, stderr = proc.communicate(timeout=300)
    ended = time.monotonic()
    assert proc.returncode == 2, stderr[-2000:]
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and address in lines[0], lines
    assert "Traceback" not in stdout
    # The port is tried before TensorFlow loads (the first connection), Ray's handshake after
    # it: from the handshake's first connection to the end, the timeout and a little
    if listening:
        assert len(accepted) >= 2, f"the head's port was tried {len(accepted)} time(s)"
        assert ended - accepted[1] < timeout + 5, f"{ended - accepted[1]:.1f} s after connecting"
        assert "no Ray head answered within 5 s" in lines[0]
    else:
        assert "connection refused" in lines[0]
    assert ended - started < timeout + 120, f"took {ended - started:.0f} s"
    assert _ray_nodes_of(proc.pid) == []  # no raylet or GCS started, none left behind
