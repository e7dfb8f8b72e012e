"""Helpers shared by the augmentation tests: run an op eagerly or inside tf.data on batches."""
import numpy as np
import pytest
import tensorflow as tf


def _run_in_dataset(fn, images, seed, batch=None, drop_remainder=False):
    """Applies fn(batch_images, seed) inside tf.data.Dataset.map over batches; returns numpy [N, ...].

    drop_remainder=False leaves the batch dimension unknown while tracing; True makes it static.
    """
    images = np.asarray(images)
    batch = batch or len(images)
    ds = tf.data.Dataset.from_tensor_slices(images).batch(batch, drop_remainder=drop_remainder)
    seed = tf.constant(seed, tf.int64)
    ds = ds.map(lambda x: fn(x, seed))
    return np.concatenate([out.numpy() for out in ds], axis=0)


@pytest.fixture
def run_in_dataset():
    return _run_in_dataset


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
