"""Segmentation metrics from confusion matrices (numpy only).

Conventions
- Class maps are integer arrays of equal shape; a confusion matrix `cm` is int64 [C, C] with
  rows = true class and columns = predicted class.
- Foreground = every class except the dataset's background class, collapsed to one binary label
  (for pets: pet and border against background).
- Empty cases: when neither truth nor prediction has a foreground pixel, fg IoU and fg Dice are
  1.0 (the prediction is exactly right); when exactly one of them is empty they are 0.0.
- `miou` is the mean IoU over the classes present in the truth or in the prediction (a class
  absent from both has no defined IoU and is left out rather than counted as 1 or 0).
- A confusion matrix with no pixels at all gives nan for every score.
"""

from __future__ import annotations

import numpy as np

SCORE_KEYS = ("fg_iou", "fg_dice", "miou", "pixel_acc")


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts int64 [C, C]: cm[t, p] = pixels of true class t predicted as class p."""
    truth = np.asarray(truth)
    pred = np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"truth shape {truth.shape} differs from prediction shape {pred.shape}")
    t, p = truth.reshape(-1), pred.reshape(-1)
    if t.size:
        lo = min(int(t.min()), int(p.min()))
        hi = max(int(t.max()), int(p.max()))
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"class values must lie in [0, {num_classes - 1}], found {lo}..{hi}")
    if t.dtype == p.dtype == np.uint8 and num_classes * num_classes <= 256:
        index = t * np.uint8(num_classes) + p  # fits in uint8: about 4x faster than int64
    else:
        index = t.astype(np.int64) * num_classes + p.astype(np.int64)
    counts = np.bincount(index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64, copy=False)


def foreground_counts(cm: np.ndarray, background_class: int) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of foreground vs background."""
    cm = np.asarray(cm, dtype=np.int64)
    num_classes = cm.shape[0]
    if not 0 <= background_class < num_classes:
        raise ValueError(f"background class {background_class} outside 0..{num_classes - 1}")
    fg = np.ones(num_classes, dtype=bool)
    fg[background_class] = False
    tp = int(cm[np.ix_(fg, fg)].sum())
    fp = int(cm[background_class, fg].sum())
    fn = int(cm[fg, background_class].sum())
    return tp, fp, fn


def class_iou(cm: np.ndarray) -> np.ndarray:
    """IoU per class (float64 [C]); nan for a class absent from both truth and prediction."""
    cm = np.asarray(cm, dtype=np.int64)
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(axis=0) + cm.sum(axis=1) - np.diag(cm)
    out = np.full(cm.shape[0], np.nan)
    present = union > 0
    out[present] = inter[present] / union[present]
    return out


def scores(cm: np.ndarray, background_class: int) -> dict[str, float]:
    """fg_iou, fg_dice, miou and pixel_acc of one confusion matrix (see module docstring)."""
    cm = np.asarray(cm, dtype=np.int64)
    total = int(cm.sum())
    if total == 0:
        return dict.fromkeys(SCORE_KEYS, float("nan"))
    tp, fp, fn = foreground_counts(cm, background_class)
    if tp + fp + fn == 0:  # no foreground in truth or prediction: exactly right
        fg_iou = fg_dice = 1.0
    else:
        fg_iou = tp / (tp + fp + fn)
        fg_dice = 2 * tp / (2 * tp + fp + fn)
    ious = class_iou(cm)
    return {
        "fg_iou": float(fg_iou),
        "fg_dice": float(fg_dice),
        "miou": float(np.nanmean(ious)),
        "pixel_acc": float(np.trace(cm) / total),
    }


def dataset_scores(cm_sum: np.ndarray, background_class: int) -> dict[str, float]:
    """Dataset-level scores from the confusion matrices summed over images.

    Unlike the mean of per-image scores, every pixel weighs the same here, so large objects
    count more and images with a tiny foreground cannot dominate.
    """
    return scores(cm_sum, background_class)


def seed_scores(truth_classes: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """IoU and Dice exactly as the original study computed them (kept to show its flaw).

    The study read the raw trimap (values 1/2/3 = class + 1), divided it by its maximum and cast
    to uint8, so only the maximum value survives as 1: the border class (3) whenever the image has
    a border pixel. Its prediction was `argmax > 1`, again the border class. Scores were
    (inter + 1) / (union + 1) and (2 inter + 1) / (|t| + |p| + 1) in float32 (its Keras-backend
    functions add 1 to numerator and denominator), so they are never nan; the truth is never
    empty anyway, since the maximum value always survives the division.

    `pred` is either class maps [..., H, W] (same shape as the truth) or class probabilities
    [..., H, W, C] (argmax is taken over the last axis).
    """
    truth_classes = np.asarray(truth_classes)
    pred = np.asarray(pred)
    if pred.ndim == truth_classes.ndim + 1:
        pred = np.argmax(pred, axis=-1)
    if pred.shape != truth_classes.shape:
        raise ValueError(f"truth shape {truth_classes.shape} differs from prediction {pred.shape}")
    raw = truth_classes.astype(np.float32) + 1.0  # back to trimap values 1/2/3
    y_true = (raw / np.max(raw)).astype(np.uint8).astype(np.float32).reshape(-1)
    y_pred = (pred > 1).astype(np.uint8).astype(np.float32).reshape(-1)
    inter = np.float32(np.sum(y_true * y_pred, dtype=np.float32))
    sum_t = np.float32(np.sum(y_true, dtype=np.float32))
    sum_p = np.float32(np.sum(y_pred, dtype=np.float32))
    one = np.float32(1.0)
    union = sum_t + sum_p - inter
    iou = (inter + one) / (union + one)
    dice = (np.float32(2.0) * inter + one) / (sum_t + sum_p + one)
    return {"seed_iou": float(iou), "seed_dice": float(dice)}


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pixels whose class is equal in both class maps (nan for empty maps)."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"class maps differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        return float("nan")
    return float(np.count_nonzero(a == b) / a.size)


def image_fg_iou(truth: np.ndarray, pred: np.ndarray, num_classes: int, background: int) -> float:
    """Foreground IoU of one image's class maps [H, W]."""
    return scores(confusion_matrix(truth, pred, num_classes), background)["fg_iou"]


def mean_fg_iou(truth: np.ndarray, pred: np.ndarray, num_classes: int, background: int) -> float:
    """Foreground IoU per image of class maps [N, H, W], averaged over the images."""
    per_image = [
        image_fg_iou(t, p, num_classes, background) for t, p in zip(truth, pred, strict=True)
    ]
    return float(np.nanmean(per_image)) if per_image else float("nan")


def bootstrap_ci(
    diffs: np.ndarray, seed: int = 0, n: int = 5000, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of paired differences (NaN below 2 pairs)."""
    diffs = np.asarray(diffs, float)
    diffs = diffs[~np.isnan(diffs)]
    if len(diffs) < 2:
        return (np.nan, np.nan)
    rng = np.random.default_rng(seed)
    means = rng.choice(diffs, size=(n, len(diffs)), replace=True).mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))
