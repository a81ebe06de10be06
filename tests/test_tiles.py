"""Tile mode: tile offsets, stitching, random crops, the native-size cache, tiled prediction."""

import numpy as np
import pytest

from unetq.config import ConfigError, build_config
from unetq.data import load_inputs, load_native, open_dataset
from unetq.data.cache import INPUT_TILES_PER_IMAGE
from unetq.data.tiles import (
    NativeSplit,
    grid_tiles,
    image_tiles,
    mean_tiles_per_image,
    random_tiles,
    stitch,
    tile_boxes,
    tile_starts,
)
from unetq.runtimes import TiledPredictor


def test_tile_starts_step_by_tile_minus_overlap_and_end_flush():
    assert tile_starts(256, 128, 32) == [0, 96, 128]
    assert tile_starts(512, 128, 32) == [0, 96, 192, 288, 384]
    assert tile_starts(128, 128, 32) == [0]
    assert tile_starts(60, 128, 32) == [0]  # smaller than a tile: padded, one tile
    assert tile_starts(200, 100, 0) == [0, 100]
    assert tile_boxes(200, 300, 100, 0) == [(0, 0), (0, 100), (0, 200), (100, 0)] + [
        (100, 100),
        (100, 200),
    ]


@pytest.mark.parametrize("shape", [(256, 256), (565, 584), (100, 300), (50, 60), (129, 400)])
def test_cutting_into_tiles_and_stitching_gives_the_image_back(shape):
    image = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    tiles, boxes = image_tiles(image, 128, 32)
    assert tiles.shape == (len(boxes), 128, 128, 3)
    assert np.array_equal(stitch(tiles, *shape, 128, 32), image)


def test_each_pixel_comes_from_the_tile_whose_centre_region_owns_it():
    # one axis of 256 px, tiles at 0, 96, 128: the overlaps [96, 128) and [128, 224) are cut
    # at their middles, 112 and 176
    tile_maps = np.stack([np.full((128, 128), k, np.uint8) for k in range(9)])
    out = stitch(tile_maps, 256, 256, 128, 32)
    row = out[0]
    assert (row[:112] == 0).all() and (row[112:176] == 1).all() and (row[176:] == 2).all()
    column = out[:, 0]
    assert (column[:112] == 0).all() and (column[112:176] == 3).all()
    assert (column[176:] == 6).all()


def test_stitch_refuses_a_wrong_number_of_tiles():
    with pytest.raises(ValueError, match="tiles"):
        stitch(np.zeros((4, 128, 128), np.uint8), 256, 256, 128, 32)


def test_mean_tiles_per_image_counts_padded_small_images_as_one():
    assert mean_tiles_per_image([(256, 256), (60, 50)], 128, 32) == (9 + 1) / 2


def native_split(sizes, seed=0):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    masks = [(img[..., 0] > 127).astype(np.uint8) for img in images]
    return NativeSplit(names=[f"im{i}" for i in range(len(sizes))], images=images, masks=masks)


def test_random_tiles_are_seeded_crops_with_their_masks():
    split = native_split([(100, 150), (40, 40)])
    a = random_tiles(split, 64, 3, np.random.default_rng(5))
    b = random_tiles(split, 64, 3, np.random.default_rng(5))
    assert a.images.shape == (6, 64, 64, 3) and a.masks.shape == (6, 64, 64)
    assert np.array_equal(a.images, b.images) and a.names == b.names
    # masks were cut at the same place as their images
    assert np.array_equal(a.masks, (a.images[..., 0] > 127).astype(np.uint8))
    top, left = map(int, a.names[0].split("@")[1].split(","))
    assert np.array_equal(a.images[0], split.images[0][top : top + 64, left : left + 64])


def test_grid_tiles_are_the_prediction_tiles_in_order():
    split = native_split([(100, 150), (64, 64)])
    tiles = grid_tiles(split, 64, 16)
    assert len(tiles.names) == 2 * 3 + 1
    assert tiles.names[0] == "im0@0,0" and tiles.names[-1] == "im1@0,0"
    assert len(grid_tiles(split, 64, 16, limit=4).names) == 4


class PixelRule:
    """A stand-in model that segments each pixel by its own value (class = red > 127), so a
    stitched map must equal the rule applied to the whole image, whatever the tiling."""

    runtime = "test"
    num_classes = 2
    artifact = "pixel-rule"

    def __init__(self, size):
        self.input_hw = (size, size)
        self.calls = 0

    def predict(self, tiles):
        assert tiles.shape[1:] == (*self.input_hw, 3)
        self.calls += len(tiles)
        return (tiles[..., 0] > 127).astype(np.uint8)


