"""ProjectionHead against a numpy MLP, its layer selector, validation, config round trip, SimCLRv2 size."""
import keras
import numpy as np
import pytest

from tfssl.heads import ProjectionHead

IN_DIM = 6


def _inputs(batch=5, dim=IN_DIM, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, dim)).astype(np.float32)


def _numpy_mlp_outputs(x, kernels, biases):
    """Every layer's output of a plain MLP: ReLU between layers, nothing after the last one."""
    outputs = [x.astype(np.float64)]
    for i, (kernel, bias) in enumerate(zip(kernels, biases)):
        y = outputs[-1] @ kernel.astype(np.float64) + bias.astype(np.float64)
        if i < len(kernels) - 1:
            y = np.maximum(y, 0.0)
        outputs.append(y)
    return outputs


def _set_random_dense_weights(head, widths, seed=1):
    """Assigns known random kernels/biases (non-zero biases so a dropped bias would show)."""
    rng = np.random.default_rng(seed)
    kernels, biases = [], []
    fan_in = IN_DIM
    for width in widths:
        kernels.append(rng.normal(size=(fan_in, width)).astype(np.float32))
        biases.append(rng.normal(size=(width,)).astype(np.float32))
        fan_in = width
    weights = [w for pair in zip(kernels, biases) for w in pair]
    head.set_weights(weights)
    return kernels, biases


@pytest.mark.parametrize("num_layers,output_dim,hidden_dim", [(1, 3, None), (2, 4, None), (3, 7, 5)])
def test_output_shape(num_layers, output_dim, hidden_dim):
    head = ProjectionHead(num_layers=num_layers, output_dim=output_dim, hidden_dim=hidden_dim)
    z = head(_inputs(), training=True)
    assert tuple(z.shape) == (5, output_dim)
    assert head.compute_output_shape((None, IN_DIM)) == (None, output_dim)


@pytest.mark.parametrize("num_layers,hidden_dim", [(1, None), (2, None), (3, 5)])
def test_without_bn_matches_numpy_mlp(num_layers, hidden_dim):
    output_dim = 4
    head = ProjectionHead(num_layers=num_layers, output_dim=output_dim, hidden_dim=hidden_dim, use_bn=False)
    head.build((None, IN_DIM))
    hidden = hidden_dim or IN_DIM
    widths = [hidden] * (num_layers - 1) + [output_dim]
    kernels, biases = _set_random_dense_weights(head, widths)
    x = _inputs()
    want = _numpy_mlp_outputs(x, kernels, biases)

    np.testing.assert_allclose(np.asarray(head(x, training=False)), want[-1], rtol=1e-5, atol=1e-5)
    # training has no effect without BN.
    np.testing.assert_allclose(np.asarray(head(x, training=True)), want[-1], rtol=1e-5, atol=1e-5)
    got = head.layer_outputs(x)
    assert len(got) == num_layers + 1
    for got_i, want_i in zip(got, want):
        np.testing.assert_allclose(np.asarray(got_i), want_i, rtol=1e-5, atol=1e-5)


def test_relu_between_layers_not_at_end():
    head = ProjectionHead(num_layers=2, output_dim=3, use_bn=False)
    head.build((None, IN_DIM))
    _set_random_dense_weights(head, [IN_DIM, 3])
    x = _inputs(batch=64)
    hidden, z = head.layer_outputs(x)[1:]
    assert np.min(np.asarray(hidden)) >= 0.0
    assert np.min(np.asarray(z)) < 0.0  # a ReLU at the end would make this impossible


@pytest.mark.parametrize("keep_layer", [0, 1, 2, 3])
def test_kept_output_picks_the_right_layer(keep_layer):
    head = ProjectionHead(num_layers=3, output_dim=4, use_bn=False, keep_layer=keep_layer)
    head.build((None, IN_DIM))
    kernels, biases = _set_random_dense_weights(head, [IN_DIM, IN_DIM, 4])
    x = _inputs()
    want = _numpy_mlp_outputs(x, kernels, biases)[keep_layer]
    got = np.asarray(head.kept_output(x, training=False))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if keep_layer == 0:
        np.testing.assert_array_equal(got, x)


def test_bn_head_layer_outputs_match_numpy_in_inference_mode():
    """With BN: Dense (no bias) -> BN(moving stats) -> ReLU, last BN has no beta and no ReLU."""
    head = ProjectionHead(num_layers=2, output_dim=3, use_bn=True)
    head.build((None, IN_DIM))
    rng = np.random.default_rng(3)
    k0 = rng.normal(size=(IN_DIM, IN_DIM)).astype(np.float32)
    g0, b0 = rng.uniform(0.5, 2, IN_DIM).astype(np.float32), rng.normal(size=IN_DIM).astype(np.float32)
    m0, v0 = rng.normal(size=IN_DIM).astype(np.float32), rng.uniform(0.5, 2, IN_DIM).astype(np.float32)
    k1 = rng.normal(size=(IN_DIM, 3)).astype(np.float32)
    g1, m1, v1 = (rng.uniform(0.5, 2, 3).astype(np.float32), rng.normal(size=3).astype(np.float32),
                  rng.uniform(0.5, 2, 3).astype(np.float32))
    head.set_weights([k0, g0, b0, m0, v0, k1, g1, m1, v1])
    x = _inputs()
    a = np.maximum(g0 * (x @ k0 - m0) / np.sqrt(v0 + 1e-5) + b0, 0.0)
    z = g1 * (a @ k1 - m1) / np.sqrt(v1 + 1e-5)
    outs = head.layer_outputs(x, training=False)
    np.testing.assert_allclose(np.asarray(outs[1]), a, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(outs[2]), z, rtol=1e-4, atol=1e-5)


