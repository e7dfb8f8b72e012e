"""YADIM as a method: the step's loss against numpy from the same r1 features, the train step against an
independent SGD update, the swappable parts (similarity, pipeline), save / load and options."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.augment.amdim_views import AMDIMAugment
from tfssl.config import TrainConfig, load_flagfile
from tfssl.methods import YADIM, build_method
from method_data import fashion_views, host_batch

SIZE, BATCH = 16, 5
FLAG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "flags")


def numpy_yadim(h1, h2, cosine=False, temperature=1.0):
    """-log(exp(phi(a_i, b_i)) / sum_j exp(phi(a_i, b_j))), both directions averaged; phi = dot / temperature."""
    a, b = h1.astype(np.float64), h2.astype(np.float64)
    if cosine:
        a, b = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
    total = 0.0
    for x, y in ((a, b), (b, a)):
        for i in range(len(x)):
            phi = x[i] @ y.T / temperature
            total += np.log(np.exp(phi - phi.max()).sum()) + phi.max() - phi[i]
    return total / (2 * len(a))


def _model(seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    config = TrainConfig(model_dir="/tmp/x", method="yadim", image_size=SIZE, linear_probe=False,
                         method_options=dict(preset="tiny", **kwargs))
    return build_method(config)


def _views(seed=0):
    rng = np.random.default_rng(seed)
    v1 = rng.uniform(size=(BATCH, SIZE, SIZE, 3)).astype(np.float32)
    v2 = np.clip(v1 + 0.1 * rng.normal(size=v1.shape), 0, 1).astype(np.float32)
    return tf.constant(v1), tf.constant(v2)


def _r1(model, v1, v2):
    return tf.reshape(model.encoder(tf.concat([v1, v2], 0), training=True)["r1"], [2 * BATCH, -1])


@pytest.mark.parametrize("similarity, temperature", [("dot", 1.0), ("cosine", 0.5)])
def test_step_loss_matches_numpy(similarity, temperature):
    model = _model(similarity=similarity, temperature=temperature)
    assert set(model.encoder.output) == {"r1"}  # the last map only: no unused r5 / r7 embeddings
    v1, v2 = _views()
    out = model.compute_loss((v1, v2), host_batch(v1, v2, labels=tf.zeros([BATCH], tf.int64)))
    h = _r1(model, v1, v2).numpy()
    want = numpy_yadim(h[:BATCH], h[BATCH:], similarity == "cosine", temperature)
    np.testing.assert_allclose(float(out.value), want, rtol=1e-5)
    other = numpy_yadim(h[:BATCH], h[BATCH:], similarity != "cosine", temperature)  # positive control
    assert abs(other - want) > 1e-3


def test_train_step_is_an_sgd_step_on_that_loss():
    model, reference = _model(), _model()
    v1, v2 = _views(1)
    lr = 0.05
    with tf.GradientTape() as tape:
        h = _r1(reference, v1, v2)
        logits = tf.matmul(h[:BATCH], h[BATCH:], transpose_b=True)
        labels = tf.range(BATCH)
        loss = 0.5 * tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits) +
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.transpose(logits)))
    variables = reference.encoder.trainable_variables
    grads = tape.gradient(loss, variables)
    expected = [v.numpy() - lr * g.numpy() for v, g in zip(variables, grads)]
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr))
    logs = model.train_step(host_batch(v1, v2, labels=tf.zeros([BATCH], tf.int64)))
    np.testing.assert_allclose(float(logs["loss"]), float(loss), rtol=1e-5)
    moving = 0
    for before, want, after, g in zip(variables, expected, model.encoder.trainable_variables, grads):
        np.testing.assert_allclose(after.numpy(), want, rtol=1e-4, atol=1e-5, err_msg=after.path)
        moving += not np.allclose(after.numpy(), before.numpy())
    assert moving >= len(variables) // 2  # positive control (zero-initialised units start without gradient)


@pytest.mark.slow
def test_short_fit_lowers_the_loss():
    model = _model(ndf=8, n_rkhs=32)
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    history = model.fit(fashion_views(SIZE, 16), steps_per_epoch=1, epochs=30, verbose=0)
    losses = np.array(history.history["loss"])
    assert np.all(np.isfinite(losses)) and losses[-5:].mean() < losses[:5].mean() - 0.3, losses


def test_pipelines_and_save_load(tmp_path):
    config = TrainConfig(model_dir="/tmp/x", method="yadim", image_size=28, method_options=dict(pipeline="union"))
    union = config.options().augment(config).get_config()
    assert (union["crop_area"], union["translate"], union["color_drop_prob"], union["grayscale_prob"]) == (
        (0.3, 1.0), 4, 0.5, 0.25)
    config.method_options = dict(pipeline="cpc")
    cpc = config.options().augment(config).get_config()
    assert (cpc["translate"], cpc["jitter_prob"], cpc["color_drop_prob"]) == (0, 0.0, 1.0)
    config.method_options = dict(pipeline="amdim")
    assert config.options().augment(config).get_config()["color_drop_prob"] == 0.0

    model = _model(similarity="cosine", temperature=0.2, pipeline="amdim")
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.train_step(host_batch(*_views(2), labels=tf.zeros([BATCH], tf.int64)))
    path = str(tmp_path / "yadim.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, YADIM) and (loaded.similarity, loaded.temperature) == ("cosine", 0.2)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    images = _views(3)[0]
    np.testing.assert_allclose(loaded.representation()(images).numpy(), model.representation()(images).numpy(),
                               rtol=1e-6)


def numpy_nt_xent(h1, h2, temperature):
    """SimCLR's NT-Xent over the 2N normalised views: each view's positive is its other view, the candidates
    are the 2N - 1 views other than itself; the mean over the 2N anchors."""
    z = np.concatenate([h1, h2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n = len(h1)
    sim = z @ z.T / temperature
    total = 0.0
    for i in range(2 * n):
        others = [k for k in range(2 * n) if k != i]
        total += np.log(np.exp(sim[i, others]).sum()) - sim[i, (i + n) % (2 * n)]
    return total / (2 * n)


def test_ablation_parts_nt_xent_loss_resnet_backbone_simclr_views(tmp_path):
    """The ablation's swaps: NT-Xent on r1 (against numpy; NCE on the same features as the positive control),
    a --encoder backbone whose pooled features are r1, SimCLR's views; the swapped model saves and loads."""
    from tfssl.augment import SimCLRAugment

    keras.utils.set_random_seed(0)
    config = TrainConfig(model_dir="/tmp/x", method="yadim", image_size=SIZE, linear_probe=False, encoder="resnet18",
                         width_multiplier=0.125, method_options=dict(backbone="config", loss="nt_xent",
                                                                     temperature=0.5, pipeline="simclr"))
    config.validate()
    assert isinstance(config.options().augment(config), SimCLRAugment)
    model = build_method(config)
    assert model.encoder.output["r1"].shape[1:] == (1, 1, 64)  # ResNet-18 x0.125: 512 / 8 pooled features
    v1, v2 = _views()
    out = model.compute_loss((v1, v2), host_batch(v1, v2, labels=tf.zeros([BATCH], tf.int64)))
    h = _r1(model, v1, v2).numpy()
    np.testing.assert_allclose(float(out.value), numpy_nt_xent(h[:BATCH], h[BATCH:], 0.5), rtol=1e-5)
    assert abs(numpy_yadim(h[:BATCH], h[BATCH:], True, 0.5) - float(out.value)) > 1e-3  # NCE differs
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.train_step(host_batch(v1, v2, labels=tf.zeros([BATCH], tf.int64)))
    path = str(tmp_path / "yadim_resnet.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.loss == "nt_xent"
    np.testing.assert_allclose(loaded.representation()(v1).numpy(), model.representation()(v1).numpy(), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("options", [dict(similarity="l2"), dict(loss="l2"), dict(backbone="vgg"), dict(temperature=0.0), dict(clip=-1.0),
                                     dict(pipeline="both"), dict(color_drop_prob=2.0), dict(crop_area="1,0.2")])
def test_bad_options_raise_one_line(options):
    config = TrainConfig(model_dir="/tmp/x", method="yadim", image_size=28, method_options=options)
    with pytest.raises(ValueError) as error:
        config.validate()
    assert "\n" not in str(error.value)


def test_flagfiles():
    config = load_flagfile(os.path.join(FLAG_DIR, "yadim_cifar10.flags"), model_dir="/tmp/x")
    options = config.options()
    assert (options.widths()["ndf"], options.similarity, options.pipeline, config.optimizer) == (
        320, "dot", "union", "adamw")
    assert isinstance(options.augment(config), AMDIMAugment)
    small = load_flagfile(os.path.join(FLAG_DIR, "yadim_fashion_mnist.flags"), image_size=16, mixed_precision="none")
    assert isinstance(build_method(small, num_classes=10), YADIM)
