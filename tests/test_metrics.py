"""Metric code against hand-computed masks and scikit-learn as an independent implementation."""

import numpy as np
import pytest
from sklearn import metrics as skm

from unetq.metrics import (
    agreement,
    class_iou,
    confusion_matrix,
    dataset_scores,
    foreground_counts,
    scores,
    seed_scores,
)

# Pets convention: 0 pet, 1 background, 2 border.
TRUTH_3 = np.array([[1, 1, 1], [1, 0, 0], [1, 0, 2]], np.uint8)
PRED_3 = np.array([[1, 1, 0], [1, 0, 2], [1, 1, 2]], np.uint8)


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(TRUTH_3, PRED_3, 3)
    # rows = truth, columns = prediction, counted pixel by pixel
    assert cm.tolist() == [[1, 1, 1], [1, 4, 0], [0, 0, 1]]
    assert cm.dtype == np.int64


def test_scores_3x3_by_hand():
    cm = confusion_matrix(TRUTH_3, PRED_3, 3)
    assert foreground_counts(cm, background_class=1) == (3, 1, 1)
    s = scores(cm, background_class=1)
    assert s["fg_iou"] == pytest.approx(3 / 5)
    assert s["fg_dice"] == pytest.approx(6 / 8)
    # per class: pet 1/4, background 4/6, border 1/2
    assert class_iou(cm) == pytest.approx([1 / 4, 4 / 6, 1 / 2])
    assert s["miou"] == pytest.approx((1 / 4 + 4 / 6 + 1 / 2) / 3)
    assert s["pixel_acc"] == pytest.approx(6 / 9)


def test_scores_4x4_binary_background_0():
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    cm = confusion_matrix(truth, pred, 2)
    assert cm.tolist() == [[11, 1], [1, 3]]
    s = scores(cm, background_class=0)
    assert s["fg_iou"] == pytest.approx(3 / 5)
    assert s["fg_dice"] == pytest.approx(6 / 8)
    assert s["miou"] == pytest.approx((11 / 13 + 3 / 5) / 2)
    assert s["pixel_acc"] == pytest.approx(14 / 16)


def test_foreground_merges_pet_and_border():
    # pet predicted as border is still foreground: fg scores are perfect, mIoU is not
    truth = np.array([[0, 0], [1, 1]])
    pred = np.array([[2, 2], [1, 1]])
    s = scores(confusion_matrix(truth, pred, 3), background_class=1)
    assert s["fg_iou"] == 1.0 and s["fg_dice"] == 1.0
    assert s["miou"] == pytest.approx((0 + 1 + 0) / 3)


def test_empty_foreground_in_both_scores_one():
    bg = np.ones((4, 4), np.uint8)
    s = scores(confusion_matrix(bg, bg, 3), background_class=1)
    assert s == {"fg_iou": 1.0, "fg_dice": 1.0, "miou": 1.0, "pixel_acc": 1.0}


def test_one_side_empty_scores_zero():
    bg = np.ones((4, 4), np.uint8)
    fg = bg.copy()
    fg[0, :2] = 0
    false_alarm = scores(confusion_matrix(bg, fg, 3), background_class=1)
    missed = scores(confusion_matrix(fg, bg, 3), background_class=1)
    for s in (false_alarm, missed):
        assert s["fg_iou"] == 0.0 and s["fg_dice"] == 0.0
        assert s["pixel_acc"] == pytest.approx(14 / 16)


def test_miou_skips_classes_absent_from_truth_and_prediction():
    truth = np.array([[0, 1], [1, 1]])
    pred = np.array([[0, 1], [1, 0]])
    # class 2 never occurs: the mean is over classes 0 and 1 only
    s = scores(confusion_matrix(truth, pred, 3), background_class=1)
    assert s["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_no_pixels_gives_nan():
    s = scores(np.zeros((3, 3), np.int64), background_class=1)
    assert all(np.isnan(v) for v in s.values())


def test_confusion_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 3)
    with pytest.raises(ValueError, match="class values"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="background"):
        scores(np.eye(2, dtype=np.int64), background_class=2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_scikit_learn_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, size=(37, 41))
    pred = np.where(rng.random(truth.shape) < 0.6, truth, rng.integers(0, 3, truth.shape))
    t, p = truth.ravel(), pred.ravel()
    cm = confusion_matrix(truth, pred, 3)
    assert (cm == skm.confusion_matrix(t, p, labels=[0, 1, 2])).all()
    s = scores(cm, background_class=1)
    t_fg, p_fg = (t != 1).astype(int), (p != 1).astype(int)
    assert s["fg_iou"] == pytest.approx(skm.jaccard_score(t_fg, p_fg))
    assert s["fg_dice"] == pytest.approx(skm.f1_score(t_fg, p_fg))
    assert class_iou(cm) == pytest.approx(skm.jaccard_score(t, p, average=None, labels=[0, 1, 2]))
    assert s["miou"] == pytest.approx(skm.jaccard_score(t, p, average="macro"))
    assert s["pixel_acc"] == pytest.approx(skm.accuracy_score(t, p))


