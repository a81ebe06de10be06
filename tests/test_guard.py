"""The guards' validation (unetq.convert.Validation): whole images scored by tiles as the study
scores them, and a budget that must hold at the pessimistic end of the drop's interval."""

from __future__ import annotations

import numpy as np
import pytest

from unetq.compress import guard_validation
from unetq.config import CompressConfig
from unetq.convert import Validation
from unetq.data.tiles import NativeSplit
from unetq.metrics import image_fg_iou


def bright(batch: np.ndarray) -> np.ndarray:
    """A per-pixel 'model': class 1 where the red channel is above half, as probabilities."""
    fg = (batch[..., 0] > 0.5).astype(np.float32)
    return np.stack([1 - fg, fg], -1)


def test_tile_mode_scores_whole_images_stitched_from_tiles():
    rng = np.random.default_rng(0)
    images = [rng.uniform(0, 1, (37, 50, 3)).astype(np.float32) for _ in range(2)]
    masks = [(image[..., 0] > 0.5).astype(np.uint8) for image in images]
    masks[1][:5] = 0  # a few wrong pixels in the truth: the score is below 1
    tiled = Validation(images, masks, 2, 0, tile=16, overlap=4)
    calls = []

    def predict(batch):
        assert batch.shape == (1, 16, 16, 3)  # the model only ever sees tiles
        calls.append(1)
        return bright(batch)

    maps = [tiled.segment(image, predict) for image in images]
    for image, predicted in zip(images, maps, strict=True):
        assert predicted.shape == image.shape[:2]
        np.testing.assert_array_equal(predicted, bright(image[None])[0].argmax(-1))
    scores = tiled.scores(predict)
    assert scores[0] == 1.0
    assert scores[1] == pytest.approx(image_fg_iou(masks[1], maps[1], 2, 0)) and scores[1] < 1
    assert len(calls) > 2 * 6  # several tiles per image, not one call per image


def test_the_budget_holds_at_the_pessimistic_end_of_the_drop():
    v = Validation(np.zeros((4, 2, 2, 3)), np.zeros((4, 2, 2), np.uint8), 2, 0)
    float_scores = np.array([0.8, 0.8, 0.8, 0.8])
    scores = np.array([0.8, 0.8, 0.8, 0.76])  # one image of four loses 4 points
    mean, high = v.drop(float_scores, scores)
    assert mean == pytest.approx(0.01)
    # bootstrap means are 0.01 * (times the bad image is drawn); 3 or more draws of 4 has
    # probability 0.051 > 2.5%, 4 draws 0.004: the high end is 0.03
    assert high == pytest.approx(0.03)
    verdict = v.verdict(float_scores, scores, budget=0.015)
    assert verdict["predicted_drop"] == pytest.approx(0.01)
    assert not verdict["budget_met"]  # the mean holds the budget, its interval does not
    assert v.verdict(float_scores, scores, budget=0.03)["budget_met"]


def test_images_without_a_score_are_left_out_and_one_image_has_no_interval():
    v = Validation(np.zeros((3, 2, 2, 3)), np.zeros((3, 2, 2), np.uint8), 2, 0)
    mean, high = v.drop(np.array([0.9, np.nan, 0.7]), np.array([0.8, 0.5, np.nan]))
    assert mean == pytest.approx(0.1) and high == pytest.approx(0.1)


def test_guard_validation_keeps_whole_images_in_tile_mode():
    split = NativeSplit(
        names=["a", "b", "c"],
        images=[np.full((40, 30 + i, 3), 255, np.uint8) for i in range(3)],
        masks=[np.ones((40, 30 + i), np.uint8) for i in range(3)],
    )
    v = guard_validation(split, CompressConfig(guard_images=2), 2, 0, tiles=(16, 4))
    assert (v.tile, v.overlap, len(v.images)) == (16, 4, 2)
    assert [image.shape for image in v.images] == [(40, 30, 3), (40, 31, 3)]
    assert v.images[0].dtype == np.float32 and v.images[0].max() == 1.0
