"""InvaSpread as a method: its step's loss against a numpy transcription of the paper's equations, the
gradient step against an independent SGD update, learning on real images, save / load and the flagfile."""
import os

import keras
import numpy as np
import tensorflow as tf

from tfssl.config import load_flagfile
from tfssl.heads import ProjectionHead
from tfssl.methods import InvaSpread, build_method
from method_data import fashion_views, host_batch

SIZE, BATCH, DIM = 8, 6, 5
FLAG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "flags")


def numpy_invaspread(z1, z2, tau):
    """Ye et al. 2019, eq. 3-6, over the 2B views: p = exp(x.xhat/tau) / Z with Z = sum over k != i of
    exp(x.x_k/tau), loss = -[sum log p + sum over k not in {i, ihat} of log(1 - exp(x.x_k/tau) / Z)] / 2B."""
    x = np.concatenate([z1, z2]).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    n2 = len(x)
    e = np.exp(x @ x.T / tau)
    total = 0.0
    for i in range(n2):
        partner = (i + n2 // 2) % n2
        z = sum(e[i, k] for k in range(n2) if k != i)
        total += np.log(e[i, partner] / z)
        total += sum(np.log(1.0 - e[i, k] / z) for k in range(n2) if k not in (i, partner))
    return -total / n2


def _model(tiny_encoder, seed=0, temperature=0.1, image_size=SIZE, **kwargs):
    keras.utils.set_random_seed(seed)
    projector = ProjectionHead(num_layers=1, output_dim=DIM, use_bn=False, name="projector")
    model = InvaSpread(tiny_encoder(image_size), projector, temperature=temperature, seed=seed, **kwargs)
    model.build_heads()
    return model


def _views(seed=0):
    rng = np.random.default_rng(seed)
    v1 = rng.uniform(size=(BATCH, SIZE, SIZE, 3)).astype(np.float32)
    v2 = np.clip(v1 + 0.1 * rng.normal(size=v1.shape), 0, 1).astype(np.float32)
    return tf.constant(v1), tf.constant(v2)


def test_step_loss_matches_the_papers_equations(tiny_encoder):
    model = _model(tiny_encoder, temperature=0.2)
    v1, v2 = _views()
    out = model.compute_loss((v1, v2), host_batch(v1, v2, labels=tf.zeros([BATCH], tf.int64)))
    # Reference embeddings: both views through the encoder in one batch, as the paper's siamese pass.
    z = model.projector(model.encoder(tf.concat([v1, v2], 0), training=True), training=True).numpy()
    np.testing.assert_allclose(float(out.value), numpy_invaspread(z[:BATCH], z[BATCH:], 0.2), rtol=1e-5)
    assert 0.0 <= float(out.metrics["positive_acc"]) <= 1.0


def test_train_step_is_an_sgd_step_on_that_loss(tiny_encoder):
    model = _model(tiny_encoder, linear_probe=False)
    reference = _model(tiny_encoder, linear_probe=False)  # same seed: same weights
    v1, v2 = _views(1)
    lr = 0.05
    with tf.GradientTape() as tape:
        z = reference.projector(reference.encoder(tf.concat([v1, v2], 0), training=True), training=True)
        z = tf.math.l2_normalize(z, axis=1)
        # The loss written out again in TensorFlow from the paper's terms (no library loss involved).
        e = tf.exp(tf.matmul(z, z, transpose_b=True) / 0.1)
        n2 = 2 * BATCH
        eye = tf.eye(n2)
        partner = tf.roll(eye, shift=BATCH, axis=1)
        total = tf.reduce_sum(e * (1 - eye), axis=1, keepdims=True)
        p = tf.reduce_sum(e * partner, axis=1) / total[:, 0]
        spread = tf.reduce_sum(tf.math.log(1 - e / total) * (1 - eye - partner), axis=1)
        loss = -tf.reduce_mean(tf.math.log(p) + spread)
    variables = reference.encoder.trainable_variables + reference.projector.trainable_variables
    expected = [v.numpy() - lr * g.numpy() for v, g in zip(variables, tape.gradient(loss, variables))]
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr))
    logs = model.train_step(host_batch(v1, v2, labels=tf.zeros([BATCH], tf.int64)))
    np.testing.assert_allclose(float(logs["loss"]), float(loss), rtol=1e-5)
    got = model.encoder.trainable_variables + model.projector.trainable_variables
    moved = 0
    for before, want, after in zip(variables, expected, got):
        np.testing.assert_allclose(after.numpy(), want, rtol=1e-4, atol=1e-6)
        moved += not np.allclose(after.numpy(), before.numpy())
    assert moved == len(got)  # positive control: every variable took a step


def test_short_fit_lowers_the_loss(tiny_encoder):
    steps = 25
    model = _model(tiny_encoder, image_size=16, num_classes=10)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.9))
    history = model.fit(fashion_views(16, 16), steps_per_epoch=1, epochs=steps, verbose=0)
    losses = np.array(history.history["loss"])
    assert np.all(np.isfinite(losses)) and losses[-5:].mean() < losses[:5].mean() - 0.3, losses
    assert np.array(history.history["positive_acc"])[-5:].mean() > 1.0 / 31  # above chance among 31 others


def test_save_and_reload_round_trip(tiny_encoder, tmp_path):
    model = _model(tiny_encoder, temperature=0.15)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1))
    v1, v2 = _views(2)
    model.train_step(host_batch(v1, v2, labels=tf.zeros([BATCH], tf.int64)))
    path = str(tmp_path / "invaspread.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, InvaSpread) and loaded.temperature == 0.15
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_flagfile_builds_the_papers_parts():
    config = load_flagfile(os.path.join(FLAG_DIR, "invaspread_fashion_mnist.flags"), image_size=16,
                           augment_on="device", mixed_precision="none")
    model = build_method(config, num_classes=10)
    assert isinstance(model, InvaSpread) and model.temperature == 0.1
    assert model.projector.output_dim == 128 and model.projector.num_layers == 1
    (group,) = model.augment.groups
    recipe = group.recipe.get_config()
    assert group.count == 2 and tuple(recipe["crop_area"]) == (0.2, 1.0) and recipe["jitter_prob"] == 1.0