def test_bn_head_training_mode_uses_batch_statistics():
    head = ProjectionHead(num_layers=1, output_dim=3, use_bn=True)
    head.build((None, IN_DIM))
    kernel = np.random.default_rng(4).normal(size=(IN_DIM, 3)).astype(np.float32)
    head.set_weights([kernel, np.ones(3, np.float32), np.zeros(3, np.float32), np.ones(3, np.float32)])
    x = _inputs(batch=8)
    y = x @ kernel
    want = (y - y.mean(0)) / np.sqrt(y.var(0) + 1e-5)
    np.testing.assert_allclose(np.asarray(head(x, training=True)), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs",
    [dict(num_layers=0), dict(num_layers=-1), dict(output_dim=0), dict(output_dim=-3),
     dict(num_layers=2, keep_layer=3), dict(keep_layer=-1)],
)
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        ProjectionHead(**kwargs)


def test_keep_layer_may_equal_num_layers():
    assert ProjectionHead(num_layers=2, keep_layer=2).keep_layer == 2


@pytest.mark.parametrize("use_bn", [True, False])
def test_config_round_trip_gives_same_outputs(use_bn):
    head = ProjectionHead(num_layers=3, output_dim=5, hidden_dim=4, use_bn=use_bn, keep_layer=2,
                          sync_bn=False, name="proj")
    x = _inputs()
    head(x, training=True)  # builds (and moves the BN statistics away from their initial values)
    config = head.get_config()
    for key, value in dict(num_layers=3, output_dim=5, hidden_dim=4, use_bn=use_bn, keep_layer=2,
                           sync_bn=False, name="proj").items():
        assert config[key] == value
    clone = ProjectionHead.from_config(config)
    clone.build((None, IN_DIM))
    assert len(clone.weights) == len(head.weights)
    clone.set_weights(head.get_weights())
    for training in (False, True):
        np.testing.assert_allclose(np.asarray(clone(x, training=training)), np.asarray(head(x, training=training)),
                                   rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(clone.kept_output(x)), np.asarray(head.kept_output(x)), rtol=1e-6)
    # Also through the generic Keras serialisation used by .keras files.
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert isinstance(restored, ProjectionHead) and restored.get_config() == config


def test_simclr_v2_head_variable_count():
    """3 layers with BN: 3 kernels (no biases), BN0/BN1 with gamma+beta, last BN gamma only."""
    dim, out = 8, 4
    head = ProjectionHead(num_layers=3, output_dim=out, use_bn=True, keep_layer=1)
    head(np.zeros((2, dim), np.float32))
    assert len(head.trainable_weights) == 3 + 2 + 2 + 1
    assert len(head.non_trainable_weights) == 3 * 2  # moving mean / variance per BN
    shapes = sorted(tuple(w.shape) for w in head.trainable_weights)
    assert shapes == sorted([(dim, dim), (dim, dim), (dim, out), (dim,), (dim,), (dim,), (dim,), (out,)])
    assert sum(int(np.prod(w.shape)) for w in head.trainable_weights) == 2 * dim * dim + dim * out + 4 * dim + out


def test_scale_free_last_bn_matches_numpy_in_training_mode():
    """SimSiam / MoCo v3 (reference BatchNorm1d(affine=False)): the last BN only standardises."""
    head = ProjectionHead(num_layers=2, output_dim=3, hidden_dim=4, last_bn_scale=False)
    head.build((None, IN_DIM))
    assert [w.name for w in head.blocks[-1][1].weights] == ["moving_mean", "moving_variance"]
    rng = np.random.default_rng(5)
    k0, k1 = rng.normal(size=(IN_DIM, 4)).astype(np.float32), rng.normal(size=(4, 3)).astype(np.float32)
    g0, b0 = rng.uniform(0.5, 2, 4).astype(np.float32), rng.normal(size=4).astype(np.float32)
    head.set_weights([k0, g0, b0, np.zeros(4), np.ones(4), k1, np.zeros(3), np.ones(3)])
    x = _inputs(batch=8).astype(np.float64)

    def standardise(y):
        return (y - y.mean(0)) / np.sqrt(y.var(0) + 1e-5)

    a = np.maximum(g0 * standardise(x @ k0) + b0, 0.0)
    np.testing.assert_allclose(np.asarray(head(x.astype(np.float32), training=True)), standardise(a @ k1),
                               rtol=1e-4, atol=1e-4)
    clone = ProjectionHead.from_config(head.get_config())
    assert clone.last_bn_scale is False


def test_predictor_can_end_with_a_parameter_free_bn():
    """MoCo v3's ViT predictor: Dense -> BN -> ReLU -> Dense (no bias) -> BN without scale or shift."""
    from tfssl.heads import predictor_head

    head = predictor_head(5, 7, last_bn=True)
    head.build((None, 5))
    assert [w.path for w in head.trainable_weights] == [
        "predictor/dense0/kernel", "predictor/bn0/gamma", "predictor/bn0/beta", "predictor/dense1/kernel"]
    out = np.asarray(head(_inputs(batch=16, dim=5), training=True))
    np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.var(0), 1.0, rtol=1e-3)
    plain = predictor_head(5, 7)
    plain.build((None, 5))
    assert plain.trainable_weights[-1].path == "predictor/dense1/bias"
