"""tf.data pipelines over cached split arrays (TensorFlow is imported only here, lazily)."""

from __future__ import annotations

import numpy as np

from unetq.data.index import SplitArrays


def to_input(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 model input in [0, 1]."""
    return np.asarray(images_uint8, dtype=np.float32) / np.float32(255.0)


def make_tf_dataset(
    arrays: SplitArrays,
    batch_size: int,
    shuffle: bool = False,
    augment: bool = False,
    seed: int = 0,
):
    """Batches of (float32 images in [0, 1] [B, S, S, 3], int32 masks [B, S, S]).

    shuffle: reshuffled every epoch, deterministic for `seed`. augment: a random horizontal
    flip applied to each image and its mask together.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((arrays.images, arrays.masks))
    if shuffle:
        ds = ds.shuffle(max(1, len(arrays)), seed=seed, reshuffle_each_iteration=True)
    if augment:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(_flip, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size).map(_to_float, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _flip(pair, seed):
    import tensorflow as tf

    image, mask = pair
    flip = tf.random.stateless_uniform([], seed=seed) < 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
    mask = tf.cond(flip, lambda: tf.reverse(mask, axis=[1]), lambda: mask)
    return image, mask


def _to_float(images, masks):
    import tensorflow as tf

    return tf.cast(images, tf.float32) / 255.0, tf.cast(masks, tf.int32)
