"""Barlow Twins and VICReg: the step's loss against float64 numpy on the model's own projector outputs,
one SGD step against an independent gradient, a short run that learns, .keras round trip, build_method
from a TrainConfig.

The gradient references (`_tf_barlow`, `_tf_vicreg`) are written here from the papers' formulas in
TensorFlow, not taken from `tfssl.losses`, and pushed through the model's own encoder and projector
(one call per view, BN in training mode, as the step does); a step with SGD (no momentum) must move
every trainable variable by -LR times that gradient.

(The 2-replica == 1-device check of both methods is in test_siamese_distributed.py.)
"""
import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from method_data import fashion_views, host_batch, random_views
from tfssl.config import TrainConfig
from tfssl.heads import ProjectionHead
from tfssl.methods import METHODS, BarlowTwins, VICReg, build_method

SIZE, BATCH, NUM_CLASSES, PROJ_DIM = 8, 8, 3, 6
LR = 0.1


def _model(method, tiny_encoder, seed=0, image_size=SIZE, num_classes=NUM_CLASSES, **weights):
    keras.utils.set_random_seed(seed)
    projector = ProjectionHead(num_layers=2, output_dim=PROJ_DIM, hidden_dim=12, last_bn=False, name="projector")
    cls = BarlowTwins if method == "barlow_twins" else VICReg
    model = cls(tiny_encoder(image_size), projector, num_classes=num_classes, seed=seed, **weights)
    model.build_heads()
    return model


def _views(seed=0, batch=BATCH):
    return random_views(seed, batch, SIZE, NUM_CLASSES, noise=0.2)


def _numpy_barlow(z1, z2, lambd):
    """Paper eq. (1)-(2): standardise each feature (biased variance, eps 1e-5), C = z1n^T z2n / N."""
    def standardize(z):
        return (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)

    c = standardize(z1).T @ standardize(z2) / len(z1)
    on = np.sum((1 - np.diag(c)) ** 2)
    off = np.sum(c ** 2) - np.sum(np.diag(c) ** 2)
    return on + lambd * off, {"on_diagonal": on, "off_diagonal": off}


def _numpy_vicreg(z1, z2, sim, var, cov):
    """Authors' code: MSE invariance, mean of the two std hinges (eps 1e-4), sum of the covariance terms / d."""
    def v(z):
        return np.mean(np.maximum(0, 1 - np.sqrt(z.var(0, ddof=1) + 1e-4)))

    def c(z):
        m = np.cov(z, rowvar=False)
        return (np.sum(m ** 2) - np.sum(np.diag(m) ** 2)) / z.shape[1]

    parts = {"invariance": np.mean((z1 - z2) ** 2), "variance": (v(z1) + v(z2)) / 2, "covariance": c(z1) + c(z2)}
    return sim * parts["invariance"] + var * parts["variance"] + cov * parts["covariance"], parts


