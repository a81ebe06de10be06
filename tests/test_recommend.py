"""recommend.py: the fastest variant within the budgets, on a hand-made results table."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from unetq.bench.machine import int8_limit_ms, int8_macs_per_cycle
from unetq.config import CompressConfig
from unetq.errors import UnetqError
from unetq.recommend import Budgets, recommend, summary_lines
from unetq.runfolder import RunFolder
from unetq.variants import VARIANTS

ROWS = [  # variant, runtime, ms at 1 thread, fg IoU, size bytes, test images
    ("keras", "keras", 10.0, 0.600, 8_000_000, 60),
    ("tflite-fp16", "litert", 8.0, 0.600, 4_000_000, 60),
    ("tflite-int8", "litert", 5.0, 0.597, 2_000_000, 60),
    ("openvino-int8", "openvino", 3.0, 0.592, 2_500_000, 60),
    ("tflite-int16x8", "litert", 2.0, 0.600, 2_100_000, 10),
]


def run_with(tmp_path: Path, rows=ROWS, model_ids=("m-a", "m-b")) -> Path:
    records = []
    for n, model_id in enumerate(model_ids):
        for variant, runtime, ms, iou, size, images in rows:
            records.append(
                {
                    "model_id": model_id,
                    "variant": variant,
                    "runtime": runtime,
                    "threads": 1,
                    "precision": "x",
                    "latency_ms_median": ms,
                    "speedup_vs_keras": rows[0][2] / ms,
                    "size_bytes": size,
                    "model_memory_mb": 10.0,
                    "fg_iou": iou - 0.1 * n,  # m-a is the best model
                    "n_images": images,
                }
            )
    run = RunFolder(tmp_path / "run")
    run.root.mkdir(parents=True)
    pd.DataFrame(records).to_csv(run.average_csv, index=False)
    return run.root


def test_fastest_within_the_accuracy_budget(tmp_path):
    [rec] = recommend(run_with(tmp_path), Budgets(max_iou_drop=0.5))
    assert rec.model_id == "m-a" and rec.chosen.variant == "tflite-int8"
    assert rec.chosen.iou_drop == pytest.approx(0.3)
    assert rec.chosen.speedup == pytest.approx(2.0) and rec.chosen.size_ratio == 0.25
    reasons = {c.variant: reason for c, reason in rec.others}
    assert reasons["openvino-int8"] == "accuracy: 0.80 points below keras > 0.5"
    assert reasons["tflite-int16x8"] == "accuracy from 10 of 60 test images only"
    assert reasons["tflite-fp16"] == ""  # within budget, only slower
    assert [c.variant for c, _ in rec.others] == ["tflite-int16x8", "openvino-int8", "tflite-fp16"]
    lines = summary_lines(rec)
    assert lines[1].startswith("ship tflite-int8 on litert") and "2.00x keras" in lines[1]


def test_other_budgets_change_the_choice(tmp_path):
    run = run_with(tmp_path)
    [rec] = recommend(run, Budgets(max_iou_drop=1.0))
    assert rec.chosen.variant == "openvino-int8"
    [rec] = recommend(run, Budgets(max_iou_drop=1.0, max_mb=2.2))
    assert rec.chosen.variant == "tflite-int8"
    assert dict((c.variant, r) for c, r in rec.others)["openvino-int8"] == "size: 2.50 MB > 2.2"
    [rec] = recommend(run, Budgets(max_iou_drop=0.0, max_ms=9.0))
    assert rec.chosen.variant == "tflite-fp16"
    [rec] = recommend(run, Budgets(max_iou_drop=0.0, max_ms=7.0))
    assert rec.chosen is None and "no variant is faster" in summary_lines(rec)[1]


def test_a_difference_within_the_noise_is_not_a_reason(tmp_path):
    run = run_with(tmp_path)
    average = pd.read_csv(RunFolder(run).average_csv)
    ci = {"tflite-int8": (4.0, 6.5), "openvino-int8": (2.5, 4.5), "tflite-fp16": (7.5, 8.5)}
    average["latency_ms_median_ci95_low"] = [ci.get(v, (9, 11))[0] for v in average.variant]
    average["latency_ms_median_ci95_high"] = [ci.get(v, (9, 11))[1] for v in average.variant]
    average.to_csv(RunFolder(run).average_csv, index=False)
    [rec] = recommend(run, Budgets(max_iou_drop=1.0))
    # openvino-int8 has the lower median, but the intervals overlap: the smaller loss wins
    assert rec.chosen.variant == "tflite-int8"
    assert [c.variant for c in rec.tied] == ["openvino-int8"]
    lines = summary_lines(rec)
    assert "[95% 4.00-6.50]" in lines[1]
    assert lines[2].startswith("as fast within the noise: openvino-int8 on openvino")
    [rec] = recommend(run, Budgets(max_iou_drop=0.5))  # openvino-int8 is out: no tie left
    assert rec.chosen.variant == "tflite-int8" and rec.tied == []


def test_model_choice_and_errors(tmp_path):
    run = run_with(tmp_path)
    assert [r.model_id for r in recommend(run, Budgets(), every_model=True)] == ["m-a", "m-b"]
    assert recommend(run, Budgets(), model_id="m-b")[0].model_id == "m-b"
    with pytest.raises(UnetqError, match="no model 'nope'"):
        recommend(run, Budgets(), model_id="nope")
    with pytest.raises(UnetqError, match="not benchmarked at 2 thread"):
        recommend(run, Budgets(threads=2))
    with pytest.raises(UnetqError, match="no results yet"):
        recommend(tmp_path / "empty", Budgets())


def test_cli_prints_the_choice_and_why_others_are_out(tmp_path):
    run = run_with(tmp_path)
    unetq = Path(sys.executable).parent / "unetq"
    proc = subprocess.run(
        [str(unetq), "recommend", "--run", str(run), "--max-iou-drop", "0.5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ship tflite-int8 on litert" in proc.stdout
    assert "accuracy: 0.80 points below keras > 0.5" in proc.stdout
    proc = subprocess.run(
        [str(unetq), "recommend", "--run", str(run), "--threads", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: m-a was not benchmarked")


def test_int8_limit_from_the_isa():
    zen5 = {
        "cpu_model": "AMD EPYC",
        "cpu_family": 26,
        "cpu_mhz": 2500,
        "isa": {"avx512_vnni": True},
    }
    zen4 = {**zen5, "cpu_family": 25}
    amx = {"cpu_model": "Intel Xeon", "cpu_mhz": 2000, "isa": {"amx_int8": True}}
    assert int8_macs_per_cycle(zen5)[0] == 128 and int8_macs_per_cycle(zen4)[0] == 64
    assert int8_macs_per_cycle(amx)[0] == 1024
    assert int8_macs_per_cycle({"isa": {"avx2": True}})[0] == 32
    ms, how = int8_limit_ms(1e9, zen5)  # 1e9 / (128 * 2.5e9) s
    assert ms == pytest.approx(3.125) and "2500 MHz" in how
    assert int8_limit_ms(1e9, {**zen5, "cpu_mhz": None})[0] != int8_limit_ms(1e9, zen5)[0]


def test_config_default_variants_are_the_registry():
    # every variant of a Keras model; a user's ONNX / TFLite model maps them (for_origin)
    assert CompressConfig().variants == [v for v in VARIANTS if "keras" in VARIANTS[v].origins]


def test_tile_mode_names_the_whole_image_time_measured_end_to_end(tmp_path):
    from unetq.fileio import write_json

    run = RunFolder(run_with(tmp_path))
    frame = pd.read_csv(run.average_csv)
    frame["whole_image_ms_mean"] = 50.0  # e.g. 9 tiles of 5 ms and 5 ms to cut and stitch
    frame["whole_image_tiles_mean"] = 9.0
    frame.to_csv(run.average_csv, index=False)
    write_json(run.dataset, {"mode": "tile", "tiles_per_image": 10.0})
    [rec] = recommend(run.root, Budgets(max_iou_drop=0.5))
    line = summary_lines(rec)[1]
    assert "50.0 ms per whole test image of 10.0 tiles on average" in line  # 5 ms x 10 tiles
    assert "end to end, with cutting and stitching: 50.0 ms for images of 9.0 tiles" in line
    assert "against 45.0 ms as tiles" in line


def test_throughput_objective_ranks_by_images_per_second_at_the_best_setting(tmp_path):
    """Latency picks tflite-int8 (5 ms); over many images openvino-fp32 in batches of 8 gives
    more images per second than tflite-int8, and is chosen for throughput (the accuracy budget
    still rules out openvino-int8)."""
    run = RunFolder(
        run_with(tmp_path, rows=[*ROWS, ("openvino-fp32", "openvino", 6.0, 0.6, 4e6, 60)])
    )
    frame = pd.read_csv(run.average_csv)
    throughput = {  # images/s, its 95% interval, setting, memory
        "keras": (100.0, 95.0, 105.0, "batch 8", 30.0),
        "tflite-fp16": (150.0, 140.0, 160.0, "batch 4", 20.0),
        "tflite-int8": (250.0, 240.0, 260.0, "batch 1", 15.0),
        "openvino-fp32": (400.0, 380.0, 420.0, "batch 8", 40.0),
        "openvino-int8": (900.0, 850.0, 950.0, "async", 35.0),
    }
    at_all = frame.assign(threads=4)
    for column, i in (
        ("images_per_s", 0),
        ("images_per_s_ci95_low", 1),
        ("images_per_s_ci95_high", 2),
        ("setting", 3),
        ("model_memory_mb", 4),
    ):
        at_all[f"throughput_{column}"] = [
            throughput.get(v, (None,) * 5)[i] for v in at_all["variant"]
        ]
    at_all["throughput_vs_keras"] = at_all["throughput_images_per_s"] / 100.0
    pd.concat([frame, at_all]).to_csv(run.average_csv, index=False)

    [latency] = recommend(run.root, Budgets(threads=4))
    assert latency.chosen.variant == "tflite-int8"
    [rec] = recommend(run.root, Budgets(threads=4, objective="throughput"))
    assert rec.chosen.variant == "openvino-fp32" and rec.chosen.setting == "batch 8"
    assert rec.chosen.images_per_s == 400.0 and rec.chosen.speedup == pytest.approx(4.0)
    assert rec.chosen.memory_mb == 40.0
    reasons = {c.variant: reason for c, reason in rec.others}
    assert reasons["openvino-int8"].startswith("accuracy")
    assert "tflite-int16x8" not in reasons  # not measured for throughput (a slow variant)
    line = summary_lines(rec)[1]
    assert "400.0 images/s [95% 380.0-420.0] at batch 8 at 4 thread(s), 4.00x keras" in line
    assert summary_lines(rec)[0].endswith("100.0 images/s [95% 95.0-105.0] at batch 8")
    with pytest.raises(UnetqError, match="not throughput-measured at 1 thread"):
        recommend(run.root, Budgets(threads=1, objective="throughput"))
    with pytest.raises(UnetqError, match="unknown objective"):
        Budgets(objective="fast")
