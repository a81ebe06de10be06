"""`unetq benchmark --model`: a user's own model through every variant, as the installed command
runs it; bad models and data end in one line with nothing written."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from unetq.records import ModelInfo
from unetq.usermodel import inspect_model, model_id_for

keras = pytest.importorskip("keras")

UNETQ = Path(sys.executable).parent / "unetq"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from outside_model import mobilenet_unet  # noqa: E402


def unetq(*args, env=None, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(UNETQ), *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout
    )


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return line


def segmenter(classes: int = 3, size: int | None = 32, first=None) -> "keras.Model":
    inp = keras.Input((size, size, 3))
    x = first(inp) if first is not None else inp
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    return keras.Model(inp, keras.layers.Conv2D(classes, 1)(x))  # logits


def binary_folder(root: Path, n: int = 12, size: int = 40) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"im{i}.png")
        Image.fromarray(((image[..., 0] > 127) * 255).astype(np.uint8)).save(
            root / "masks" / f"im{i}.png"
        )
    return root


# --- what the model says about itself ----------------------------------------------------------


def test_inspect_finds_size_range_and_output(tmp_path):
    path = tmp_path / "plain.keras"
    segmenter().save(path)
    _, info = inspect_model(path)
    assert isinstance(info, ModelInfo)
    assert (info.input_hw, info.num_classes, info.output) == ((32, 32), 3, "logits")
    assert info.input_range == (0.0, 1.0) and info.range_from.startswith("default")
    assert not info.size_fixed_by_unetq

    scaled = tmp_path / "scaled.keras"
    segmenter(size=None, first=keras.layers.Rescaling(1 / 127.5, offset=-1)).save(scaled)
    with pytest.raises(Exception, match="not fixed; pass --size"):
        inspect_model(scaled)
    _, info = inspect_model(scaled, size=48)
    assert info.input_hw == (48, 48) and info.size_fixed_by_unetq
    assert info.input_range == (0.0, 255.0) and "Rescaling layer" in info.range_from
    _, info = inspect_model(scaled, "-1,1", size=48)  # the flag wins, and says so
    assert info.input_range == (-1.0, 1.0) and info.range_from == "--input-range"
    assert model_id_for(Path("runs/q/models/xception-f8-bn-e8/model.keras")) == "xception-f8-bn-e8"
    assert model_id_for(Path("my model (v2).keras")) == "my_model__v2_"


def test_adopted_model_maps_unit_pixels_onto_the_models_range(tmp_path):
    from unetq.usermodel import adopt

    keras.utils.set_random_seed(0)
    model = segmenter(size=None)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded, info = inspect_model(path, "-1,1", size=32)
    adopt(loaded, info, tmp_path / "run" / "model.keras", tmp_path / "run" / "model.json")
    adopted = keras.saving.load_model(tmp_path / "run" / "model.keras")
    x = np.random.default_rng(1).random((2, 32, 32, 3), dtype=np.float32)
    np.testing.assert_allclose(adopted(x), model(2 * x - 1), atol=1e-5)
    assert tuple(adopted.inputs[0].shape) == (None, 32, 32, 3)
    assert json.loads((tmp_path / "run" / "model.json").read_text())["input_range"] == [-1, 1]


# --- bad input: one line, exit 2, nothing written ------------------------------------------------


def test_a_corrupt_model_ends_in_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    line = one_error_line(unetq("benchmark", "--model", corrupt, "--out", out))
    assert line.startswith("error: ") and str(corrupt) in line
    assert not out.exists()


@pytest.mark.slow
def test_models_of_other_shapes_end_in_one_line_and_write_nothing(tmp_path):
    out = tmp_path / "out"
    dense = tmp_path / "dense.keras"
    inp = keras.Input((10,))
    keras.Model(inp, keras.layers.Dense(3)(inp)).save(dense)
    line = one_error_line(unetq("benchmark", "--model", dense, "--out", out))
    assert "is not RGB images [N, H, W, 3]" in line

    classifier = tmp_path / "classifier.keras"
    inp = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inp))
    keras.Model(inp, keras.layers.Dense(5, activation="softmax")(x)).save(classifier)
    line = one_error_line(unetq("benchmark", "--model", classifier, "--out", out))
    assert "is not per-pixel classes" in line

    three = tmp_path / "three.keras"
    segmenter(classes=3).save(three)
    data = binary_folder(tmp_path / "binary")
    args = ("benchmark", "--model", three, "--data-dir", data, "--out", out)
    line = one_error_line(unetq(*args))
    assert "has 2 classes" in line and "the model predicts 3" in line
    assert not out.exists()


# --- whole runs -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_study_model_gives_the_studys_accuracy(smoke_run, cache_env, tmp_path):
    model_id = "xception-f4-bn-e3"
    model = smoke_run / "models" / model_id / "model.keras"
    root = json.loads((smoke_run / "dataset.json").read_text())["root"]
    out = tmp_path / "bench"
    proc = unetq(
        "benchmark", "--model", model, "--data-dir", root, "--format", "folder",
        "--preset", "smoke", "--out", out, env=cache_env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"model {model_id}: 3 classes (probabilities), input 32x32" in proc.stdout
    study = pd.read_csv(smoke_run / "model_performance_average_results.csv")
    mine = pd.read_csv(out / "model_performance_average_results.csv")
    assert list(mine.columns[:9]) == list(study.columns[:9])  # the study's columns first
    keys = ["variant", "runtime", "threads"]
    study = study[study.model_id == model_id].set_index(keys)
    mine = mine.set_index(keys)
    assert set(mine.index) == set(study.index)
    for col in ("fg_iou", "fg_dice", "miou", "pixel_acc", "agreement"):
        np.testing.assert_allclose(mine[col], study.loc[mine.index, col], atol=1e-6, err_msg=col)
    assert (out / "report" / "index.html").exists()
    rerun = unetq(
        "benchmark", "--model", model, "--data-dir", root, "--format", "folder",
        "--preset", "smoke", "--out", out, env=cache_env,
    )  # fmt: skip
    assert "evaluate: nothing to redo" in rerun.stdout and "bench: nothing to redo" in rerun.stdout


@pytest.mark.slow
def test_a_model_built_outside_unetq_goes_through_the_variants(tmp_path, cache_env):
    from unetq.data.synthetic import write_synthetic

    size = 64
    data = write_synthetic(tmp_path / "shapes", count=48, size=size, seed=3)
    images = np.stack([np.asarray(keras.utils.load_img(p)) for p in sorted(data.glob("images/*"))])
    masks = np.stack([np.asarray(keras.utils.load_img(p, color_mode="grayscale"))[..., None]
                      for p in sorted(data.glob("masks/*"))])  # fmt: skip
    keras.utils.set_random_seed(1)
    model = mobilenet_unet(size)  # benchmarks/outside_model.py
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(3e-3), loss)
    model.fit(images / 127.5 - 1, masks, epochs=12, batch_size=8, verbose=0)
    path = tmp_path / "mobilenet_unet.keras"
    model.save(path)
    out = tmp_path / "bench"
    variants = "keras,tflite-fp32,tflite-int8,openvino-fp32,openvino-int8"
    proc = unetq(
        "benchmark", "--model", path, "--data-dir", data, "--input-range", "-1,1",
        "--variants", variants, "--threads", "1", "--preset", "smoke", "--out", out,
        env=cache_env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "models" / "mobilenet_unet" / "model.json").read_text())
    assert info["input_range"] == [-1, 1] and info["output"] == "logits"
    average = pd.read_csv(out / "model_performance_average_results.csv").set_index("variant")
    assert set(average.index) == set(variants.split(","))
    assert average.loc["keras", "fg_iou"] > 0.1  # it learned something to compare
    assert abs(average.loc["keras", "fg_iou"] - average.loc["tflite-fp32", "fg_iou"]) < 0.005
    assert abs(average.loc["keras", "fg_iou"] - average.loc["openvino-fp32", "fg_iou"]) < 0.01
    compressed = pd.read_csv(out / "compressed_models_info.csv")
    assert compressed["error"].isna().all()


@pytest.mark.slow
def test_without_data_it_measures_speed_and_says_accuracy_needs_data(tmp_path, cache_env):
    path = tmp_path / "seg.keras"
    segmenter().save(path)
    out = tmp_path / "bench"
    proc = unetq(
        "benchmark", "--model", path, "--variants", "keras,tflite-fp32,tflite-int8-mixed",
        "--threads", "1", "--preset", "smoke", "--out", out, env=cache_env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "accuracy needs labelled images" in proc.stdout
    assert "not made without a dataset: tflite-int8-mixed" in proc.stdout
    average = pd.read_csv(out / "model_performance_average_results.csv")
    assert set(average.variant) == {"keras", "tflite-fp32"}
    assert average["latency_ms_median"].notna().all()
    html = (out / "report" / "index.html").read_text()
    assert "accuracy not measured (no dataset)" in html