@pytest.mark.parametrize("method", ["barlow_twins", "vicreg"])
def test_step_loss_matches_numpy(method, tiny_encoder):
    weights = dict(lambd=0.02) if method == "barlow_twins" else dict(sim_weight=3.0, var_weight=7.0, cov_weight=2.0)
    model = _model(method, tiny_encoder, seed=1, **weights)
    data = _views(seed=2)
    start = model.get_weights()
    # The model's own projector outputs on the fixed views (training mode: BN with batch statistics).
    z1 = np.asarray(model.embed(data[0])[1], np.float64)
    z2 = np.asarray(model.embed(data[1])[1], np.float64)
    model.set_weights(start)  # undo the BN moving-statistics update of the calls above
    if method == "barlow_twins":
        want, parts = _numpy_barlow(z1, z2, 0.02)
    else:
        want, parts = _numpy_vicreg(z1, z2, 3.0, 7.0, 2.0)
    unit = z1 / np.linalg.norm(z1, axis=1, keepdims=True), z2 / np.linalg.norm(z2, axis=1, keepdims=True)
    want_std = np.mean(np.std(np.concatenate(unit), axis=0))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01))
    logs = model.train_step(host_batch(data[0], data[1], labels=data[2]))
    np.testing.assert_allclose(float(logs["loss"]), want, rtol=1e-4)
    for name, value in parts.items():
        np.testing.assert_allclose(float(logs[name]), value, rtol=1e-4, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(float(logs["collapse_std"]), want_std, rtol=1e-4)
    assert {"probe_loss", "probe_acc"} <= set(logs)
    # How the step moves the weights: test_train_step_matches_independent_sgd_update.


def _tf_barlow(z1, z2, lambd, standardise=True):
    """Barlow Twins eq. (1)-(2) in TF: features standardised over the batch (biased variance, eps 1e-5,
    as BatchNorm without affine parameters), C = z1n^T z2n / N, sum (1 - C_ii)^2 + lambd sum_{i != j} C_ij^2.
    `standardise=False` (raw features in C) is a positive control only."""
    n = tf.cast(tf.shape(z1)[0], tf.float32)

    def standardize(z):
        if not standardise:
            return z
        centred = z - tf.reduce_mean(z, axis=0, keepdims=True)
        return centred / tf.sqrt(tf.reduce_sum(centred * centred, axis=0, keepdims=True) / n + 1e-5)

    c = tf.einsum("ni,nj->ij", standardize(z1), standardize(z2)) / n
    diagonal = tf.linalg.diag_part(c)
    on = tf.reduce_sum((1.0 - diagonal) ** 2)
    off = tf.reduce_sum(c * c) - tf.reduce_sum(diagonal * diagonal)
    return on + lambd * off


def _tf_vicreg(z1, z2, sim, var, cov):
    """VICReg eq. (1)-(6) with the authors' code's averaging: MSE invariance; mean over dims of
    max(0, 1 - sqrt(unbiased var + 1e-4)), averaged over the views; sum_{i != j} Cov_ij^2 / d (unbiased
    covariance), summed over the views."""
    n = tf.cast(tf.shape(z1)[0], tf.float32)
    d = tf.cast(tf.shape(z1)[1], tf.float32)
    off_mask = 1.0 - tf.eye(int(z1.shape[1]))

    def hinge_and_cov(z):
        centred = z - tf.reduce_mean(z, axis=0, keepdims=True)
        m = tf.einsum("ni,nj->ij", centred, centred) / (n - 1.0)
        std = tf.sqrt(tf.linalg.diag_part(m) + 1e-4)
        return tf.reduce_mean(tf.maximum(0.0, 1.0 - std)), tf.reduce_sum(m * m * off_mask) / d

    invariance = tf.reduce_mean(tf.reduce_sum((z1 - z2) ** 2, axis=1)) / d
    v1, c1 = hinge_and_cov(z1)
    v2, c2 = hinge_and_cov(z2)
    return sim * invariance + var * (v1 + v2) / 2.0 + cov * (c1 + c2)


def _probe_cross_entropy(model, h, labels):
    """The online probe's mean cross-entropy on constant features (every example here is labelled)."""
    logits = tf.matmul(tf.stop_gradient(h), model.probe.kernel) + model.probe.bias
    return -tf.reduce_mean(tf.gather(tf.nn.log_softmax(logits, axis=1), labels, batch_dims=1))


def _reference_gradients(model, data, pair_loss, joint=False):
    """Gradient of pair_loss(z1, z2) + probe cross-entropy w.r.t. every trainable variable, through the
    model's encoder and projector with one training-mode call per view (BN statistics per view);
    `joint=True` (both views in one call, BN statistics over 2N) is a positive control only."""
    view1, view2, labels = data
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        if joint:
            h = model.encoder(tf.concat([view1, view2], axis=0), training=True)
            h1 = h[:BATCH]
            z1, z2 = tf.split(model.projector(h, training=True), 2, axis=0)
        else:
            h1 = model.encoder(view1, training=True)
            z1 = model.projector(h1, training=True)
            z2 = model.projector(model.encoder(view2, training=True), training=True)
        loss = pair_loss(z1, z2)
        probe_loss = _probe_cross_entropy(model, h1, labels)
        total = loss + probe_loss
    grads = tape.gradient(total, variables)
    assert all(g is not None for g in grads)
    return variables, [g.numpy() for g in grads], float(loss), float(probe_loss)


def _assert_sgd_updates(variables, before, grads):
    """Each variable moved by -LR * g (rtol 1e-3, atol 1e-3 of its largest step), and something moved.

    Both losses are unchanged by adding a constant to one output feature (Barlow Twins standardises
    it, VICReg compares z1 - z2 and centres), so the projector's last bias has a zero gradient in exact
    arithmetic: where the reference gradient is only float32 noise (< 1e-5 of the largest step of any
    variable), the update must be as small. Returns the paths of those variables.
    """
    largest = max(np.max(np.abs(LR * g)) for g in grads)
    assert largest > 1e-3, largest  # the step did something
    noise_only = []
    for v, w0, g in zip(variables, before, grads):
        update, want = v.numpy() - w0, -LR * g
        scale = np.max(np.abs(want))
        if scale < 1e-5 * largest:
            assert np.max(np.abs(update)) < 1e-5 * largest, v.path
            noise_only.append(v.path)
            continue
        np.testing.assert_allclose(update, want, rtol=1e-3, atol=1e-3 * scale, err_msg=v.path)
    return noise_only


def _relative_gap(grads, other):
    """Largest relative gap max|g - o| / max|o| over the variables (those with a gradient above noise)."""
    largest = max(np.max(np.abs(o)) for o in other)
    return max(np.max(np.abs(g - o)) / np.max(np.abs(o)) for g, o in zip(grads, other)
               if np.max(np.abs(o)) > 1e-5 * largest)


@pytest.mark.parametrize("method", ["barlow_twins", "vicreg"])
def test_train_step_matches_independent_sgd_update(method, tiny_encoder):
    """One SGD step (no momentum) moves every trainable variable by -LR * g, g the gradient of the loss
    written above plus the probe's cross-entropy, through the model's encoder and projector as they
    were before the step."""
    if method == "barlow_twins":
        weights = dict(lambd=0.3)
        reference = functools.partial(_tf_barlow, lambd=0.3)
        controls = {"lambda 0": functools.partial(_tf_barlow, lambd=0.0),
                    "no standardisation": functools.partial(_tf_barlow, lambd=0.3, standardise=False)}
    else:
        weights = dict(sim_weight=3.0, var_weight=7.0, cov_weight=2.0)
        reference = functools.partial(_tf_vicreg, sim=3.0, var=7.0, cov=2.0)
        controls = {"no covariance": functools.partial(_tf_vicreg, sim=3.0, var=7.0, cov=0.0),
                    "no variance": functools.partial(_tf_vicreg, sim=3.0, var=0.0, cov=2.0)}
    model = _model(method, tiny_encoder, seed=5, **weights)
    data = _views(seed=6)
    start = model.get_weights()
    variables, grads, want_loss, want_probe_loss = _reference_gradients(model, data, reference)
    gaps = {}
    for name, control in controls.items():
        model.set_weights(start)
        gaps[name] = _relative_gap(grads, _reference_gradients(model, data, control)[1])
    model.set_weights(start)
    gaps["one encoder call for both views"] = _relative_gap(grads, _reference_gradients(model, data, reference,
                                                                                          joint=True)[1])
    model.set_weights(start)  # undo the BN moving-statistics updates of the reference passes
    before = [v.numpy() for v in variables]
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=LR, momentum=0.0))
    logs = model.train_step(host_batch(data[0], data[1], labels=data[2]))

    np.testing.assert_allclose(float(logs["loss"]), want_loss, rtol=1e-5)
    np.testing.assert_allclose(float(logs["probe_loss"]), want_probe_loss, rtol=1e-5)
    assert _assert_sgd_updates(variables, before, grads) == ["projector/dense1/bias"]
    # A clearly different loss (or BN statistics over both views at once) has a clearly different
    # gradient (seen: relative gaps 0.5 to 3): the check above can fail.
    assert min(gaps.values()) > 0.05, gaps


