"""Training losses on sparse class maps: cross-entropy, soft Dice, cross-entropy + Dice, focal.

Written here rather than taken from Keras because Keras' `Dice` and `CategoricalFocalCrossentropy`
take one-hot targets and have no per-class weights; these take the uint8 class maps unetq trains
on, and share one `class_weights` list. Every loss sees softmax probabilities `[B, H, W, C]`.

- cross-entropy: sum over pixels of w[y] * -log p_y, divided by the sum of w[y] (a plain mean
  without class weights).
- focal (Lin et al. 2017): the same with each pixel's term scaled by (1 - p_y) ** gamma.
- Dice: 1 - the class-weighted mean over classes of the soft Dice coefficient
  (2 * sum(p_c * t_c) + s) / (sum(p_c) + sum(t_c) + s), sums over every pixel of the batch,
  s = DICE_SMOOTH (keeps a class absent from a batch from dividing by zero).
- ce_dice: cross-entropy + Dice.

Plain cross-entropy without class weights stays Keras' own string loss, so the models of the
pets presets are exactly what they were before these losses existed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CROSS_ENTROPY = "sparse_categorical_crossentropy"
LOSSES = (CROSS_ENTROPY, "dice", "ce_dice", "focal")
DICE_SMOOTH = 1.0
EPSILON = 1e-7  # probabilities are clipped to [EPSILON, 1 - EPSILON], as Keras does


def keras_loss(
    kind: str, num_classes: int, class_weights: list[float] | None = None, gamma: float = 2.0
) -> Any:
    """The loss to compile a model with."""
    if kind == CROSS_ENTROPY and class_weights is None:
        return CROSS_ENTROPY
    import keras

    weights = _weights(class_weights, num_classes)

    class SegmentationLoss(keras.losses.Loss):
        def call(self, y_true, y_pred):
            return segmentation_loss(kind, y_true, y_pred, weights, gamma, keras.ops)

    return SegmentationLoss(name=kind, reduction="sum")


def numpy_loss(
    kind: str,
    labels: np.ndarray,
    probs: np.ndarray,
    num_classes: int,
    class_weights: list[float] | None = None,
    gamma: float = 2.0,
) -> float:
    """The same loss computed with numpy (float64), for validation passes and tests."""
    weights = _weights(class_weights, num_classes)
    return float(segmentation_loss(kind, labels, probs.astype(np.float64), weights, gamma, _NP))


def _weights(class_weights: list[float] | None, num_classes: int) -> np.ndarray:
    if class_weights is None:
        return np.ones(num_classes, dtype=np.float32)
    if len(class_weights) != num_classes:
        raise ValueError(f"{len(class_weights)} class weights for {num_classes} classes")
    return np.asarray(class_weights, dtype=np.float32)


def segmentation_loss(kind: str, y_true, y_pred, weights: np.ndarray, gamma: float, ops) -> Any:
    """One formula for Keras tensors (ops = keras.ops) and numpy arrays (ops = _NP)."""
    num_classes = len(weights)
    labels = ops.cast(y_true, "int32")
    if len(labels.shape) == len(y_pred.shape):  # [B, H, W, 1] targets
        labels = ops.squeeze(labels, axis=-1)
    onehot = ops.one_hot(labels, num_classes)
    probs = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
    w = ops.cast(weights, y_pred.dtype)
    if kind == "dice":
        return _dice(onehot, y_pred, w, ops)
    pixel_w = ops.sum(onehot * w, axis=-1)
    p_true = ops.sum(onehot * probs, axis=-1)
    terms = -ops.log(p_true)
    if kind == "focal":
        terms = terms * (1.0 - p_true) ** gamma
    ce = ops.sum(pixel_w * terms) / ops.sum(pixel_w)
    if kind == "ce_dice":
        return ce + _dice(onehot, y_pred, w, ops)
    return ce


def _dice(onehot, probs, w, ops) -> Any:
    axes = tuple(range(len(probs.shape) - 1))
    inter = ops.sum(onehot * probs, axis=axes)
    total = ops.sum(onehot, axis=axes) + ops.sum(probs, axis=axes)
    dice = (2.0 * inter + DICE_SMOOTH) / (total + DICE_SMOOTH)
    return 1.0 - ops.sum(w * dice) / ops.sum(w)


class _NumpyOps:
    """The few keras.ops the formula uses, on numpy arrays."""

    cast = staticmethod(lambda x, dtype: np.asarray(x).astype(dtype))
    squeeze = staticmethod(np.squeeze)
    clip = staticmethod(np.clip)
    sum = staticmethod(np.sum)
    log = staticmethod(np.log)

    @staticmethod
    def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
        return np.eye(num_classes, dtype=np.float64)[labels]


_NP = _NumpyOps()
