"""The smoke study end to end: outputs, and resume after SIGKILL at a random stage."""

import os
import random
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from csvcompare import CSVS, assert_same_results
from runhelp import run_cli
from unetq.variants import validate_variants

pytestmark = pytest.mark.slow

# A file that shows the study has entered a stage (checked in this order by the poller).
STAGE_MARKERS = {
    "train": "models/.train",
    "compress": "models/*/tflite-fp32.tflite",
    "evaluate": ".eval",
    "bench": ".bench",
    "robustness": ".robustness",
}


def test_smoke_study_writes_every_output(smoke_run):
    for name in CSVS + ["config.toml", "machine.json", "dataset.json", "report/index.html"]:
        assert (smoke_run / name).exists(), name
    trained = pd.read_csv(smoke_run / "trained_models_info.csv")
    assert len(trained) == 2  # filters {4} x batch norm {on, off} x epochs {3}
    compressed = pd.read_csv(smoke_run / "compressed_models_info.csv")
    assert len(compressed) == 2 * len(validate_variants("all"))
    assert set(compressed["variant"]) == set(validate_variants("all"))
    assert compressed["error"].isna().all()  # every variant was made
    average = pd.read_csv(smoke_run / "model_performance_average_results.csv")
    for col in (
        "Model",
        "Quantization",
        "Execution_time",
        "Memory_usage",
        "IoU_score",
        "Dice_score",
        "latency_ms_median",
        "fg_iou",
        "size_bytes",
    ):
        assert col in average, col
    assert "openvino" in set(average["runtime"])
    for model_id in trained["model_id"]:
        assert (smoke_run / "models" / model_id / "model.keras").exists()
        assert (smoke_run / "models" / model_id / "history.csv").exists()
    html = (smoke_run / "report" / "index.html").read_text()
    assert "SYNTHETIC" in html


def test_rerun_of_a_finished_study_recomputes_nothing(smoke_run, cache_env):
    before = {
        p: p.stat().st_mtime_ns for p in smoke_run.rglob("*") if p.suffix in (".keras", ".tflite")
    }
    started = time.perf_counter()
    run_cli(["study", "--preset", "smoke", "--out", smoke_run], env=cache_env)
    after = {p: p.stat().st_mtime_ns for p in before}
    assert before == after
    assert time.perf_counter() - started < 120


def test_study_killed_at_a_random_stage_resumes_to_the_same_csvs(
    smoke_run,
    cache_env,
    tmp_path,
):
    stage = random.Random(os.getpid()).choice(list(STAGE_MARKERS))
    print(f"killing the study once it enters stage '{stage}'")
    out = tmp_path / "smoke"
    proc = subprocess.Popen(
        [sys.executable, "-m", "unetq.cli", "study", "--preset", "smoke", "--out", str(out)],
        env=cache_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if list(out.glob(STAGE_MARKERS[stage])):
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"study ended before stage {stage}: {proc.stderr.read()[-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "report" / "index.html").exists()

    run_cli(["study", "--preset", "smoke", "--out", out], env=cache_env)
    assert_same_results(smoke_run, out)
