"""bench: timing protocol, the child-process memory probe, the resumable run and the merge.

No assertion here is about speed: speed claims live in benchmarks/.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from runhelp import child_module
from unetq.bench.machine import machine_info
from unetq.bench.probe import LatencyStats, MemoryStats, time_predictor
from unetq.bench.run import bench_record, bench_run, resolve_threads
from unetq.bench.session import ProbeJob, measure_interleaved, run_probe, split_repeats
from unetq.config import StudyConfig
from unetq.errors import UnetqError
from unetq.records import BenchRecord, ImageResult
from unetq.results import paired_ratio, result_rows, write_average_results
from unetq.runfolder import RunFolder
from unetq.runtimes import usable_cores

# --- timing ------------------------------------------------------------------------------------


class CountingPredictor:
    def __init__(self):
        self.seen = []

    def run(self, x):
        assert x.shape == (1, 2, 2, 3) and x.dtype == np.float32
        self.seen.append(int(x[0, 0, 0, 0]))
        return x


def test_time_predictor_warms_up_then_times_every_call_in_order():
    images = np.zeros((3, 1, 2, 2, 3), np.float32)
    images[:, 0, 0, 0, 0] = [0, 1, 2]
    predictor = CountingPredictor()
    stats = time_predictor(predictor, images, repeats=7, warmup=2)
    assert len(predictor.seen) == 2 + 7
    assert predictor.seen == [0, 1] + [0, 1, 2, 0, 1, 2, 0]  # same images, same order
    s = np.array(stats.samples_ms)
    assert len(s) == 7 and (s >= 0).all()
    assert stats.median_ms == pytest.approx(np.median(s))
    assert stats.p95_ms == pytest.approx(np.percentile(s, 95))
    assert stats.mean_ms == pytest.approx(s.mean())
    assert stats.std_ms == pytest.approx(s.std(ddof=1))
    assert stats.min_ms == pytest.approx(s.min())
    assert stats.images_per_s == pytest.approx(1000 / s.mean())


def test_time_predictor_accepts_nhwc_and_rejects_no_repeats():
    predictor = CountingPredictor()
    time_predictor(predictor, np.zeros((2, 2, 2, 3), np.float32), repeats=3, warmup=0)
    assert len(predictor.seen) == 3
    with pytest.raises(ValueError):
        time_predictor(predictor, np.zeros((2, 2, 2, 3), np.float32), repeats=0, warmup=1)


def test_latency_stats_by_hand():
    stats = LatencyStats.from_samples([4.0, 1.0, 3.0, 2.0, 100.0])
    assert stats.median_ms == 3.0
    assert stats.mean_ms == 22.0
    assert stats.p95_ms == pytest.approx(80.8)  # rank 0.95 * 4 = 3.8: 4 + 0.8 * (100 - 4)
    assert stats.std_ms == pytest.approx(np.std([4, 1, 3, 2, 100], ddof=1))
    assert stats.images_per_s == pytest.approx(1000 / 22)
    assert LatencyStats.from_samples([5.0]).std_ms == 0.0


# --- the probe ----------------------------------------------------------------------------------


def test_memory_probe_sees_a_known_allocation():
    result = run_probe("none", None, allocate_mb=200)
    mem = result.memory
    assert 180 <= mem.model_memory_mb <= 220
    assert 180 <= mem.rss_after_load_mb - mem.rss_after_imports_mb <= 220
    assert mem.peak_rss_mb >= mem.rss_after_load_mb >= mem.rss_after_imports_mb > 0
    assert not result.tensorflow_imported
    empty = run_probe("none", None)
    assert empty.memory.model_memory_mb < 20  # nothing loaded, nearly nothing counted


FAKE_RUNTIME = """
import os
from pathlib import Path
import numpy as np

