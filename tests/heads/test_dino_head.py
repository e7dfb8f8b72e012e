"""DINOHead against a numpy forward pass, its weight-normalised last layer, mixed precision, round trips."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.heads import DINOHead

IN_DIM, HIDDEN, BOTTLENECK, K = 6, 8, 5, 12

_erf = np.vectorize(math.erf)


def _gelu(x, exact=True):
    if exact:  # torch.nn.GELU() default: x * Phi(x)
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _inputs(batch=5, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, IN_DIM)).astype(np.float32)


def _head(num_layers=3, use_bn=False, norm_last_layer=True, **kwargs):
    head = DINOHead(output_dim=K, hidden_dim=HIDDEN, bottleneck_dim=BOTTLENECK, num_layers=num_layers,
                    use_bn=use_bn, norm_last_layer=norm_last_layer, **kwargs)
    head.build((None, IN_DIM))
    return head


def _randomize(head, seed=1):
    """Assigns known random values to every weight (non-zero biases, BN stats, g unless fixed at 1)."""
    rng = np.random.default_rng(seed)
    for w in head.weights:
        shape = tuple(w.shape)
        if w is head.last_layer_g and not w.trainable:
            continue
        if "variance" in w.path:
            value = rng.uniform(0.5, 2.0, size=shape)
        elif shape and len(shape) == 2:
            value = rng.normal(size=shape) / math.sqrt(shape[0]) * 2.0
        else:
            value = rng.normal(size=shape)
        w.assign(value.astype(np.float32))


def numpy_dino_head(head, x, exact_gelu=True):
    """Reference DINOHead forward in float64 from the layer's own weights, read by name."""
    y = x.astype(np.float64)
    weights = {w.path.split("/", 1)[1]: np.asarray(w.numpy(), np.float64) for w in head.weights}
    for i in range(head.num_layers):
        y = y @ weights[f"dense{i}/kernel"] + weights[f"dense{i}/bias"]
        if i < head.num_layers - 1:
            if head.use_bn:
                bn = {name: weights[f"bn{i}/{name}"] for name in ("gamma", "beta", "moving_mean", "moving_variance")}
                y = (y - bn["moving_mean"]) / np.sqrt(bn["moving_variance"] + 1e-5) * bn["gamma"] + bn["beta"]
            y = _gelu(y, exact_gelu)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    v, g = weights["last_layer_v"], weights["last_layer_g"]
    if head.norm_last_layer:
        assert np.all(g == 1.0)
    return y @ (v / np.linalg.norm(v, axis=0, keepdims=True) * g)


@pytest.mark.parametrize("num_layers", [1, 2, 3, 4])
def test_output_shape(num_layers):
    head = DINOHead(output_dim=K, hidden_dim=HIDDEN, bottleneck_dim=BOTTLENECK, num_layers=num_layers)
    assert tuple(head(_inputs(), training=True).shape) == (5, K)
    assert head.compute_output_shape((None, IN_DIM)) == (None, K)
    assert len(head.dense_layers) == num_layers


@pytest.mark.parametrize("num_layers,use_bn,norm_last_layer", [(1, False, True), (2, False, False),
                                                               (3, False, True), (3, True, False),
                                                               (4, True, True)])
def test_matches_numpy_forward(num_layers, use_bn, norm_last_layer):
    head = _head(num_layers, use_bn, norm_last_layer)
    _randomize(head)
    x = _inputs()
    got = np.asarray(head(x, training=False))
    np.testing.assert_allclose(got, numpy_dino_head(head, x), rtol=1e-5, atol=1e-5)
    if num_layers > 1:  # exact erf GELU, not the tanh approximation (the test can tell them apart)
        assert np.max(np.abs(got - numpy_dino_head(head, x, exact_gelu=False))) > 1e-4


def test_keras_gelu_default_is_exact_erf():
    x = np.linspace(-4.0, 4.0, 81)
    np.testing.assert_allclose(np.asarray(keras.activations.gelu(x.astype(np.float32))), _gelu(x), atol=1e-6)


