"""AMDIM as a method: the step's loss against numpy from the same encoder outputs, the train step against an
independent SGD update, learning on real images, the r1 representation, save / load, export and options."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.config import TrainConfig, load_flagfile
from tfssl.encoders.amdim import build_amdim_encoder
from tfssl.losses.amdim import amdim_source_locations
from tfssl.methods import AMDIM, build_method
from method_data import fashion_views, host_batch

SIZE, BATCH = 16, 4
FLAG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "flags")
TINY = dict(ndf=4, n_rkhs=8, n_depth=1)


def numpy_nce(src, trg, clip, weight):
    """One global-to-local term: source i's positive is image i at location l, negatives every location of
    every other image; mean over (i, l) of -log softmax; penalty weight * mean(raw score^2)."""
    n, locations, d = trg.shape
    raw = np.einsum("id,jld->ijl", src, trg) / np.sqrt(d)
    s = clip * np.tanh(raw / clip)
    total = 0.0
    for i in range(n):
        negatives = np.concatenate([s[i, j] for j in range(n) if j != i]) if n > 1 else np.zeros(0)
        for l in range(locations):
            total += np.log(np.exp(s[i, i, l]) + np.exp(negatives).sum()) - s[i, i, l]
    return total / (n * locations), weight * np.mean(raw ** 2)


def numpy_amdim(a, b, locations, clip=20.0, weight=0.05):
    """Seed 000's L_AMDIM: mean of N(1->5), N(1->7), N(5->5), each averaged over both directions, + the penalty."""
    flat = {k: v.reshape(len(v), -1, v.shape[-1]).astype(np.float64) for k, v in {**a, **b}.items()}
    n = len(flat["a1"])
    src5a = flat["a5"][np.arange(n), locations[0]]
    src5b = flat["b5"][np.arange(n), locations[1]]
    pairs = [((flat["a1"][:, 0], flat["b5"]), (flat["b1"][:, 0], flat["a5"])),
             ((flat["a1"][:, 0], flat["b7"]), (flat["b1"][:, 0], flat["a7"])),
             ((src5a, flat["b5"]), (src5b, flat["a5"]))]
    terms, penalties = [], []
    for forward, backward in pairs:
        (lf, pf), (lb, pb) = numpy_nce(*forward, clip, weight), numpy_nce(*backward, clip, weight)
        terms.append((lf + lb) / 2)
        penalties += [pf, pb]
    return np.mean(terms) + np.mean(penalties)