class FakePredictor:
    def __init__(self, runtime, artifact, threads, precision):
        if "broken" in Path(artifact).name or "broken" in Path(artifact).parent.name:
            raise ValueError(f"cannot read {Path(artifact).name}: bad magic")
        self.runtime, self.threads = runtime, threads
        self.precision = precision or ("bf16" if runtime == "openvino" else "fp32")
        self.input_hw, self.num_classes = (16, 16), 3
        mb = float(os.environ.get("FAKERT_MB", "0"))
        self.weights = np.ones(int(mb * 2**20) // 8)
        log = os.environ.get("FAKERT_LOG")
        if log:
            with open(log, "a") as fh:
                fh.write(f"{runtime} {Path(artifact).name} {threads}\\n")

    def run(self, x):
        assert x.shape == (1, 16, 16, 3) and x.dtype == np.float32
        runlog = os.environ.get("FAKERT_RUNLOG")
        if runlog:
            with open(runlog, "a") as fh:
                fh.write(f"{self.runtime}@{self.threads} {int(x[0, 0, 0, 0] * 255)}\\n")
        return np.repeat(x.mean(-1, keepdims=True), 3, -1)

    def predict(self, images):
        maps = [self.run(image[None].astype(np.float32) / 255)[0].argmax(-1) for image in images]
        return np.stack(maps).astype(np.uint8)

def load_predictor(runtime, artifact, threads=1, precision=None):
    return FakePredictor(runtime, artifact, threads, precision)
"""
LOADER = "fakert:load_predictor"


@pytest.fixture
def fake_runtime(tmp_path, monkeypatch):
    """A runtime module importable by probe children, with a call log."""
    child_module(tmp_path, "fakert", FAKE_RUNTIME, monkeypatch)
    log = tmp_path / "calls.log"
    monkeypatch.setenv("FAKERT_LOG", str(log))
    return SimpleNamespace(
        log=log, calls=lambda: log.read_text().splitlines() if log.exists() else []
    )


def test_probe_times_and_measures_in_a_child(fake_runtime, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKERT_MB", "50")
    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    result = run_probe(
        "litert", tmp_path / "m.tflite", 2, images=images, repeats=4, warmup=1, loader=LOADER
    )
    assert len(result.latency.samples_ms) == 4
    assert result.latency.median_ms == pytest.approx(np.median(result.latency.samples_ms))
    assert (result.precision, result.threads, result.input_hw) == ("fp32", 2, [16, 16])
    assert 45 <= result.memory.model_memory_mb <= 60  # the fake's 50 MB of weights
    assert not result.tensorflow_imported
    assert result.load_average_1m is None or result.load_average_1m >= 0
    assert fake_runtime.calls() == ["litert m.tflite 2"]


def test_split_repeats_by_hand():
    assert split_repeats(20, 5) == [4, 4, 4, 4, 4]
    assert split_repeats(7, 3) == [3, 2, 2]
    assert split_repeats(2, 5) == [1, 1, 0, 0, 0]


def test_interleaved_jobs_take_turns_in_rounds(fake_runtime, tmp_path, monkeypatch):
    runlog = tmp_path / "runs.log"
    monkeypatch.setenv("FAKERT_RUNLOG", str(runlog))
    images = np.arange(3, dtype=np.uint8)[:, None, None, None] * np.ones((3, 16, 16, 3), np.uint8)
    jobs = [
        ProbeJob("litert", tmp_path / "a.tflite", 1, repeats=4, warmup=2),
        ProbeJob("openvino", tmp_path / "broken.tflite", 1, repeats=4, warmup=2),
        ProbeJob("keras", tmp_path / "m.keras", 2, repeats=2, warmup=1),
    ]
    blocks = []
    results = measure_interleaved(
        jobs,
        images,
        rounds=2,
        loader=LOADER,
        on_block=lambda job, r: blocks.append((job.runtime, r)),
    )
    lite, broken, keras = results
    assert isinstance(broken, UnetqError) and "broken.tflite" in str(broken)
    assert len(lite.latency.samples_ms) == 4 and len(keras.latency.samples_ms) == 2
    assert blocks == [("litert", 0), ("keras", 0), ("litert", 1), ("keras", 1)]
    # round 1: litert 2 warm-up + 2 timed calls, keras 1 + 1; round 2: one warm-up call each,
    # then the rest; the timed calls of each process continue one cycle through the images
    assert runlog.read_text().split("\n")[:-1] == [
        "litert@1 0", "litert@1 1", "litert@1 0", "litert@1 1",
        "keras@2 0", "keras@2 0",
        "litert@1 2", "litert@1 2", "litert@1 0",
        "keras@2 1", "keras@2 1",
    ]  # fmt: skip
    assert (lite.threads, keras.threads, keras.precision) == (1, 2, "fp32")


def test_probe_errors_end_as_one_line(fake_runtime, tmp_path):
    with pytest.raises(UnetqError, match="cannot read broken.tflite: bad magic") as err:
        run_probe("litert", tmp_path / "broken.tflite", 1, loader=LOADER, infer=1)
    assert "\n" not in str(err.value)
    with pytest.raises(UnetqError, match="bench images are 4x4 but .* expects 16x16"):
        run_probe(
            "litert",
            tmp_path / "m.tflite",
            images=np.zeros((1, 4, 4, 3), np.uint8),
            repeats=1,
            loader=LOADER,
        )


def test_probe_memory_returns_memory_stats(fake_runtime, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKERT_MB", "30")
    images = np.random.default_rng(0).random((3, 1, 16, 16, 3), dtype=np.float32)
    result = run_probe("openvino", tmp_path / "m.tflite", 1, images=images, infer=3, loader=LOADER)
    mem = result.memory
    assert isinstance(mem, MemoryStats)
    assert 25 <= mem.model_memory_mb <= 40


def test_litert_probe_does_not_import_tensorflow():
    """The default loader's imports for litert must stay TensorFlow-free (checked in a child)."""
    code = (
        "import sys, importlib\n"
        "from unetq.bench.probe import RUNTIME_IMPORTS\n"
        "for m in RUNTIME_IMPORTS['litert'] + ('unetq.runtimes',): importlib.import_module(m)\n"
        "print('tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- machine and threads --------------------------------------------------------------------


def test_machine_info_has_the_keys():
    info = machine_info()
    for key in ["cpu_model", "logical_cores", "physical_cores", "isa", "os", "python", "versions"]:
        assert key in info
    for flag in ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx", "f16c"]:
        assert isinstance(info["isa"][flag], bool)
    assert info["logical_cores"] == os.cpu_count()
    assert info["versions"]["numpy"] == np.__version__
    json.dumps(info)  # machine.json must serialise


def test_resolve_threads():
    n = usable_cores()
    assert resolve_threads([1, "all"]) == ([1, n] if n > 1 else [1])
    assert resolve_threads("2,all,2") == ([2, n] if n != 2 else [2])
    with pytest.raises(UnetqError):
        resolve_threads("one")
    with pytest.raises(UnetqError):
        resolve_threads([0])


# --- bench_run and the merge ----------------------------------------------------------------


def make_run(tmp_path, model_id="xception-f32-bn-e50", files=None):
    run_dir = tmp_path / "run"
    d = run_dir / "models" / model_id
    d.mkdir(parents=True)
    for name, size in (
        files
        or {
            "model.keras": 400,
            "tflite-fp32.tflite": 300,
            "tflite-dynamic-int8.tflite": 100,
            "tflite-int16x8.tflite": 120,
            "openvino-fp32.xml": 200,
            "openvino-fp32.bin": 100,
        }
    ).items():
        (d / name).write_bytes(b"x" * size)
    return run_dir


def config(**bench_cfg):
    return StudyConfig.model_validate(
        {
            "data": {"image_size": 16},
            "bench": {
                "repeats": 3,
                "warmup": 1,
                "peaks": "off",
                "throughput_batches": [],
                **bench_cfg,
            },
        }
    )


def test_bench_run_measures_every_variant_runtime_and_thread_count(fake_runtime, tmp_path):
    run_dir = make_run(tmp_path)
    cfg = config(slow_variant_repeats=2, runtimes=["keras", "litert", "openvino"])
    path = bench_run(run_dir, cfg, [1, 3], cfg.bench.repeats, cfg.bench.warmup, loader=LOADER)
    assert path == run_dir / "model_performance_average_results.csv"
    calls = fake_runtime.calls()
    assert len(calls) == 5 * 2  # keras, tflite fp32, dynamic-int8, int16x8, openvino-fp32
    assert {"keras model.keras 1", "keras model.keras 3", "openvino openvino-fp32.xml 3"} <= set(
        calls
    )
    assert (run_dir / ".bench" / "xception-f32-bn-e50" / "openvino-fp32@openvino@t3.json").exists()
    assert json.loads((run_dir / "machine.json").read_text())["logical_cores"] == os.cpu_count()

    df = pd.read_csv(path)
    assert len(df) == 10
    assert list(df.columns[:9]) == [
        "Model", "Epoch", "Filters", "Normalization", "Quantization",
        "Execution_time", "Memory_usage", "IoU_score", "Dice_score",
    ]  # fmt: skip
    assert df["Execution_time"].tolist() == pytest.approx((df["latency_ms_median"] / 1000).tolist())
    assert df["Memory_usage"].tolist() == pytest.approx(df["model_memory_mb"].tolist())
    assert (df["Epoch"] == 50).all() and (df["Normalization"] == "BatchNorm").all()
    by = df.set_index(["variant", "runtime", "threads"])
    assert by.loc[("tflite-int16x8", "litert", 1), "repeats"] == 2  # slow variant
    assert by.loc[("tflite-int16x8", "litert", 1), "warmup"] == 1
    assert by.loc[("tflite-fp32", "litert", 1), "repeats"] == 3
    assert by.loc[("tflite-fp32", "litert", 1), "bench_images"] == 8
    assert by.loc[("tflite-fp32", "litert", 1), "load_average_1m"] >= 0
    assert by.loc[("openvino-fp32", "openvino", 3), "precision"] == "bf16"
    assert by.loc[("openvino-fp32", "openvino", 3), "size_bytes"] == 300  # .xml and .bin
    assert by.loc[("keras", "keras", 3), "speedup_vs_keras"] == pytest.approx(1.0)
    assert by.loc[("keras", "keras", 1), "Quantization"] == "no compression"
    assert by.loc[("tflite-dynamic-int8", "litert", 1), "Quantization"] == "default"
    # keras first, then the registry's order
    assert df["variant"].tolist()[:2] == ["keras", "keras"]

    # resumable: a rerun with the same settings measures nothing again
    bench_run(run_dir, cfg, [1, 3], cfg.bench.repeats, cfg.bench.warmup, loader=LOADER)
    assert len(fake_runtime.calls()) == 10
    # other settings are new measurements
    bench_run(run_dir, cfg, [1], 4, cfg.bench.warmup, loader=LOADER)
    assert len(fake_runtime.calls()) == 10 + 4  # not the slow variant: it keeps its repeats


def test_bench_run_filters_runtimes_and_models(fake_runtime, tmp_path):
    run_dir = make_run(tmp_path)
    (run_dir / "models" / "other-f8-bn-e1").mkdir()
    (run_dir / "models" / "other-f8-bn-e1" / "model.keras").write_bytes(b"x")
    cfg = config(runtimes=["litert"], models=["xception-f32-bn-e50"])
    df = pd.read_csv(bench_run(run_dir, cfg, [1], loader=LOADER))
    assert set(df["runtime"]) == {"litert"}
    assert set(df["model_id"]) == {"xception-f32-bn-e50"}
    assert len(fake_runtime.calls()) == 3


def test_bench_run_keeps_going_then_reports_failures(fake_runtime, tmp_path):
    run_dir = make_run(tmp_path, files={"model.keras": 10, "tflite-fp32.tflite": 10})
    broken = run_dir / "models" / "broken-f8-bn-e1"  # the fake runtime cannot read this one
    broken.mkdir()
    (broken / "model.keras").write_bytes(b"x")
    cfg = config(runtimes=["keras", "litert"])
    with pytest.raises(UnetqError, match=r"1 of 3 measurements failed; first: .*model\.keras"):
        bench_run(run_dir, cfg, [1], loader=LOADER)
    df = pd.read_csv(run_dir / "model_performance_average_results.csv")
    assert len(df) == 2  # the measurements that worked are merged and kept


def image_results(model_id, variant, runtime, fg_iou, n=2):
    return [
        ImageResult(
            model_id=model_id, variant=variant, runtime=runtime, split="test", image=f"i{k}",
            fg_iou=fg_iou, fg_dice=fg_iou, miou=fg_iou, pixel_acc=1.0, agreement=1.0,
            seed_iou=0.3, seed_dice=0.4, background_class=1,
            confusion=[4, 0, 0, 0, 4, 0, 0, 0, 0],
        )
        for k in range(n)
    ]  # fmt: skip


def test_write_average_results_in_either_order(tmp_path):
    run_dir = make_run(tmp_path)
    with pytest.raises(UnetqError, match="nothing to merge"):
        write_average_results(run_dir)
    rows = result_rows(
        image_results("xception-f32-bn-e50", "keras", "keras", 0.9)
        + image_results("xception-f32-bn-e50", "tflite-int16x8", "litert", 0.8, n=1)
    )
    individual = run_dir / "model_performance_individual_results.csv"
    pd.DataFrame(rows).to_csv(individual, index=False)
    # accuracy only: one row per (model, variant, runtime), bench columns empty
    df = pd.read_csv(write_average_results(run_dir))
    assert len(df) == 2 and df["threads"].isna().all()
    assert df["IoU_score"].tolist() == pytest.approx([0.9, 0.8])
    assert df["n_images"].tolist() == [2, 1]
    assert df["size_bytes"].tolist() == [400, 120]  # from the artifacts on disk
    assert df["seed_iou"].tolist() == pytest.approx([0.3, 0.3])
    # then bench parts arrive: one row per thread count, accuracy repeated on each
    for threads, keras_ms, int16_ms in [(1, 30.0, 600.0), (2, 20.0, 400.0)]:
        for variant, runtime, ms in [
            ("keras", "keras", keras_ms),
            ("tflite-int16x8", "litert", int16_ms),
        ]:
            record = dict(
                model_id="xception-f32-bn-e50", variant=variant, runtime=runtime, threads=threads,
                precision="fp32", repeats=3, warmup=1, latency_ms_median=ms, latency_ms_p95=ms,
                latency_ms_mean=ms, latency_ms_std=0.0, images_per_s=1000 / ms, size_bytes=400,
                peak_rss_mb=100.0, model_memory_mb=12.5,
            )  # fmt: skip
            part = RunFolder(run_dir).bench_part("xception-f32-bn-e50", variant, runtime, threads)
            part.parent.mkdir(parents=True, exist_ok=True)
            part.write_text(json.dumps({"params": {}, "record": record}))
    df = pd.read_csv(write_average_results(run_dir)).set_index(["variant", "threads"])
    assert len(df) == 4
    assert df.loc[("keras", 2), "IoU_score"] == pytest.approx(0.9)
    assert df.loc[("tflite-int16x8", 1), "Execution_time"] == pytest.approx(0.6)
    assert df.loc[("tflite-int16x8", 1), "Memory_usage"] == 12.5
    assert df.loc[("tflite-int16x8", 2), "speedup_vs_keras"] == pytest.approx(20 / 400)
    assert df.loc[("keras", 1), "Average_IoU_score"] == pytest.approx(0.9)
    # bench parts of a model no longer in models/ are ignored
    os.rename(run_dir / "models" / "xception-f32-bn-e50", run_dir / "models" / ".old")
    assert "threads" not in pd.read_csv(write_average_results(run_dir)).dropna(axis=1, how="all")


# --- real runtimes on a tiny model (converts with TensorFlow in a child) ----------------------

TINY_MODEL = """
import sys, keras, tensorflow as tf
inp = keras.Input((16, 16, 3), batch_size=1)
x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
out = keras.layers.Conv2D(3, 1, activation="softmax")(x)
model = keras.Model(inp, out)
model.save(sys.argv[1] + "/model.keras")
with open(sys.argv[1] + "/tflite-fp32.tflite", "wb") as fh:
    fh.write(tf.lite.TFLiteConverter.from_keras_model(model).convert())
import openvino as ov
ov.save_model(ov.convert_model(sys.argv[1] + "/tflite-fp32.tflite"), sys.argv[1] + "/ir.xml")
"""


@pytest.mark.slow
def test_real_runtimes_in_probe_children(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run([sys.executable, "-c", TINY_MODEL, str(tmp_path)], check=True, env=env,
                   capture_output=True)  # fmt: skip
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    lite = run_probe("litert", tmp_path / "tflite-fp32.tflite", 1, images=images, repeats=3)
    assert not lite.tensorflow_imported  # LiteRT is measured without TensorFlow's weight
    assert lite.precision == "fp32" and lite.input_hw == [16, 16]
    assert len(lite.latency.samples_ms) == 3
    ov = run_probe("openvino", tmp_path / "ir.xml", 1, images=images, repeats=3)
    assert not ov.tensorflow_imported and ov.precision in ("fp32", "bf16", "fp16")
    keras = run_probe("keras", tmp_path / "model.keras", 1, images=images, repeats=3)
    assert keras.tensorflow_imported and keras.precision == "fp32"
    assert keras.memory.rss_after_imports_mb > lite.memory.rss_after_imports_mb


def test_paired_ratio_by_hand():
    assert paired_ratio([10.0, 20.0, 12.0], [5.0, 5.0, 6.0]) == 2.0  # ratios 2, 4, 2
    assert np.isnan(paired_ratio([10.0, 20.0], [5.0]))  # not the same rounds
    assert np.isnan(paired_ratio(None, [5.0]))
    assert np.isnan(paired_ratio([], []))
    assert paired_ratio([10.0, 20.0, 30.0], [5.0, None, 10.0]) == 2.5  # rounds 1 and 3


def test_bench_run_pairs_rounds_with_keras(fake_runtime, tmp_path):
    files = {"model.keras": 10, "tflite-fp32.tflite": 10, "tflite-int16x8.tflite": 10}
    run_dir = make_run(tmp_path, files=files)
    cfg = config(runtimes=["keras", "litert"], rounds=3, repeats=6, slow_variant_repeats=2)
    df = pd.read_csv(bench_run(run_dir, cfg, [1, 2], loader=LOADER))
    assert "round_medians_ms" not in df and "session" not in df
    parts = {
        p.stem: json.loads(p.read_text())["record"]
        for p in (run_dir / ".bench" / "xception-f32-bn-e50").glob("*.json")
    }
    assert len({r["session"] for r in parts.values()}) == 1
    keras, lite = parts["keras@keras@t1"], parts["tflite-fp32@litert@t1"]
    assert len(keras["round_medians_ms"]) == len(lite["round_medians_ms"]) == 3
    by = df.set_index(["variant", "threads"])
    expected = np.median(np.divide(keras["round_medians_ms"], lite["round_medians_ms"]))
    assert by.loc[("tflite-fp32", 1), "speedup_vs_keras_paired"] == pytest.approx(expected)
    assert by.loc[("keras", 1), "speedup_vs_keras_paired"] == 1.0
    slow = parts["tflite-int16x8@litert@t1"]["round_medians_ms"]  # 2 calls: rounds 1 and 2
    assert slow[2] is None and slow[0] > 0 and slow[1] > 0
    expected = np.median(np.divide(keras["round_medians_ms"][:2], slow[:2]))
    assert by.loc[("tflite-int16x8", 1), "speedup_vs_keras_paired"] == pytest.approx(expected)
    # measured again alone, litert no longer shares rounds with keras: no paired ratio
    bench_run(run_dir, config(runtimes=["litert"], rounds=3, repeats=7), [1], loader=LOADER)
    df = pd.read_csv(run_dir / "model_performance_average_results.csv")
    by = df.set_index(["variant", "threads"])
    assert np.isnan(by.loc[("tflite-fp32", 1), "speedup_vs_keras_paired"])
    assert by.loc[("tflite-fp32", 1), "speedup_vs_keras"] > 0


def test_compare_variants_ratios_are_paired_round_by_round():
    import importlib.util

    path = Path(__file__).parents[1] / "benchmarks" / "compare_variants.py"
    spec = importlib.util.spec_from_file_location("compare_variants", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def record(variant, runtime, rounds):
        return BenchRecord(
            model_id="m", variant=variant, runtime=runtime, threads=1, precision="fp32",
            repeats=6, warmup=1, latency_ms_median=float(np.median(rounds)), latency_ms_p95=1.0,
            latency_ms_mean=1.0, latency_ms_std=0.0, images_per_s=1.0, size_bytes=10**6,
            round_medians_ms=rounds,
        )  # fmt: skip

    # keras 10 ms then 20 ms (a slow spell), int8 4 then 8: 2.5x in both rounds
    rows = module.table_rows(
        [record("keras", "keras", [10.0, 20.0]), record("tflite-int8", "litert", [4.0, 8.0])],
        [1],
    )
    assert [r["x keras 1t"] for r in rows] == ["1.00", "2.50"]


def test_whole_images_are_timed_end_to_end_after_each_block(fake_runtime, tmp_path, monkeypatch):
    """Tile mode: after its block of tile calls, a job times one whole image per round, cut
    into 16 px tiles overlapping by 4 (a 40 x 30 image: 3 x 3 tiles; a 16 x 16 one: 1)."""
    from unetq.bench.session import WholeImages

    runlog = tmp_path / "runs.log"
    monkeypatch.setenv("FAKERT_RUNLOG", str(runlog))
    images = np.zeros((2, 16, 16, 3), np.uint8)
    whole = WholeImages([np.zeros((40, 30, 3), np.uint8), np.zeros((16, 16, 3), np.uint8)], 16, 4)
    jobs = [
        ProbeJob("litert", tmp_path / "a.tflite", 1, repeats=3, warmup=0),
        ProbeJob("litert", tmp_path / "slow.tflite", 1, repeats=3, warmup=0, whole=False),
    ]
    jobs[0].artifact.write_bytes(b"model")
    fast, slow = measure_interleaved(jobs, images, rounds=3, loader=LOADER, whole=whole)
    assert len(fast.whole_image_ms) == 3 and all(ms > 0 for ms in fast.whole_image_ms)
    assert fast.whole_image_tiles == [9, 1, 9]
    assert slow.whole_image_ms == [] and slow.whole_image_tiles == []
    # 3 timed tile calls + 9 + 1 + 9 tile calls of the whole images; the slow job only 3
    assert len(runlog.read_text().splitlines()) == 3 + 19 + 3
    record = bench_record("m", "tflite-int8", jobs[0], fast, 2, memory=False)
    assert record.whole_images_timed == 3
    assert record.whole_image_tiles_mean == pytest.approx(19 / 3)
    assert record.whole_image_ms_mean == pytest.approx(np.mean(fast.whole_image_ms))


def test_whole_images_come_from_dataset_json_in_tile_mode(tmp_path):
    from unetq.bench.run import whole_images
    from unetq.fileio import write_json
    from unetq.runfolder import RunFolder

    run = RunFolder(tmp_path / "run")
    run.root.mkdir()
    assert whole_images(run, 5) is None  # no dataset.json
    write_json(run.dataset, {"mode": "resize"})
    assert whole_images(run, 5) is None
    sizes = [[40, 30], [100, 20]]
    write_json(run.dataset, {"mode": "tile", "tile": 16, "tile_overlap": 4, "whole_sizes": sizes})
    whole = whole_images(run, 5)
    assert [list(i.shape) for i in whole.images] == [[40, 30, 3], [100, 20, 3]]
    assert whole.images[0].dtype == np.uint8
    assert (whole.tile, whole.overlap, whole.tiles(1)) == (16, 4, 8 * 2)
    assert [list(i.shape) for i in whole_images(run, 1).images] == [[40, 30, 3]]  # one a round
