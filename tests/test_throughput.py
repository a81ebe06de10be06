"""Throughput: streams of images at batch sizes and through asynchronous requests, timed in
probe children, merged into throughput_results.csv and the average CSV.

No assertion here is about speed: the figures live in docs/MEASURED.md.
"""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from runhelp import child_module
from unetq.bench.probe import time_stream
from unetq.bench.run import bench_run
from unetq.config import StudyConfig
from unetq.results import best_model_id
from unetq.runfolder import RunFolder
from unetq.runtimes import Setting, usable_cores

# --- one stream, in-process --------------------------------------------------------------------


class BatchCounter:
    """Records the first pixel of every image of every call, one list per call."""

    def __init__(self, batch):
        self.batch = batch
        self.calls = []

    def run(self, x):
        assert len(x) == 1
        return self.run_batch(x)

    def run_batch(self, x):
        assert 1 <= len(x) <= self.batch and x.dtype == np.float32 and x.ndim == 4
        self.calls.append([int(v) for v in x[:, 0, 0, 0]])
        return x


def images(count=5):
    out = np.zeros((count, 1, 2, 2, 3), np.float32)
    out[:, 0, 0, 0, 0] = np.arange(count)
    return out


def test_a_stream_is_cut_into_calls_of_the_batch_and_counts_every_image_once():
    predictor = BatchCounter(batch=3)
    ms = time_stream(predictor, images(5), count=7, warmup=1, start=2)
    # the warm-up call takes the stream's first batch; then 7 images in calls of 3, 3, 1
    assert predictor.calls == [[2, 3, 4], [2, 3, 4], [0, 1, 2], [3]]
    assert ms > 0


def test_one_image_at_a_time_uses_the_latency_call():
    predictor = BatchCounter(batch=1)
    time_stream(predictor, images(3), count=4, warmup=2)
    assert predictor.calls == [[0], [1], [0], [1], [2], [0]]


def test_settings_parse_and_name():
    assert Setting.parse("8") == Setting(8) and Setting.parse("batch 4").name == "batch 4"
    assert Setting.parse("async") == Setting(1, True) and Setting(1, True).name == "async"
    assert Setting(1).options() == {} and Setting(3).options() == {"batch": 3}
    for bad in ("0", "-2", "four", ""):
        with pytest.raises(Exception, match="not a number of images"):
            Setting.parse(bad)
    with pytest.raises(Exception, match="asynchronous requests are openvino's"):
        Setting(1, True).check("litert")


# --- the stage, with a fake runtime in probe children -----------------------------------------

FAKE_RUNTIME = """
import os
from pathlib import Path
import numpy as np


class FakePredictor:
    def __init__(self, runtime, artifact, threads, batch, asynchronous):
        fixed = os.environ.get("FAKERT_FIXED", "").split(",")
        if Path(artifact).stem in fixed and (batch > 1 or asynchronous):
            raise ValueError(f"the batch dimension of {Path(artifact).name} is fixed to 1")
        self.runtime, self.threads, self.precision = runtime, threads, "fp32"
        self.input_hw, self.num_classes = (16, 16), 2
        self.batch = 2 if asynchronous else batch  # the fake plugin's request count
        self.tag = f"{runtime}:{Path(artifact).stem}@{'async' if asynchronous else batch}"

    def run(self, x):
        return self.run_batch(x)

    def run_batch(self, x):
        assert 1 <= len(x) <= self.batch and x.shape[1:] == (16, 16, 3), x.shape
        with open(os.environ["FAKERT_RUNLOG"], "a") as fh:
            fh.write(f"{self.tag} {len(x)}\\n")
        return np.repeat(x.mean(-1, keepdims=True), 2, -1)


def load_predictor(runtime, artifact, threads=1, precision=None, batch=1, asynchronous=False):
    return FakePredictor(runtime, artifact, threads, batch, asynchronous)
"""
LOADER = "fakestream:load_predictor"
FILES = (
    "model.keras",
    "tflite-fp32.tflite",
    "tflite-int16x8.tflite",  # slow: no stream
    "openvino-fp32.xml",
    "openvino-fp32.bin",
)


@pytest.fixture
def fake_runtime(tmp_path, monkeypatch):
    child_module(tmp_path, "fakestream", FAKE_RUNTIME, monkeypatch)
    log = tmp_path / "run.log"
    monkeypatch.setenv("FAKERT_RUNLOG", str(log))
    return SimpleNamespace(calls=lambda: log.read_text().split("\n")[:-1] if log.exists() else [])


