import numpy as np
import pytest

from unetq.data.conditions import CONDITIONS, apply_condition
from unetq.errors import ConfigError


@pytest.fixture
def image():
    rng = np.random.default_rng(1)
    base = np.linspace(0, 255, 120 * 90 * 3).reshape(90, 120, 3)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("condition", sorted(CONDITIONS))
def test_condition_is_deterministic_and_changes_the_image(image, condition):
    a = apply_condition(image, condition, 2, seed=3, key="img1")
    b = apply_condition(image, condition, 2, seed=3, key="img1")
    assert a.shape == image.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - image.astype(int)).mean() > 0.5


@pytest.mark.parametrize("condition", sorted(CONDITIONS))
def test_higher_severity_moves_further_from_the_clean_image(image, condition):
    dist = [
        np.abs(apply_condition(image, condition, s, key="k").astype(float) - image).mean()
        for s in (1, 3)
    ]
    assert dist[1] > dist[0]


def test_random_conditions_differ_by_key(image):
    a = apply_condition(image, "occlusion", 2, seed=0, key="a")
    b = apply_condition(image, "occlusion", 2, seed=0, key="b")
    assert not np.array_equal(a, b)


def test_occlusion_covers_the_requested_share(image):
    out = apply_condition(image, "occlusion", 2, key="x")  # level 0.20
    grey = np.all(out == 128, axis=-1).mean()
    assert 0.2 <= grey <= 0.6


def test_unknown_condition_and_bad_severity_fail_cleanly(image):
    with pytest.raises(ConfigError, match="unknown condition"):
        apply_condition(image, "fog", 1)
    with pytest.raises(ConfigError, match="severities start at 1"):
        apply_condition(image, "jpeg", 0)