@pytest.mark.parametrize("method,learning_rate", [("barlow_twins", 0.01), pytest.param("vicreg", 0.002, marks=pytest.mark.slow)])
def test_short_fit_lowers_the_loss(method, learning_rate, tiny_encoder):
    model = _model(method, tiny_encoder, seed=0, image_size=12, num_classes=10)
    data = fashion_views(12, 16)
    # Judged on one fixed pair of views before and after: per-step losses of fresh views are too noisy.
    view1, view2 = next(iter(data))["views"]

    def fixed_loss():
        return float(model.pair_loss(model.embed(view1)[1], model.embed(view2)[1])[0])

    before = fixed_loss()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9))
    history = model.fit(data, steps_per_epoch=1, epochs=30, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    after = fixed_loss()
    assert after < 0.8 * before, (before, after)


@pytest.mark.parametrize("method", ["barlow_twins", "vicreg"])
def test_save_and_reload_round_trip(method, tiny_encoder, tmp_path):
    weights = dict(lambd=0.03) if method == "barlow_twins" else dict(sim_weight=5.0, var_weight=6.0, cov_weight=0.5)
    model = _model(method, tiny_encoder, seed=3, **weights)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9))
    view1, view2, labels = _views(seed=4)
    model.train_step(host_batch(view1, view2, labels=labels))
    path = str(tmp_path / f"{method}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model) and not loaded.projector.last_bn
    for name, value in weights.items():
        assert getattr(loaded, name) == value
    assert int(loaded.optimizer.iterations.numpy()) == 1
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = _views(seed=5)[0]
    np.testing.assert_allclose(loaded.projector(loaded.encoder(x)).numpy(), model.projector(model.encoder(x)).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_build_method_from_config(tiny_encoder_in_build_method):
    assert METHODS["barlow_twins"] is BarlowTwins and METHODS["vicreg"] is VICReg
    heads = dict(proj_layers=3, proj_dim=10, proj_hidden_dim=20)
    barlow = build_method(TrainConfig(method="barlow_twins", image_size=SIZE,
                                      method_options={"lambd": 0.01, **heads}), num_classes=4)
    assert isinstance(barlow, BarlowTwins) and barlow.lambd == 0.01 and barlow.probe is not None
    assert barlow.projector.num_layers == 3 and barlow.projector.output_dim == 10 and not barlow.projector.last_bn
    vicreg = build_method(TrainConfig(method="vicreg", image_size=SIZE, method_options={"var_weight": 10.0, **heads}))
    assert isinstance(vicreg, VICReg) and (vicreg.sim_weight, vicreg.var_weight, vicreg.cov_weight) == (25, 10, 1)
    assert vicreg.projector.hidden_dim == 20 and not vicreg.projector.last_bn and vicreg.probe is None


def test_invalid_arguments_raise(tiny_encoder):
    projector = ProjectionHead(num_layers=1, output_dim=4, last_bn=False)
    with pytest.raises(ValueError, match="lambd"):
        BarlowTwins(tiny_encoder(SIZE), projector, lambd=-1.0)
    with pytest.raises(ValueError, match="var_weight"):
        VICReg(tiny_encoder(SIZE), projector, var_weight=-0.5)
    with pytest.raises(ValueError, match="--barlow_twins_lambd"):
        TrainConfig(model_dir="x", method="barlow_twins", method_options={"lambd": -1.0}).validate()
    with pytest.raises(ValueError, match="--vicreg_cov_weight"):
        TrainConfig(model_dir="x", method="vicreg", method_options={"cov_weight": -1.0}).validate()