def test_a_tiled_predictor_segments_whole_images_at_their_own_size():
    split = native_split([(565, 584), (90, 70)])
    inner = PixelRule(128)
    maps = TiledPredictor(inner, 32).predict(split.images)
    assert [m.shape for m in maps] == [(565, 584), (90, 70)]
    for image, got in zip(split.images, maps, strict=True):
        assert np.array_equal(got, (image[..., 0] > 127).astype(np.uint8))
    assert inner.calls == 6 * 6 + 1


def test_a_tiled_predictor_refuses_an_overlap_as_large_as_the_tile():
    with pytest.raises(Exception, match="overlap"):
        TiledPredictor(PixelRule(64), 64)


def test_tile_overlap_must_be_smaller_than_the_tile():
    with pytest.raises(ConfigError, match="tile_overlap"):
        build_config("smoke", sets=["data.mode=tile", "data.image_size=32", "data.tile_overlap=32"])


def write_folder(root, sizes, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (h, w) in enumerate(sizes):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"{i:02d}.png")
        Image.fromarray(np.where(image[..., 0] > 127, 255, 0).astype(np.uint8)).save(
            root / "masks" / f"{i:02d}.png"
        )
    return root


def test_native_splits_are_cached_and_read_back_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("UNETQ_CACHE_DIR", str(tmp_path / "cache"))
    sizes = [(40, 50), (70, 30), (33, 33), (64, 80), (50, 50), (45, 61), (36, 90), (80, 40)]
    root = write_folder(tmp_path / "data", sizes)
    cfg = build_config(
        "smoke",
        sets=["data.source=auto", "data.format=folder", "data.mode=tile", "data.image_size=32"]
        + ["data.tile_overlap=8"],
        values={"data.data_dir": root},
    )
    index = open_dataset(cfg.data)
    first = load_native(index, "train")
    assert list((tmp_path / "cache" / "arrays").glob("folder-train-native-*.npz"))
    again = load_native(index, "train")
    assert again.names == first.names
    for a, b in zip(first.images + first.masks, again.images + again.masks, strict=True):
        assert np.array_equal(a, b)
    shapes = {tuple(m.shape) for m in first.masks}
    assert shapes <= set(sizes) and len(shapes) > 1
    # the compression step's tiles: one of every image first
    inputs = load_inputs(index, "train", cfg.data)
    n = len(first.names)
    assert len(inputs.names) == n * INPUT_TILES_PER_IMAGE
    assert [name.split("@")[0] for name in inputs.names[:n]] == first.names


def test_an_epochs_crops_depend_on_its_seed_alone():
    from unetq.train import epoch_data

    split = native_split([(100, 150), (80, 90), (64, 64)])
    cfg = build_config("smoke", sets=["train.tiles_per_image=3"]).train
    first = epoch_data(split, (42, 3), cfg, 32)
    again = epoch_data(split, (42, 3), cfg, 32)  # e.g. the same epoch redone after a resume
    other = epoch_data(split, (42, 4), cfg, 32)
    assert first.images.shape == (9, 32, 32, 3)
    assert first.names == again.names and np.array_equal(first.images, again.images)
    assert first.names != other.names


def test_the_shipped_tile_presets_are_tile_mode_folder_studies():
    for name in ("nuclei", "membrane"):
        cfg = build_config(name)
        assert (cfg.data.mode, cfg.data.format) == ("tile", "folder")
        assert cfg.train.loss == "ce_dice"
        assert cfg.data.tile_overlap < cfg.data.image_size


def test_compressing_a_run_folders_model_takes_that_runs_tile_settings(tmp_path):
    from unetq.compress import data_config
    from unetq.config import to_toml
    from unetq.runfolder import RunFolder

    run = RunFolder(tmp_path / "run")
    run.model_dir("m").mkdir(parents=True)
    run.config.write_text(to_toml(build_config("nuclei")))
    data = data_config(tmp_path / "d", "folder", run.model_file("m"))
    assert (data.mode, data.tile_overlap, data.data_dir) == ("tile", 32, tmp_path / "d")
    assert data_config(tmp_path / "d", "folder", tmp_path / "model.keras").mode == "resize"