def make_run(tmp_path, models=("xception-f8-bn-e2",), files=FILES):
    run_dir = tmp_path / "run"
    for model_id in models:
        folder = run_dir / "models" / model_id
        folder.mkdir(parents=True)
        for name in files:
            (folder / name).write_bytes(b"x" * 100)
    return run_dir


def config(**bench):
    base = {
        "runtimes": ["keras", "litert", "openvino"], "threads": [1, "all"], "repeats": 3,
        "warmup": 1,
        "rounds": 2, "peaks": "off", "throughput_batches": [1, 3], "throughput_images": 7,
    }  # fmt: skip
    return StudyConfig.model_validate({"data": {"image_size": 16}, "bench": {**base, **bench}})


def test_every_fast_variant_streams_at_every_setting_and_the_best_reaches_the_average(
    fake_runtime, tmp_path
):
    run_dir = make_run(tmp_path)
    cfg = config()
    bench_run(run_dir, cfg, loader=LOADER)
    run = RunFolder(run_dir)
    cores = usable_cores()
    sizes: dict[str, list[int]] = {}
    for line in fake_runtime.calls():
        tag, size = line.rsplit(" ", 1)
        sizes.setdefault(tag, []).append(int(size))
    # the latency jobs call `run` one image at a time; each stream job: per round one warm-up
    # call, then 7 images in calls of its batch (2 rounds)
    assert sizes["litert:tflite-fp32@3"] == [3, 3, 3, 1] * 2
    assert sizes["openvino:openvino-fp32@async"] == [2, 2, 2, 2, 1] * 2
    assert sum(sizes["keras:model@3"]) == 2 * (7 + 3)
    assert not any(tag.startswith("litert:tflite-int16x8@") and tag.endswith("@3") for tag in sizes)

    table = pd.read_csv(run.throughput_csv)
    settings = set(zip(table["variant"], table["setting"], strict=True))
    assert settings == {
        ("keras", "batch 1"), ("keras", "batch 3"),
        ("tflite-fp32", "batch 1"), ("tflite-fp32", "batch 3"),
        ("openvino-fp32", "batch 1"), ("openvino-fp32", "batch 3"), ("openvino-fp32", "async"),
    }  # fmt: skip
    assert (table["threads"] == cores).all() and (table["images_per_s"] > 0).all()
    assert (table["images_per_s_ci95_low"] <= table["images_per_s"]).all()
    assert (table["images_per_s"] <= table["images_per_s_ci95_high"]).all()
    by = table.set_index(["variant", "setting"])
    assert by.loc[("openvino-fp32", "async"), "batch"] == 2  # the requests in flight
    assert by.loc[("tflite-fp32", "batch 3"), "batch"] == 3

    # the average CSV: each variant's best setting at the core count, paired with keras' best
    average = pd.read_csv(run.average_csv)
    rows = average[average["throughput_images_per_s"].notna()].set_index("variant")
    assert (rows["threads"] == cores).all()
    parts = {p.stem: json.loads(p.read_text())["record"] for p in run.throughput_parts()}
    for variant in ("keras", "tflite-fp32", "openvino-fp32"):
        mine = table[table["variant"] == variant]
        best = mine.loc[mine["images_per_s"].idxmax()]
        assert rows.loc[variant, "throughput_setting"] == best["setting"]
        assert rows.loc[variant, "throughput_images_per_s"] == pytest.approx(best["images_per_s"])
    keras = table[table["variant"] == "keras"]
    keras_best = keras.loc[keras["images_per_s"].idxmax(), "setting"].replace(" ", "")
    lite_best = rows.loc["tflite-fp32", "throughput_setting"].replace(" ", "")
    keras_rounds = parts[f"keras@keras@t{cores}@{keras_best}"]["ms_per_image_rounds"]
    lite_rounds = parts[f"tflite-fp32@litert@t{cores}@{lite_best}"]["ms_per_image_rounds"]
    expected = np.median(np.divide(keras_rounds, lite_rounds))
    assert rows.loc["tflite-fp32", "throughput_vs_keras"] == pytest.approx(expected)
    assert rows.loc["keras", "throughput_vs_keras"] == pytest.approx(1.0)

    # resumable: a rerun measures nothing again
    before = len(fake_runtime.calls())
    bench_run(run_dir, cfg, loader=LOADER)
    assert len(fake_runtime.calls()) == before