def _model(seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    model = AMDIM(build_amdim_encoder(SIZE, **TINY), seed=seed, **kwargs)
    model.build_heads()
    return model


def _views(seed=0, batch=BATCH):
    rng = np.random.default_rng(seed)
    v1 = rng.uniform(size=(batch, SIZE, SIZE, 3)).astype(np.float32)
    v2 = np.clip(v1 + 0.1 * rng.normal(size=v1.shape), 0, 1).astype(np.float32)
    return tf.constant(v1), tf.constant(v2)


def _wake(model, seed):
    """Gives the zero-initialised convolutions small random weights, so every variable has a gradient."""
    rng = np.random.default_rng(seed)
    for v in model.encoder.trainable_variables:
        if not np.any(v.numpy()):
            v.assign(0.1 * rng.normal(size=v.shape).astype(np.float32))


def _endpoints(model, v1, v2):
    out = model.encoder(tf.concat([v1, v2], 0), training=True)
    return ({f"a{k[1]}": out[k][:BATCH].numpy() for k in out}, {f"b{k[1]}": out[k][BATCH:].numpy() for k in out})


def test_step_loss_matches_numpy():
    model = _model(seed=3, clip=5.0, penalty_weight=0.1)
    _wake(model, 0)
    v1, v2 = _views()
    out = model.compute_loss((v1, v2), host_batch(v1, v2, labels=tf.zeros([BATCH], tf.int64)))
    a, b = _endpoints(model, v1, v2)  # same BN batch statistics as the step's single encoder call
    locations = amdim_source_locations(tf.constant([3, 0], tf.int64), BATCH, 25).numpy()  # step 0, seed 3
    np.testing.assert_allclose(float(out.value), numpy_amdim(a, b, locations, 5.0, 0.1), rtol=1e-5)
    np.testing.assert_allclose(out.features.numpy(), a["a1"].reshape(BATCH, -1), rtol=1e-6)
    wrong = amdim_source_locations(tf.constant([3, 1], tf.int64), BATCH, 25).numpy()  # positive control
    assert abs(float(out.value) - numpy_amdim(a, b, wrong, 5.0, 0.1)) > 1e-5


def tf_amdim(a, b, locations):
    """The loss written again with TensorFlow ops, for the gradient (clip 20, penalty 0.05)."""
    def nce(src, trg):
        n, d = src.shape[0], src.shape[-1]
        raw = tf.einsum("id,jld->ijl", src, trg) / np.sqrt(d)
        s = 20.0 * tf.tanh(raw / 20.0)
        positive = tf.linalg.diag_part(tf.transpose(s, [2, 0, 1]))  # [L, n]: s[i, i, l]
        others = tf.exp(s) * (1.0 - tf.eye(n))[:, :, None]
        negatives = tf.reduce_sum(others, axis=[1, 2])  # [n]
        loss = tf.reduce_mean(tf.math.log(tf.exp(positive) + negatives[None]) - positive)
        return loss, 0.05 * tf.reduce_mean(raw ** 2)

    flat = {k: tf.reshape(v, [BATCH, -1, v.shape[-1]]) for k, v in {**a, **b}.items()}
    src5a = tf.gather(flat["a5"], locations[0], axis=1, batch_dims=1)
    src5b = tf.gather(flat["b5"], locations[1], axis=1, batch_dims=1)
    parts = [nce(s, t) for s, t in ((flat["a1"][:, 0], flat["b5"]), (flat["b1"][:, 0], flat["a5"]),
                                     (flat["a1"][:, 0], flat["b7"]), (flat["b1"][:, 0], flat["a7"]),
                                     (src5a, flat["b5"]), (src5b, flat["a5"]))]
    return tf.add_n([p[0] for p in parts]) / 6 + tf.add_n([p[1] for p in parts]) / 6


def test_train_step_is_an_sgd_step_on_that_loss():
    model, reference = _model(linear_probe=False), _model(linear_probe=False)  # same seed: same weights
    _wake(model, 1)
    _wake(reference, 1)
    v1, v2 = _views(1)
    lr = 0.05
    locations = amdim_source_locations(tf.constant([0, 0], tf.int64), BATCH, 25)
    with tf.GradientTape() as tape:
        out = reference.encoder(tf.concat([v1, v2], 0), training=True)
        loss = tf_amdim({f"a{k[1]}": out[k][:BATCH] for k in out}, {f"b{k[1]}": out[k][BATCH:] for k in out},
                        locations)
    variables = reference.encoder.trainable_variables
    expected = [v.numpy() - lr * g.numpy() for v, g in zip(variables, tape.gradient(loss, variables))]
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr))
    logs = model.train_step(host_batch(v1, v2, labels=tf.zeros([BATCH], tf.int64)))
    np.testing.assert_allclose(float(logs["loss"]), float(loss), rtol=1e-5)
    moved = 0
    for before, want, after in zip(variables, expected, model.encoder.trainable_variables):
        np.testing.assert_allclose(after.numpy(), want, rtol=1e-4, atol=1e-6, err_msg=after.path)
        moved += not np.allclose(after.numpy(), before.numpy())
    # Positive control: every variable took a step, except (up to rounding) the biases a batch norm follows,
    # whose gradient is zero: BN removes any constant shift.
    before_bn = [v for v in variables if v.path.endswith("shortcut/bias") or v.path.endswith("shortcut_conv/bias")]
    assert moved >= len(variables) - len(before_bn) and before_bn


