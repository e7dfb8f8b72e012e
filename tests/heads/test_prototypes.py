"""Prototypes: unit-norm columns after normalize() (also inside a 2-replica step), scores equal to
a numpy matmul, config round trip, bad arguments, and an optimizer step on 2 replicas."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.heads import Prototypes


def _built(rng, d=6, k=5):
    layer = Prototypes(k)
    layer.build((None, d))
    weight = rng.normal(size=(d, k)).astype(np.float32) * rng.uniform(0.1, 3.0, size=(1, k)).astype(np.float32)
    layer.prototypes.assign(weight)
    return layer, weight


def test_weight_shape_and_name():
    layer = Prototypes(7)
    out = layer(np.ones((3, 4), np.float32))
    assert out.shape == (3, 7)
    assert tuple(layer.prototypes.shape) == (4, 7)
    assert "prototypes" in layer.prototypes.path
    assert [w.path for w in layer.trainable_weights] == [layer.prototypes.path]  # no bias
    assert layer.compute_output_shape((None, 4)) == (None, 7)


def test_normalize_makes_every_prototype_column_unit_norm():
    layer, weight = _built(np.random.default_rng(0))
    assert not np.allclose(np.linalg.norm(weight, axis=0), 1.0)
    layer.normalize()
    normalized = layer.prototypes.numpy()
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=0), 1.0, rtol=1e-6)
    expected = weight.astype(np.float64) / np.linalg.norm(weight.astype(np.float64), axis=0, keepdims=True)
    np.testing.assert_allclose(normalized, expected, rtol=1e-6, atol=1e-7)
    layer.normalize()  # idempotent
    np.testing.assert_allclose(layer.prototypes.numpy(), expected, rtol=1e-6, atol=1e-7)


def test_call_is_a_matmul_and_cosine_after_normalize():
    rng = np.random.default_rng(1)
    layer, weight = _built(rng)
    z = rng.normal(size=(4, 6)).astype(np.float32)
    np.testing.assert_allclose(layer(z).numpy(), z.astype(np.float64) @ weight, rtol=1e-5, atol=1e-5)
    layer.normalize()
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    scores = layer(z).numpy()
    assert np.all(np.abs(scores) <= 1.0 + 1e-6)
    np.testing.assert_allclose(scores, z @ layer.prototypes.numpy(), rtol=1e-5, atol=1e-6)


def test_config_round_trip():
    layer = Prototypes(num_prototypes=11, name="protos")
    config = keras.saving.serialize_keras_object(layer)
    assert config["registered_name"] == "tfssl>Prototypes"
    clone = keras.saving.deserialize_keras_object(config)
    assert isinstance(clone, Prototypes)
    assert clone.num_prototypes == 11 and clone.name == "protos"
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize("bad", [0, -3, 2.5, "10", True])
def test_bad_num_prototypes(bad):
    with pytest.raises(ValueError, match="num_prototypes must be an integer >= 1"):
        Prototypes(bad)


def test_normalize_and_sgd_step_on_two_replicas(two_replica_strategy):
    """normalize() inside the replica step (as SwAV does) and an SGD step on the gradients summed over
    the replicas equal one device doing both on the global batch."""
    rng = np.random.default_rng(2)
    weight = rng.normal(size=(6, 5)).astype(np.float32)
    z = rng.normal(size=(8, 6)).astype(np.float32)
    target = rng.normal(size=(8, 5)).astype(np.float32)

    def step(layer, optimizer, z, target):
        layer.normalize()
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum((layer(z) - target) ** 2)
        optimizer.apply_gradients(zip(tape.gradient(loss, layer.trainable_weights), layer.trainable_weights))

    single, single_opt = Prototypes(5), keras.optimizers.SGD(0.1)
    single.build((None, 6))
    single.prototypes.assign(weight)
    step(single, single_opt, z, target)

    strategy = two_replica_strategy
    with strategy.scope():
        layer, optimizer = Prototypes(5), keras.optimizers.SGD(0.1)
        layer.build((None, 6))
        layer.prototypes.assign(weight)
    z_t, target_t = tf.constant(z), tf.constant(target)

    @tf.function
    def distributed():
        def replica_fn():
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            step(layer, optimizer, tf.reshape(z_t, [2, 4, 6])[replica], tf.reshape(target_t, [2, 4, 5])[replica])
        strategy.run(replica_fn)

    distributed()
    for copy in strategy.experimental_local_results(layer.prototypes.value):
        np.testing.assert_allclose(copy.numpy(), single.prototypes.numpy(), rtol=1e-5, atol=1e-6)


def test_mixed_precision_keeps_float32_prototypes():
    layer = Prototypes(5, dtype="mixed_float16")
    out = layer(np.ones((2, 3), np.float16))
    layer.normalize()
    assert out.dtype == tf.float16 and layer.prototypes.dtype == "float32"
    np.testing.assert_allclose(np.linalg.norm(layer.prototypes.numpy(), axis=0), 1.0, rtol=1e-6)
