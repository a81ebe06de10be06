"""A tile-mode study on a generated folder of 565 x 584 TIFF images (colour and grey) with GIF
masks: trained on crops, scored, benchmarked and predicted at each image's own size."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from runhelp import run_cli

HEIGHT, WIDTH = 584, 565  # the DRIVE retina images' size, not a multiple of the tile
TILE, OVERLAP = 64, 16


def tiff_gif_folder(root, n=10):
    """Bright discs on noise; masks as GIF (palette) with 0 = background, 255 = disc."""
    rng = np.random.default_rng(3)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    for i in range(n):
        mask = np.zeros((HEIGHT, WIDTH), bool)
        for _ in range(12):
            cy, cx, r = rng.integers(0, HEIGHT), rng.integers(0, WIDTH), rng.integers(10, 40)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        image = rng.normal(70, 25, (HEIGHT, WIDTH, 3)) + 110 * mask[..., None]
        image = np.clip(image, 0, 255).astype(np.uint8)
        if i % 2:  # grey images (as electron microscopy has) beside colour ones
            image = image[..., 0]
        Image.fromarray(image).save(root / "images" / f"{i:02d}_test.tif")
        gif = Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).convert("P")
        gif.save(root / "masks" / f"{i:02d}_test.gif")
    return root


def dataset_split(out, split: str) -> int:
    return json.loads((out / "dataset.json").read_text())["splits"][split]


@pytest.fixture(scope="module")
def tile_run(tmp_path_factory, cache_env):
    root = tmp_path_factory.mktemp("tiles")
    data = tiff_gif_folder(root / "data")
    out = root / "run"
    args = ["study", "--preset", "smoke", "--format", "folder", "--data-dir", data, "--out", out]
    sets = [
        "data.source=auto",
        "data.mode=tile",
        f"data.image_size={TILE}",
        f"data.tile_overlap={OVERLAP}",
        "train.batchnorm=[true]",
        "train.epochs=[2]",
        "train.tiles_per_image=4",
        "train.loss=ce_dice",
        'compress.variants=["keras", "tflite-fp32", "tflite-int8", "openvino-int8-guarded"]',
        "robustness.max_images=1",
    ]
    run_cli([*args, *[x for s in sets for x in ("--set", s)]], env=cache_env)
    return out, data


def test_a_tile_study_scores_whole_images_at_their_own_size(tile_run):
    out, _ = tile_run
    individual = pd.read_csv(out / "model_performance_individual_results.csv")
    cm = individual.filter(regex=r"^cm_\d+_\d+$").sum(axis=1)
    assert len(individual) and (cm == HEIGHT * WIDTH).all()  # every native pixel, once
    assert set(individual["variant"]) == {
        "keras",
        "tflite-fp32",
        "tflite-int8",
        "openvino-int8-guarded",
    }
    # the guard scored what the study scores: whole validation images, stitched from tiles
    for model_dir in (out / "models").glob("*/"):
        if model_dir.name.startswith("."):
            continue  # unetq's own working folders
        guard = json.loads((model_dir / "openvino-int8-guarded.xml.json").read_text())["details"]
        assert guard["validation_tiled"] and guard["validation_images"] == dataset_split(out, "val")
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["mode"] == "tile" and dataset["tile"] == TILE
    assert dataset["tiles_per_image"] == 12 * 12  # 584 and 565 px: 12 tiles each way
    average = pd.read_csv(out / "model_performance_average_results.csv")
    timed = average.dropna(subset=["latency_ms_median"])
    assert np.allclose(timed["latency_ms_per_image"], timed["latency_ms_median"] * 144)
    # whole test images timed end to end too: cut into their 144 tiles, segmented, stitched
    assert dataset["whole_sizes"] and all(s == [HEIGHT, WIDTH] for s in dataset["whole_sizes"])
    assert (timed["whole_image_tiles_mean"] == 144).all() and (
        timed["whole_images_timed"] > 0
    ).all()
    assert (timed["whole_image_ms_mean"] > timed["latency_ms_min"] * 144 * 0.5).all()
    robustness = pd.read_csv(out / "robustness.csv")
    assert set(robustness["condition"]) >= {"clean", "gaussian_noise", "occlusion"}
    report = (out / "report" / "index.html").read_text()
    assert "Tile mode" in report and "mask value 255" in report


def test_a_rerun_of_the_tile_study_recomputes_nothing(tile_run, cache_env):
    out, data = tile_run
    before = (out / "model_performance_average_results.csv").read_bytes()
    proc = run_cli(["evaluate", "--run", out], env=cache_env)
    assert "0 computed" in proc.stdout + proc.stderr or "up to date" in proc.stdout + proc.stderr
    assert (out / "model_performance_average_results.csv").read_bytes() == before


@pytest.mark.parametrize("artifact", ["model.keras", "tflite-int8.tflite"])
def test_predict_writes_masks_at_each_images_own_size(tile_run, cache_env, tmp_path, artifact):
    out, data = tile_run
    model_dir = next(p for p in (out / "models").iterdir() if not p.name.startswith("."))
    masks = tmp_path / "masks"
    proc = run_cli(
        ["predict", "--model", model_dir / artifact, "--images", data / "images", "--out", masks],
        env=cache_env,
    )
    assert "tiles" in proc.stdout
    written = sorted(masks.glob("*_mask.png"))
    assert len(written) == 10
    for path in written:
        assert np.asarray(Image.open(path)).shape == (HEIGHT, WIDTH)