def test_dataset_scores_pool_pixels():
    a = confusion_matrix(np.array([[0, 0], [1, 1]]), np.array([[0, 1], [1, 1]]), 2)
    b = confusion_matrix(np.array([[0, 0], [0, 0]]), np.array([[0, 0], [0, 0]]), 2)
    d = dataset_scores(a + b, background_class=1)
    # class 0 is foreground here: tp = 1 + 4, fn = 1, fp = 0
    assert d["fg_iou"] == pytest.approx(5 / 6)
    assert d["pixel_acc"] == pytest.approx(7 / 8)


# The study: trimap / max -> uint8 keeps only the border; prediction = argmax > 1 (border).
TRIMAP_CLASSES = np.array([[1, 1, 1, 1], [1, 2, 2, 1], [1, 2, 0, 1], [1, 1, 1, 1]], np.uint8)


def test_seed_scores_perfect_prediction_scores_border_only():
    # Pet and border both labelled "pet": a perfect foreground, but no border predicted.
    pred = np.where(TRIMAP_CLASSES == 2, 0, TRIMAP_CLASSES)
    fg = scores(confusion_matrix(TRIMAP_CLASSES, pred, 3), background_class=1)
    assert fg["fg_iou"] == 1.0 and fg["fg_dice"] == 1.0
    seed = seed_scores(TRIMAP_CLASSES, pred)
    # 3 border pixels in the truth, none predicted: (0 + 1) / (3 + 1)
    assert seed["seed_iou"] == pytest.approx(1 / 4)
    assert seed["seed_dice"] == pytest.approx(1 / 4)
    # the exact prediction, border included, is what the study rewarded
    assert seed_scores(TRIMAP_CLASSES, TRIMAP_CLASSES) == {"seed_iou": 1.0, "seed_dice": 1.0}


def test_seed_scores_without_border_scores_the_background():
    truth = np.array([[1, 1], [0, 0]], np.uint8)  # trimap 2/1: max 2 -> background survives
    seed = seed_scores(truth, truth)  # a perfect prediction
    assert seed["seed_iou"] == pytest.approx(1 / 3)  # (0 + 1) / (2 + 1)
    assert seed["seed_dice"] == pytest.approx(1 / 3)  # (0 + 1) / (2 + 0 + 1)


def test_seed_scores_accept_probabilities_and_match_the_notebook():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 3, size=(16, 16)).astype(np.uint8)
    probs = rng.random((16, 16, 3)).astype(np.float32)
    seed = seed_scores(truth, probs)
    # the notebook, transcribed: float32 Keras-backend sums with +1 smoothing
    gt = np.squeeze((truth + 1.0).astype(np.float32) / np.max(truth + 1.0)).astype(np.uint8)
    pm = (np.argmax(probs, axis=-1) > 1).astype(np.uint8)
    yt, yp = gt.astype(np.float32).ravel(), pm.astype(np.float32).ravel()
    inter = np.sum(yt * yp)
    union = np.sum(yt) + np.sum(yp) - inter
    assert seed["seed_iou"] == pytest.approx(float((inter + 1) / (union + 1)), rel=1e-6)
    expected_dice = (2 * inter + 1) / (np.sum(yt) + np.sum(yp) + 1)
    assert seed["seed_dice"] == pytest.approx(float(expected_dice), rel=1e-6)
    assert seed == seed_scores(truth, probs.argmax(-1))


def test_seed_truth_is_never_empty_and_scores_are_never_nan():
    # the maximum trimap value always survives "/ max -> uint8": all-pet truth is all ones
    truth = np.zeros((3, 3), np.uint8)
    assert seed_scores(truth, truth)["seed_iou"] == pytest.approx(1 / 10)  # (0 + 1) / (9 + 1)
    # +1 smoothing: no nan even when prediction and truth share nothing
    s = seed_scores(np.ones((3, 3), np.uint8), np.zeros((3, 3), np.uint8))
    assert s == pytest.approx({"seed_iou": 1 / 10, "seed_dice": 1 / 10})


def test_agreement():
    a = np.array([[0, 1], [2, 2]])
    b = np.array([[0, 1], [1, 2]])
    assert agreement(a, b) == 0.75
    assert agreement(a, a) == 1.0
    with pytest.raises(ValueError):
        agreement(a, b[:1])


@pytest.mark.parametrize("num_classes", [2, 3, 16, 17])
def test_uint8_and_wide_integer_inputs_count_the_same(num_classes):
    rng = np.random.default_rng(num_classes)
    truth = rng.integers(0, num_classes, size=(33, 35)).astype(np.uint8)
    pred = rng.integers(0, num_classes, size=(33, 35)).astype(np.uint8)
    fast = confusion_matrix(truth, pred, num_classes)
    wide = confusion_matrix(truth.astype(np.int64), pred.astype(np.int32), num_classes)
    labels = list(range(num_classes))
    assert (fast == wide).all()
    assert (fast == skm.confusion_matrix(truth.ravel(), pred.ravel(), labels=labels)).all()
