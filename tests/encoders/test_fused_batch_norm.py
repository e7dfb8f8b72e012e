"""tfssl's BatchNormalization (TensorFlow's fused kernel) against numpy: outputs, moving statistics, gradients."""
import keras
import numpy as np
import tensorflow as tf

from tfssl.encoders.batch_norm import BatchNormalization

EPS, MOMENTUM = 1e-3, 0.9


def _inputs(shape=(6, 5, 4, 3), seed=0):
    return np.random.default_rng(seed).normal(1.5, 2.0, shape).astype(np.float32)


def _layer(channels=3, seed=1, **kwargs):
    layer = BatchNormalization(momentum=MOMENTUM, epsilon=EPS, **kwargs)
    layer.build((None, 5, 4, channels))
    rng = np.random.default_rng(seed)
    for weight in layer.weights:  # gamma, beta, moving statistics off their initial values
        low = 0.5 if "variance" in weight.path or "gamma" in weight.path else -1.0
        weight.assign(rng.uniform(low, 1.5, weight.shape).astype(np.float32))
    return layer


def _np_forward(x, gamma, beta):
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))  # biased, as Keras 3
    return gamma * (x - mean) / np.sqrt(var + EPS) + beta, mean, var


def _np_backward(x, gamma, dy):
    """Closed-form batch-norm gradient (training mode) w.r.t. x, gamma and beta."""
    axes, n = (0, 1, 2), x.size // x.shape[-1]
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    xhat = (x - mean) / np.sqrt(var + EPS)
    dgamma, dbeta = (dy * xhat).sum(axis=axes), dy.sum(axis=axes)
    dx = gamma / np.sqrt(var + EPS) / n * (n * dy - dbeta - xhat * dgamma)
    return dx, dgamma, dbeta


def _op_types(layer, shape):
    """Op types of the graph of one training-mode call of `layer` on a `shape` float32 input."""
    graph = tf.function(lambda t: layer(t, training=True)).get_concrete_function(
        tf.TensorSpec(shape, tf.float32)).graph
    return {op.type for op in graph.get_operations()}


def test_training_forward_and_moving_statistics_match_numpy():
    x, layer = _inputs(), _layer()
    gamma, beta = layer.gamma.numpy(), layer.beta.numpy()
    old_mean, old_var = layer.moving_mean.numpy(), layer.moving_variance.numpy()
    y = layer(x, training=True)
    want, mean, var = _np_forward(x.astype(np.float64), gamma, beta)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.moving_mean.numpy(), MOMENTUM * old_mean + (1 - MOMENTUM) * mean, rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), MOMENTUM * old_var + (1 - MOMENTUM) * var, rtol=1e-5)


def test_inference_uses_the_moving_statistics():
    x, layer = _inputs(), _layer()
    moving_mean, moving_var = layer.moving_mean.numpy(), layer.moving_variance.numpy()
    want = layer.gamma.numpy() * (x - moving_mean) / np.sqrt(moving_var + EPS) + layer.beta.numpy()
    np.testing.assert_allclose(layer(x, training=False).numpy(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(layer.moving_mean.numpy(), moving_mean)  # not updated in inference


def test_a_frozen_layer_normalises_with_its_moving_statistics_even_in_training():
    x, layer = _inputs(), _layer()
    want = layer(x, training=False).numpy()
    layer.trainable = False
    np.testing.assert_allclose(layer(x, training=True).numpy(), want, rtol=1e-6, atol=1e-6)


def test_gradients_match_the_closed_form():
    x, layer = _inputs(), _layer()
    dy = np.random.default_rng(3).normal(size=x.shape).astype(np.float32)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(layer(xt, training=True) * dy)
    dx, dgamma, dbeta = tape.gradient(loss, [xt, layer.gamma.value, layer.beta.value])
    want = _np_backward(x.astype(np.float64), layer.gamma.numpy().astype(np.float64), dy.astype(np.float64))
    for got, expected in zip((dx, dgamma, dbeta), want):
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_without_scale_and_centre():
    x = _inputs()
    layer = _layer(center=False, scale=False)
    want, _, _ = _np_forward(x.astype(np.float64), 1.0, 0.0)
    np.testing.assert_allclose(layer(x, training=True).numpy(), want, rtol=1e-5, atol=1e-5)


def test_the_fused_kernel_is_used_for_images_and_not_for_vectors():
    """Positive control for the path taken: the traced graph holds the fused op only for 4-D inputs."""
    assert "FusedBatchNormV3" in _op_types(_layer(), (2, 5, 4, 3))
    dense_bn = BatchNormalization(momentum=MOMENTUM, epsilon=EPS)
    dense_bn.build((None, 3))
    assert "FusedBatchNormV3" not in _op_types(dense_bn, (2, 3))
    x = _inputs((8, 3))
    want, _, _ = _np_forward(x[:, None, None, :].astype(np.float64), 1.0, 0.0)
    np.testing.assert_allclose(dense_bn(x, training=True).numpy(), want[:, 0, 0], rtol=1e-5, atol=1e-5)


def test_mixed_bfloat16_computes_in_float32_and_returns_bfloat16():
    x, layer = _inputs(), _layer(dtype="mixed_bfloat16")
    y = layer(tf.cast(x, tf.bfloat16), training=True)
    assert y.dtype == tf.bfloat16 and layer.moving_mean.dtype == "float32"
    want, _, _ = _np_forward(tf.cast(tf.cast(x, tf.bfloat16), tf.float32).numpy().astype(np.float64),
                             layer.gamma.numpy(), layer.beta.numpy())
    np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(), want, rtol=2e-2, atol=2e-2)


def test_synchronised_on_two_replicas_normalises_over_the_global_batch(two_replica_strategy):
    x = _inputs((4, 5, 4, 3))
    with two_replica_strategy.scope():
        layer = _layer(synchronized=True)
    want, _, _ = _np_forward(x.astype(np.float64), layer.gamma.numpy(), layer.beta.numpy())
    shards = two_replica_strategy.experimental_distribute_values_from_function(
        lambda ctx: x[2 * ctx.replica_id_in_sync_group:2 * ctx.replica_id_in_sync_group + 2])
    out = tf.function(lambda t: two_replica_strategy.run(lambda v: layer(v, training=True), args=(t,)))(shards)
    got = np.concatenate([t.numpy() for t in two_replica_strategy.experimental_local_results(out)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_saves_and_loads_as_itself(tmp_path):
    inputs = keras.Input((5, 4, 3))
    model = keras.Model(inputs, _layer()(inputs))
    path = str(tmp_path / "bn.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.layers[-1]) is BatchNormalization
    x = _inputs()
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), model(x, training=False).numpy())


def test_renormalisation_falls_back_to_keras():
    layer = BatchNormalization(renorm=True)
    layer.build((None, 5, 4, 3))
    assert "FusedBatchNormV3" not in _op_types(layer, (2, 5, 4, 3))
