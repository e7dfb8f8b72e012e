"""CPC context network: causality row by row (finite differences and gradients), separate step maps, saving."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.heads.cpc_context import CPCContextNetwork, CPCPredictor

G, D = 5, 4


def _z(seed=0, batch=2, grid=G, dim=D):
    return np.random.default_rng(seed).normal(size=(batch, grid, grid, dim)).astype(np.float32)


def _net(**kwargs):
    kwargs = {"num_blocks": 3, "hidden_dim": 8, **kwargs}
    net = CPCContextNetwork(**kwargs)
    net.build((None, G, G, D))
    return net


@pytest.mark.parametrize("horizontal_kernel", [1, 3])
def test_context_row_i_sees_rows_up_to_i_only_finite_differences(horizontal_kernel):
    # output_relu off so that a change cannot hide behind a zero of the last ReLU.
    net = _net(horizontal_kernel=horizontal_kernel, output_relu=False)
    z = _z()
    c = np.asarray(net(z))
    assert c.shape == z.shape
    for r in range(G):
        perturbed = z.copy()
        perturbed[0, r] += np.random.default_rng(r + 10).normal(size=(G, D)).astype(np.float32)
        out = np.asarray(net(perturbed))
        np.testing.assert_array_equal(out[0, :r], c[0, :r])  # rows above r: exactly unchanged
        assert np.abs(out[0, r] - c[0, r]).max() > 1e-4  # row r itself: changed
        np.testing.assert_array_equal(out[1], c[1])  # other images: unchanged


@pytest.mark.parametrize("horizontal_kernel", [1, 3])
def test_context_gradients_vanish_exactly_below_the_row(horizontal_kernel):
    net = _net(horizontal_kernel=horizontal_kernel)
    z = tf.constant(_z(1))
    weights = tf.constant(np.random.default_rng(2).normal(size=(2, G, D)).astype(np.float32))
    for i in range(G):
        with tf.GradientTape() as tape:
            tape.watch(z)
            target = tf.reduce_sum(net(z)[:, i] * weights)
        grad = np.abs(tape.gradient(target, z).numpy()).sum(axis=(0, 2, 3))  # per input row
        top = max(0, i - 3)  # each of the 3 blocks reaches one row further up
        assert np.all(grad[i + 1:] == 0.0), (i, grad)
        assert np.all(grad[top: i + 1] > 0.0), (i, grad)
        assert np.all(grad[:top] == 0.0), (i, grad)


def test_without_row_conv_columns_do_not_mix():
    net = _net(horizontal_kernel=1)
    z = _z(3)
    base = np.asarray(net(z))
    z[:, :, 2] += 1.0
    out = np.asarray(net(z))
    changed = np.abs(out - base).max(axis=(0, 1, 3))
    assert changed[2] > 1e-4 and np.all(np.delete(changed, 2) == 0.0)


def test_residual_stack_structure():
    net = _net(num_blocks=4, horizontal_kernel=3)
    assert len(net.reduce_convs) == len(net.row_convs) == len(net.causal_convs) == len(net.expand_convs) == 4
    assert all(layer.kernel.shape == (2, 1, 8, 8) for layer in net.causal_convs)
    assert all(layer.kernel.shape == (1, 3, 8, 8) for layer in net.row_convs)
    assert net.expand_convs[0].kernel.shape == (1, 1, 8, D)
    # Zero residual branches: the stack is ReLU(z).
    for layer in net.expand_convs:
        layer.kernel.assign(tf.zeros_like(layer.kernel))
        layer.bias.assign(tf.zeros_like(layer.bias))
    z = _z(4)
    np.testing.assert_array_equal(np.asarray(net(z)), np.maximum(z, 0.0))
    assert len(_net(num_blocks=2, horizontal_kernel=1).row_convs) == 0


def test_each_step_has_its_own_linear_map():
    predictor = CPCPredictor(steps=[1, 2, 3], output_dim=6)
    c = _z(5)
    outs = predictor(c)
    assert len(outs) == 3 and all(tuple(o.shape) == (2, G, G, 6) for o in outs)
    kernels = [layer.kernel for layer in predictor.step_maps]
    assert len({id(k) for k in kernels}) == 3 and len(predictor.trainable_weights) == 3
    assert all(np.abs(kernels[0].numpy() - k.numpy()).max() > 1e-3 for k in kernels[1:])
    # Linear, per position: zhat_k[b, i, j] = W_k c[b, i, j].
    for out, kernel in zip(outs, kernels):
        np.testing.assert_allclose(np.asarray(out), c @ kernel.numpy(), rtol=1e-5, atol=1e-6)
    # Changing W_2 changes the step-2 predictions only.
    kernels[1].assign(kernels[1] + 1.0)
    again = predictor(c)
    np.testing.assert_array_equal(np.asarray(again[0]), np.asarray(outs[0]))
    np.testing.assert_array_equal(np.asarray(again[2]), np.asarray(outs[2]))
    assert np.abs(np.asarray(again[1]) - np.asarray(outs[1])).max() > 1e-3
    assert CPCPredictor(steps=(2,), use_bias=True)(c)[0].shape == (2, G, G, D)


def test_save_reload_and_checkpoint(tmp_path):
    z_in = keras.Input((G, G, D))
    context = CPCContextNetwork(num_blocks=2, hidden_dim=8, name="context")
    predictor = CPCPredictor(steps=[1, 3], output_dim=5, use_bias=True, name="predictor")
    model = keras.Model(z_in, predictor(context(z_in)))
    for config, cls in ((context.get_config(), CPCContextNetwork), (predictor.get_config(), CPCPredictor)):
        assert cls.from_config(config).get_config() == config
    path = str(tmp_path / "cpc_head.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("context"), CPCContextNetwork)
    assert loaded.get_layer("predictor").steps == (1, 3)
    z = _z(6)
    for a, b in zip(loaded(z), model(z)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Every variable is in TensorFlow's object graph (lists of layers are tracked).
    ckpt = tf.train.Checkpoint(context=context, predictor=predictor).write(str(tmp_path / "ckpt"))
    other_c = CPCContextNetwork(num_blocks=2, hidden_dim=8)
    other_p = CPCPredictor(steps=[1, 3], output_dim=5, use_bias=True)
    other_p(other_c(z))
    tf.train.Checkpoint(context=other_c, predictor=other_p).read(ckpt).assert_consumed()
    for a, b in zip(other_p(other_c(z)), model(z)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("kwargs,word", [({"num_blocks": 0}, "num_blocks"), ({"hidden_dim": 2.5}, "hidden_dim"),
                                         ({"horizontal_kernel": 2}, "odd")])
def test_bad_context_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        CPCContextNetwork(**kwargs)


@pytest.mark.parametrize("steps", [[], [0, 1], [1, 1], [1.5], None])
def test_bad_steps(steps):
    with pytest.raises(ValueError, match="steps"):
        CPCPredictor(steps=steps)
