"""Training losses: hand-computed cases, Keras and numpy agree, config checks."""

import math

import numpy as np
import pytest

from unetq.config import ConfigError, build_config
from unetq.losses import DICE_SMOOTH, keras_loss, numpy_loss

# Two pixels, two classes: truth [0, 1], predicted P(class 1) = 0.2 and 0.6.
LABELS = np.array([[[0, 1]]])
PROBS = np.array([[[[0.8, 0.2], [0.4, 0.6]]]])


def test_cross_entropy_is_the_mean_negative_log_of_the_true_class():
    expected = -(math.log(0.8) + math.log(0.6)) / 2
    assert numpy_loss("sparse_categorical_crossentropy", LABELS, PROBS, 2, [1, 1]) == (
        pytest.approx(expected)
    )


def test_class_weights_weight_each_pixel_by_its_true_class():
    # weight 3 on class 1: (1 * -log 0.8 + 3 * -log 0.6) / (1 + 3)
    expected = (-math.log(0.8) - 3 * math.log(0.6)) / 4
    got = numpy_loss("sparse_categorical_crossentropy", LABELS, PROBS, 2, [1, 3])
    assert got == pytest.approx(expected)


def test_focal_scales_each_term_by_one_minus_p_to_the_gamma():
    expected = (-(0.2**2) * math.log(0.8) - (0.4**2) * math.log(0.6)) / 2
    assert numpy_loss("focal", LABELS, PROBS, 2, gamma=2.0) == pytest.approx(expected)
    # gamma 0 is cross-entropy
    ce = numpy_loss("sparse_categorical_crossentropy", LABELS, PROBS, 2, [1, 1])
    assert numpy_loss("focal", LABELS, PROBS, 2, gamma=0.0) == pytest.approx(ce)


def test_dice_is_one_minus_the_mean_soft_dice_of_the_classes():
    s = DICE_SMOOTH
    # class 0: truth (1, 0), p (0.8, 0.4): intersection 0.8, sums 1 + 1.2
    d0 = (2 * 0.8 + s) / (1 + 1.2 + s)
    # class 1: truth (0, 1), p (0.2, 0.6): intersection 0.6, sums 1 + 0.8
    d1 = (2 * 0.6 + s) / (1 + 0.8 + s)
    assert numpy_loss("dice", LABELS, PROBS, 2) == pytest.approx(1 - (d0 + d1) / 2)
    weighted = 1 - (1 * d0 + 3 * d1) / 4
    assert numpy_loss("dice", LABELS, PROBS, 2, [1, 3]) == pytest.approx(weighted)


def test_ce_dice_is_their_sum_and_a_perfect_prediction_costs_nothing():
    ce = numpy_loss("sparse_categorical_crossentropy", LABELS, PROBS, 2, [1, 1])
    dice = numpy_loss("dice", LABELS, PROBS, 2)
    assert numpy_loss("ce_dice", LABELS, PROBS, 2) == pytest.approx(ce + dice)
    perfect = np.eye(2)[LABELS]
    assert numpy_loss("ce_dice", LABELS, perfect, 2) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("kind", ["dice", "ce_dice", "focal", "sparse_categorical_crossentropy"])
def test_the_keras_loss_equals_the_numpy_formula(kind):
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (2, 5, 4))
    logits = rng.normal(size=(2, 5, 4, 3))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    weights = [0.5, 1.0, 2.0]
    loss = keras_loss(kind, 3, weights, gamma=1.5)
    got = float(keras.ops.convert_to_numpy(loss(labels, probs.astype("float32"))))
    assert got == pytest.approx(numpy_loss(kind, labels, probs, 3, weights, 1.5), rel=1e-4)


def test_plain_cross_entropy_stays_keras_own_loss():
    assert keras_loss("sparse_categorical_crossentropy", 3) == "sparse_categorical_crossentropy"


def test_the_config_names_the_losses_it_knows():
    assert build_config("smoke", sets=["train.loss=dice"]).train.loss == "dice"
    with pytest.raises(ConfigError, match="train.loss"):
        build_config("smoke", sets=["train.loss=hinge"])
    with pytest.raises(ConfigError, match="focal_gamma"):
        build_config("smoke", sets=["train.focal_gamma=-1"])