def test_the_step_seed_changes_the_source_locations():
    model = _model()
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    first = model.step_seed().numpy()
    model.optimizer.iterations.assign(7)
    assert list(first) == [0, 0] and list(model.step_seed().numpy()) == [0, 7]


@pytest.mark.slow
def test_short_fit_lowers_the_loss():
    keras.utils.set_random_seed(0)
    model = AMDIM(build_amdim_encoder(SIZE, ndf=8, n_rkhs=32, n_depth=1), num_classes=10)
    model.build_heads()
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    history = model.fit(fashion_views(SIZE, 16), steps_per_epoch=1, epochs=30, verbose=0)
    losses = np.array(history.history["loss"])
    assert np.all(np.isfinite(losses)) and losses[-5:].mean() < losses[:5].mean() - 0.3, losses


def test_representation_is_r1_and_save_load_round_trip(tmp_path):
    model = _model(num_classes=10)
    _wake(model, 2)
    images = _views(2)[0]
    rep = model.representation()
    assert rep is model.representation() and rep.output.shape[-1] == TINY["n_rkhs"]
    want = model.encoder(images, training=False)["r1"].numpy().reshape(BATCH, -1)
    np.testing.assert_allclose(rep(images, training=False).numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(model(images).numpy(), want, rtol=1e-6)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.train_step(host_batch(*_views(3), labels=tf.zeros([BATCH], tf.int64)))
    path = str(tmp_path / "amdim.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, AMDIM) and loaded.clip == 20.0 and loaded.penalty_weight == 0.05
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(loaded.representation()(images).numpy(), rep(images).numpy(), rtol=1e-6)


def test_export_round_trip(tmp_path):
    from tfssl.augment import center_resize
    from tfssl.export import export_encoder

    model = _model()
    _wake(model, 4)
    version_dir = export_encoder(model.representation(), str(tmp_path / "serving"), SIZE, warmup=False)
    images = np.random.default_rng(1).integers(0, 256, size=(3, 28, 28, 1)).astype(np.uint8)
    served = tf.saved_model.load(version_dir).signatures["serving_default"](images=tf.constant(images, tf.float32))
    want = model.representation()(center_resize(tf.constant(images), SIZE), training=False).numpy()
    assert served["embedding"].shape == (3, TINY["n_rkhs"])
    np.testing.assert_allclose(served["embedding"].numpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("options, size", [(dict(ndf=-1), 28), (dict(clip=-1.0), 28), (dict(translate=-2), 28),
                                           (dict(crop_area="0.5"), 28), (dict(preset="huge"), 28), ({}, 48)])
def test_bad_options_raise_one_line(options, size):
    config = TrainConfig(model_dir="/tmp/x", method="amdim", image_size=size, method_options=options)
    with pytest.raises(ValueError) as error:
        config.validate()
    assert "\n" not in str(error.value)


def test_flagfiles_build_the_papers_parts():
    config = load_flagfile(os.path.join(FLAG_DIR, "amdim_cifar10.flags"), model_dir="/tmp/x")
    options = config.options()
    assert (options.widths(), options.clip, options.penalty_weight, config.optimizer, config.momentum,
            config.learning_rate, config.weight_decay, config.epochs, config.image_size) == (
        dict(ndf=320, n_rkhs=1280, n_depth=10), 20.0, 0.05, "adamw", 0.8, 2e-4, 1e-5, 300, 32)
    recipe = options.augment(config).get_config()
    assert (recipe["crop_area"], recipe["translate"], recipe["jitter"], recipe["grayscale_prob"]) == (
        None, 4, (0.4, 0.4, 0.4, 0.2), 0.25)
    small = load_flagfile(os.path.join(FLAG_DIR, "amdim_fashion_mnist.flags"), image_size=16, augment_on="device",
                          mixed_precision="none")
    model = build_method(small, num_classes=10)
    assert isinstance(model, AMDIM) and model.representation().output.shape[-1] == 256