def test_throughput_is_measured_at_the_largest_latency_thread_count(fake_runtime, tmp_path):
    """Latency at 1 thread only (the smoke preset): throughput at 1 thread too, on the rows the
    average CSV has, not on rows of a thread count without latency."""
    run_dir = make_run(tmp_path, files=("model.keras", "tflite-fp32.tflite"))
    bench_run(run_dir, config(runtimes=["keras", "litert"], threads=[1]), loader=LOADER)
    run = RunFolder(run_dir)
    assert set(pd.read_csv(run.throughput_csv)["threads"]) == {1}
    average = pd.read_csv(run.average_csv)
    assert len(average) == 2 and average["latency_ms_median"].notna().all()
    assert average["throughput_images_per_s"].notna().all()


def test_a_setting_the_model_cannot_run_is_kept_with_its_reason(
    fake_runtime, tmp_path, monkeypatch
):
    """A model whose batch dimension is fixed: its batch 3 and async settings fail with the
    runtime's reason, batch 1 is measured and is its best; the bench does not fail."""
    monkeypatch.setenv("FAKERT_FIXED", "openvino-fp32")
    run_dir = make_run(tmp_path)
    bench_run(run_dir, config(), loader=LOADER)
    table = pd.read_csv(RunFolder(run_dir).throughput_csv).set_index(["variant", "setting"])
    for setting in ("batch 3", "async"):
        assert "fixed to 1" in table.loc[("openvino-fp32", setting), "error"]
        assert np.isnan(table.loc[("openvino-fp32", setting), "images_per_s"])
    assert table.loc[("openvino-fp32", "batch 1"), "images_per_s"] > 0
    assert table["error"].notna().sum() == 2
    average = pd.read_csv(RunFolder(run_dir).average_csv)
    row = average[average["throughput_images_per_s"].notna()].set_index("variant")
    assert row.loc["openvino-fp32", "throughput_setting"] == "batch 1"


def test_throughput_goes_to_the_best_evaluated_model_only(fake_runtime, tmp_path):
    models = ("xception-f8-bn-e2", "xception-f16-bn-e2")
    run_dir = make_run(tmp_path, models=models, files=("model.keras", "tflite-fp32.tflite"))
    run = RunFolder(run_dir)
    assert best_model_id(run) is None  # not evaluated: every model is measured
    pd.DataFrame(
        {
            "model_id": [models[0], models[0], models[1], models[1]],
            "variant": ["keras", "keras", "keras", "tflite-fp32"],
            "runtime": ["keras", "keras", "keras", "litert"],
            "image": ["a", "b", "a", "a"],
            "fg_iou": [0.5, 0.7, 0.55, 0.9],  # means: f8 0.60, f16 0.55 (its tflite's 0.9 aside)
            "background_class": 0,
            **{f"cm_{t}_{p}": int(t == p) for t in (0, 1) for p in (0, 1)},
        }
    ).to_csv(run.individual_csv, index=False)
    assert best_model_id(run) == models[0]
    bench_run(run_dir, config(runtimes=["keras", "litert"], throughput_batches=[2]), loader=LOADER)
    measured = {p.parent.name for p in run.throughput_parts()}
    assert measured == {models[0]}


def test_a_real_tiny_model_streams_in_batches_and_async_requests(tiny, tmp_path):
    """LiteRT and OpenVINO files of a real (untrained) U-Net: every setting runs, in probe
    children with the real loader; a batch of 2 is recorded as 2 images per call, OpenVINO's
    asynchronous setting as the requests its plugin chose."""
    from tinyrun import COMPRESSED, copy_run

    run_dir = copy_run(tiny, tmp_path / "run")
    cfg = config(runtimes=["litert", "openvino"], throughput_batches=[1, 2], throughput_images=5)
    cfg.data.image_size = 32
    bench_run(run_dir, cfg)
    table = pd.read_csv(RunFolder(run_dir).throughput_csv)
    table = table[table["model_id"] == COMPRESSED].set_index(["variant", "setting"])
    assert table["error"].isna().all(), table["error"].dropna().tolist()
    assert (table["images_per_s"] > 0).all()
    assert table.loc[("tflite-int8", "batch 2"), "batch"] == 2
    assert table.loc[("openvino-fp32", "async"), "batch"] >= 1
    assert set(table.index) >= {
        ("tflite-fp32", "batch 1"), ("tflite-fp32", "batch 2"), ("openvino-fp32", "batch 2"),
    }  # fmt: skip