def test_initialisation():
    head = DINOHead(output_dim=64, hidden_dim=256, bottleneck_dim=32)
    head.build((None, 128))
    for dense in head.dense_layers:
        kernel = dense.kernel.numpy()
        assert np.all(np.abs(kernel) <= 0.04 + 1e-7) and 0.012 < kernel.std() < 0.022  # truncated at 2 std
        assert np.all(dense.bias.numpy() == 0.0)
    v = head.last_layer_v.numpy()
    assert np.all(np.abs(v) <= 1.0 / math.sqrt(32)) and v.std() > 0.05
    assert np.all(head.last_layer_g.numpy() == 1.0)


@pytest.mark.parametrize("norm_last_layer", [True, False])
def test_last_layer_weight_normalisation_and_trainability(norm_last_layer):
    head = _head(norm_last_layer=norm_last_layer)
    _randomize(head, seed=3)
    norms = np.linalg.norm(head.last_layer_kernel().numpy(), axis=0)
    g = head.last_layer_g.numpy()
    np.testing.assert_allclose(norms, 1.0 if norm_last_layer else np.abs(g), rtol=1e-5)
    trainable = {id(w) for w in head.trainable_weights}
    assert id(head.last_layer_v) in trainable
    assert (id(head.last_layer_g) in trainable) is (not norm_last_layer)
    want = [head.last_layer_v] if norm_last_layer else [head.last_layer_v, head.last_layer_g]
    assert len(head.last_layer_variables) == len(want)
    assert all(a is b for a, b in zip(head.last_layer_variables, want))
    # Every trainable weight gets a gradient; with norm_last_layer, g is not among them.
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(head(_inputs(), training=True)))
    grads = tape.gradient(loss, head.trainable_weights)
    assert all(grad is not None for grad in grads)
    assert len(head.trainable_weights) == 2 * 3 + (1 if norm_last_layer else 2)


def _check_mixed(head, reference, x, want):
    head.set_weights(reference.get_weights())
    out = head(x, training=False)
    assert head.compute_dtype == "bfloat16" and out.dtype == tf.bfloat16
    assert all(w.dtype == "float32" for w in head.weights)
    assert all(layer.compute_dtype == "bfloat16" for layer in head.dense_layers + head.bn_layers)
    np.testing.assert_allclose(np.asarray(tf.cast(out, tf.float32)), want, atol=3e-2)


def test_mixed_bfloat16_policy():
    x = _inputs(seed=4)
    reference = _head(use_bn=True)
    _randomize(reference, seed=5)
    want = np.asarray(reference(x, training=False))
    _check_mixed(_head(use_bn=True, dtype="mixed_bfloat16"), reference, x, want)  # the layer's own policy
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # the global policy
    try:
        _check_mixed(_head(use_bn=True), reference, x, want)
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("use_bn,norm_last_layer", [(False, True), (True, False)])
def test_serialisation_round_trip(tmp_path, use_bn, norm_last_layer):
    head = _head(use_bn=use_bn, norm_last_layer=norm_last_layer, name="dino_head")
    config = head.get_config()
    assert DINOHead.from_config(config).get_config() == config
    inputs = keras.Input((IN_DIM,))
    model = keras.Model(inputs, head(inputs))
    _randomize(head, seed=6)
    path = str(tmp_path / "head.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    loaded_head = loaded.get_layer("dino_head")
    assert isinstance(loaded_head, DINOHead) and loaded_head.get_config() == config
    x = _inputs(seed=7)
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), np.asarray(model(x, training=False)))
    assert loaded_head.last_layer_g.trainable is (not norm_last_layer)


def test_checkpoint_saves_every_variable(tmp_path):
    head = _head(use_bn=True)
    _randomize(head, seed=8)
    path = tf.train.Checkpoint(head=head).write(str(tmp_path / "ckpt"))
    restored = _head(use_bn=True)
    tf.train.Checkpoint(head=restored).read(path).assert_consumed()
    for a, b in zip(head.weights, restored.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("kwargs", [dict(output_dim=0), dict(hidden_dim=0), dict(bottleneck_dim=-1),
                                    dict(num_layers=0), dict(output_dim=2.5)])
def test_validation(kwargs):
    with pytest.raises(ValueError, match="DINOHead"):
        DINOHead(**kwargs)
