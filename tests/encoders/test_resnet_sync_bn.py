"""Synchronised batch norm: 2 replicas with half a batch each must behave like 1 device on the whole batch.

Uses the two logical CPU devices that tests/conftest.py creates.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.encoders import build_encoder

BATCH, SIZE, WIDTH = 4, 8, 0.125


def _np_conv3x3_same(x, kernel):
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, w = x.shape[1:3]
    return sum(
        np.einsum("bhwc,cf->bhwf", xp[:, i : i + h, j : j + w, :], kernel[i, j]) for i in range(3) for j in range(3)
    )


def _bn_layers(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def _train_step_on_replicas(strategy, model, images):
    """One training-mode forward pass, replica r seeing images[r*B/2:(r+1)*B/2]; returns concatenated outputs."""
    half = images.shape[0] // 2

    def shard(ctx):
        start = ctx.replica_id_in_sync_group * half
        return images[start : start + half]

    per_replica = strategy.experimental_distribute_values_from_function(shard)

    @tf.function
    def step(x):
        return strategy.run(lambda t: model(t, training=True), args=(x,))

    return np.concatenate([np.asarray(t) for t in strategy.experimental_local_results(step(per_replica))])


def _replica_values(variable, strategy):
    return [np.asarray(v) for v in strategy.experimental_local_results(variable.value)]


@pytest.mark.parametrize("sync_bn", [True, False])
def test_sync_bn_statistics_equal_full_batch_statistics(sync_bn, two_replica_strategy):
    strategy = two_replica_strategy
    images = np.random.RandomState(0).rand(BATCH, SIZE, SIZE, 3).astype("float32")
    # The two halves get different brightness so per-half statistics clearly differ from the full batch.
    images[BATCH // 2 :] *= 3.0
    keras.utils.set_random_seed(7)
    with strategy.scope():
        model = build_encoder("resnet18", SIZE, width_multiplier=WIDTH, sync_bn=sync_bn)
    assert all(layer.synchronized == sync_bn for layer in _bn_layers(model))
    single = build_encoder("resnet18", SIZE, width_multiplier=WIDTH)
    single.set_weights([np.asarray(w) for w in model.weights])

    distributed_out = _train_step_on_replicas(strategy, model, images)
    single_out = np.asarray(single(images, training=True))

    # Stem BN against numpy: moving = 0.9 * initial + 0.1 * full-batch (biased) statistic.
    conv = _np_conv3x3_same(images.astype(np.float64), np.asarray(single.get_layer("stem_conv").kernel))
    want_mean = 0.1 * conv.mean(axis=(0, 1, 2))
    want_var = 0.9 + 0.1 * conv.var(axis=(0, 1, 2))
    stem_bn = model.get_layer("stem_bn")
    means = _replica_values(stem_bn.moving_mean, strategy)
    variances = _replica_values(stem_bn.moving_variance, strategy)
    assert len(means) == 2
    matches_numpy = all(
        np.allclose(m, want_mean, rtol=1e-4, atol=1e-5) and np.allclose(v, want_var, rtol=1e-4, atol=1e-5)
        for m, v in zip(means, variances)
    )
    # Every BN layer of every replica against the single-device model on the whole batch.
    matches_single = all(
        np.allclose(value, np.asarray(getattr(ref, attr)), rtol=1e-3, atol=1e-4)
        for layer, ref in zip(_bn_layers(model), _bn_layers(single))
        for attr in ("moving_mean", "moving_variance")
        for value in _replica_values(getattr(layer, attr), strategy)
    )
    outputs_match = np.allclose(distributed_out, single_out, rtol=1e-3, atol=1e-3)

    # Unsynchronised BN normalises each half with its own statistics, so all three checks must fail then.
    assert matches_numpy == sync_bn
    assert matches_single == sync_bn
    assert outputs_match == sync_bn
    assert distributed_out.shape == (BATCH, 64) and distributed_out.dtype == np.float32
