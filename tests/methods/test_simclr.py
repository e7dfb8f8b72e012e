"""SimCLR's train_step against an independent gradient computation, plus probe, views, fit, save, config.

The reference loss below is written from SimCLR eq. (1) with one 2N x 2N similarity matrix (the
library uses a different, replica-aware layout), so agreement checks the method, not a copy of it.
"""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.augment import SimCLRAugment, ViewRecipe, batch_seed
from tfssl.config import TrainConfig
from tfssl.encoders import build_encoder
from tfssl.heads import ProjectionHead
from tfssl.methods import SimCLR, build_method
from method_data import fashion_views, host_batch

SIZE, WIDTH, BATCH, NUM_CLASSES, PROJ_DIM = 8, 0.125, 4, 3, 8
LR = 0.1


def _simclr(seed=0, num_classes=NUM_CLASSES, linear_probe=True, augment=None, temperature=0.5,
            proj_layers=2, keep_layer=0, image_size=SIZE):
    keras.utils.set_random_seed(seed)
    encoder = build_encoder("resnet18", image_size, width_multiplier=WIDTH)
    projector = ProjectionHead(num_layers=proj_layers, output_dim=PROJ_DIM, keep_layer=keep_layer, name="projector")
    model = SimCLR(encoder, projector=projector, temperature=temperature, augment=augment,
                   num_classes=num_classes, linear_probe=linear_probe, seed=seed)
    model.build_heads()
    return model


def _host_views(seed=0, batch=BATCH, labels=None):
    """`(view1, view2, labels)` tensors of one host-augmented batch."""
    rng = np.random.default_rng(seed)
    view1 = rng.uniform(size=(batch, SIZE, SIZE, 3)).astype(np.float32)
    # The second view is a perturbed copy so positives are genuinely more similar than negatives.
    view2 = np.clip(view1 + 0.1 * rng.normal(size=view1.shape), 0, 1).astype(np.float32)
    if labels is None:
        labels = rng.integers(0, NUM_CLASSES, size=batch)
    return tf.constant(view1), tf.constant(view2), tf.constant(np.asarray(labels, np.int64))


def _host_batch(seed=0, batch=BATCH, labels=None):
    """The batch dict train_step takes, of `_host_views`."""
    view1, view2, labels = _host_views(seed, batch, labels)
    return host_batch(view1, view2, labels=labels)


def _reference_contrastive(z1, z2, temperature):
    """SimCLR eq. (1) with a 2N x 2N cosine-similarity matrix; returns (loss, accuracy, entropy)."""
    z = tf.concat([z1, z2], axis=0)
    z = z / tf.norm(z, axis=1, keepdims=True)
    sim = tf.matmul(z, z, transpose_b=True) / temperature
    two_n = int(z.shape[0])
    n = two_n // 2
    not_self = 1.0 - tf.eye(two_n)
    exp_sim = tf.exp(sim) * not_self
    denominator = tf.reduce_sum(exp_sim, axis=1)
    positive = np.array([(i + n) % two_n for i in range(two_n)])
    positive_sim = tf.gather_nd(sim, np.stack([np.arange(two_n), positive], axis=1))
    loss = tf.reduce_mean(tf.math.log(denominator) - positive_sim)
    probs = (exp_sim / denominator[:, None]).numpy()
    masked = np.where(not_self.numpy() > 0, sim.numpy(), -np.inf)
    accuracy = np.mean(np.argmax(masked, axis=1) == positive)
    safe = np.where(probs > 0, probs, 1.0)
    entropy = np.mean(-np.sum(probs * np.log(safe), axis=1))
    return loss, accuracy, entropy


def _snapshot(variables):
    return [np.array(v.numpy()) for v in variables]


def _compile_sgd(model, lr=LR):
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=0.0))


def test_train_step_matches_independent_sgd_update():
    model = _simclr()
    view1, view2, labels = _host_views()
    variables = model.trainable_variables
    probe_vars = [model.probe.kernel, model.probe.bias]
    before_all = model.get_weights()
    before = _snapshot(variables)

    # Independent gradient: contrastive loss through encoder + projector (BN in training mode) ...
    with tf.GradientTape() as tape:
        h = model.encoder(tf.concat([view1, view2], axis=0), training=True)
        z = model.projector(h, training=True)
        ref_loss, ref_acc, ref_entropy = _reference_contrastive(z[:BATCH], z[BATCH:], model.temperature)
    contrastive_grads = tape.gradient(ref_loss, variables)
    # ... plus the probe's cross-entropy on *constant* view-1 features (only the probe sees it).
    features = tf.constant(h[:BATCH].numpy())
    with tf.GradientTape() as tape:
        logits = tf.matmul(features, model.probe.kernel) + model.probe.bias
        log_probs = tf.nn.log_softmax(logits, axis=1)
        ref_probe_loss = -tf.reduce_mean(tf.gather(log_probs, labels, batch_dims=1))
    probe_grads = dict(zip([id(v) for v in probe_vars], tape.gradient(ref_probe_loss, probe_vars)))
    expected = []
    for v, w, g in zip(variables, before, contrastive_grads):
        if id(v) in probe_grads:
            assert g is None  # the contrastive loss must not depend on the probe
            g = probe_grads[id(v)]
        assert g is not None, v.path
        expected.append(w - LR * g.numpy())

    model.set_weights(before_all)  # undo the BN moving-statistics update of the reference pass
    _compile_sgd(model)
    logs = model.train_step(host_batch(view1, view2, labels=labels))

    after = _snapshot(model.trainable_variables)
    for v, w0, got, want in zip(variables, before, after, expected):
        step_scale = np.max(np.abs(want - w0)) + 1e-12
        # Compare the updates themselves (not just the weights, which barely move).
        np.testing.assert_allclose(got - w0, want - w0, rtol=1e-3, atol=1e-3 * step_scale, err_msg=v.path)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=v.path)
    assert any(np.max(np.abs(a - b)) > 1e-4 for a, b in zip(after, before))  # the step did something
    np.testing.assert_allclose(float(logs["loss"]), float(ref_loss), rtol=1e-5)
    np.testing.assert_allclose(float(logs["contrast_acc"]), ref_acc, atol=1e-6)
    np.testing.assert_allclose(float(logs["contrast_entropy"]), ref_entropy, rtol=1e-4)
    np.testing.assert_allclose(float(logs["probe_loss"]), float(ref_probe_loss), rtol=1e-5)
    ref_probe_acc = np.mean(np.argmax(logits.numpy(), axis=1) == labels.numpy())
    np.testing.assert_allclose(float(logs["probe_acc"]), ref_probe_acc, atol=1e-6)
    assert int(model.optimizer.iterations.numpy()) == 1


def test_probe_does_not_change_the_encoder_update():
    with_probe = _simclr(seed=1, linear_probe=True)
    without = _simclr(seed=2, linear_probe=False)
    assert without.probe is None and "probe_loss" not in without.trackers
    shared = with_probe.encoder.weights + with_probe.projector.weights
    for target, source in zip(without.encoder.weights + without.projector.weights, shared):
        target.assign(source)
    data = _host_batch(seed=3)
    for model in (with_probe, without):
        _compile_sgd(model)
        model.train_step(data)
    got_with = _snapshot(with_probe.encoder.weights + with_probe.projector.weights)
    got_without = _snapshot(without.encoder.weights + without.projector.weights)
    for a, b in zip(got_with, got_without):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_unlabelled_examples_are_masked_out_of_the_probe():
    model = _simclr(seed=4)
    _compile_sgd(model)
    probe_before = _snapshot([model.probe.kernel, model.probe.bias])
    logs = model.train_step(_host_batch(seed=5, labels=[-1] * BATCH))
    for got, want in zip(_snapshot([model.probe.kernel, model.probe.bias]), probe_before):
        np.testing.assert_array_equal(got, want)
    assert np.isfinite(float(logs["loss"])) and np.isfinite(float(logs["probe_loss"]))


def test_partially_labelled_probe_update_follows_only_labelled_examples():
    model = _simclr(seed=6)
    _compile_sgd(model)
    labels = np.array([2, -1, 0, -1])
    view1, view2, labels_t = _host_views(seed=7, labels=labels)
    kernel0, bias0 = _snapshot([model.probe.kernel, model.probe.bias])
    h1 = model.encoder(tf.concat([view1, view2], axis=0), training=True)[:BATCH].numpy().astype(np.float64)
    model.train_step(host_batch(view1, view2, labels=labels_t))
    kernel1, bias1 = _snapshot([model.probe.kernel, model.probe.bias])

    def ce_grad(rows, targets):
        logits = h1[rows] @ kernel0 + bias0
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(rows)), targets] -= 1.0
        return np.concatenate([(h1[rows].T @ p).ravel(), p.sum(0)])

    update = -np.concatenate([(kernel1 - kernel0).ravel(), bias1 - bias0])
    labelled = ce_grad([0, 2], [2, 0])
    as_class_0 = ce_grad([0, 1, 2, 3], [2, 0, 0, 0])  # what treating -1 as class 0 would give

    def cosine(a, b):
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    assert cosine(update, labelled) > 0.9999
    assert cosine(update, as_class_0) < 0.999


def test_short_fit_lowers_the_loss_and_reports_metrics():
    image_size, batch, steps = 16, 16, 30
    model = _simclr(seed=0, num_classes=10, image_size=image_size)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.3, momentum=0.9))
    # One step per "epoch": metrics reset each epoch, so History holds every step's own loss.
    history = model.fit(fashion_views(image_size, batch), steps_per_epoch=1, epochs=steps, verbose=0)
    losses = np.array(history.history["loss"])
    assert losses.shape == (steps,) and np.all(np.isfinite(losses))
    first, last = losses[:5].mean(), losses[-5:].mean()
    assert last < first - 0.3, (first, last, losses)  # ~0.7-1.0 in practice
    # Metrics present and in their ranges: accuracy in [0, 1], entropy in [0, log(2N - 1)].
    for name in ("contrast_acc", "contrast_entropy", "probe_loss", "probe_acc"):
        assert name in history.history, name
    acc = np.array(history.history["contrast_acc"])
    entropy = np.array(history.history["contrast_entropy"])
    assert np.all((acc >= 0) & (acc <= 1)) and acc[-5:].mean() > acc[:5].mean()
    assert np.all((entropy >= 0) & (entropy <= math.log(2 * batch - 1) + 1e-4))
    probe_acc = np.array(history.history["probe_acc"])
    assert np.all((probe_acc >= 0) & (probe_acc <= 1))
    assert np.all(np.array(history.history["probe_loss"]) >= 0)
    # With near-random features all 2N - 1 candidates are almost equally likely at the start.
    assert entropy[0] > 0.8 * math.log(2 * batch - 1)


class _RecordingAugment:
    """Wraps an augmentation to record the seeds and views train_step asks for (eager mode)."""

    def __init__(self, augment):
        self.augment = augment
        self.image_size = augment.image_size  # what a view recipe's crop group needs of a per-image recipe
        self.calls = []

    def __call__(self, images, seed):
        views = self.augment(images, seed)
        self.calls.append((np.asarray(seed).tolist(), views.numpy()))
        return views


def _device_batch(images, labels, run_seed, batch_index, epoch=0):
    """The device-path batch dict: raw images and every row holding the batch's seed."""
    seed = batch_seed(run_seed, epoch, batch_index)
    return {"images": images, "seed": tf.tile(seed[None], [int(images.shape[0]), 1]), "labels": labels}


def test_device_side_augmentation_uses_a_fresh_seed_per_step():
    augment = SimCLRAugment(SIZE)
    recorder = _RecordingAugment(augment)
    model = _simclr(seed=5, augment=recorder)
    _compile_sgd(model)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, size=(BATCH, 12, 12, 1), dtype=np.uint8))
    labels = tf.constant(rng.integers(0, NUM_CLASSES, size=BATCH), tf.int64)
    for step in range(2):  # batches 0 and 1 of epoch 0 of a run seeded 5
        logs = model.train_step(_device_batch(images, labels, run_seed=5, batch_index=step))
        assert np.isfinite(float(logs["loss"]))
    # Batch seed [5 * 1_000_003 + epoch, batch]; view v of it: [s0, s1 * 256 + v].
    base = 5 * 1_000_003
    assert [seed for seed, _ in recorder.calls] == [[base, 0], [base, 1], [base, 256], [base, 257]]
    as_float = np.tile(images.numpy().astype(np.float32) / 255.0, (1, 1, 1, 3))
    for seed, views in recorder.calls:
        assert views.shape == (BATCH, SIZE, SIZE, 3)
        np.testing.assert_allclose(views, augment(as_float, tf.constant(seed)).numpy(), atol=1e-5)
    all_views = [views for _, views in recorder.calls]
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.max(np.abs(all_views[i] - all_views[j])) > 1e-2, (i, j)


def test_device_side_augmentation_runs_under_fit():
    model = _simclr(seed=6, augment=SimCLRAugment(SIZE))
    _compile_sgd(model)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(2 * BATCH, 12, 12, 1), dtype=np.uint8)
    labels = rng.integers(-1, NUM_CLASSES, size=2 * BATCH)
    # Each batch's rows all carry that batch's seed, as pretrain_dataset makes them.
    seeds = np.stack([np.array([6 * 1_000_003, i // BATCH], np.int64) for i in range(2 * BATCH)])
    dataset = tf.data.Dataset.from_tensor_slices({"images": images, "seed": seeds, "labels": labels}).batch(BATCH)
    history = model.fit(dataset, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert int(model.optimizer.iterations.numpy()) == 2


def test_device_side_without_augment_raises():
    model = _simclr(seed=0)
    _compile_sgd(model)
    images = tf.zeros((BATCH, SIZE, SIZE, 3), tf.uint8)
    with pytest.raises(ValueError):
        model.train_step(_device_batch(images, tf.zeros((BATCH,), tf.int64), run_seed=0, batch_index=0))


def _trained_and_reloaded(tmp_path):
    model = _simclr(seed=7, augment=SimCLRAugment(SIZE, color_jitter_strength=0.5), temperature=0.25,
                    proj_layers=3, keep_layer=1)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=LR, momentum=0.9))
    model.train_step(_host_batch(seed=8))  # moves weights and BN statistics off their initial values
    path = str(tmp_path / "m.keras")
    model.save(path)
    return model, keras.saving.load_model(path)


def test_save_and_reload_keeps_config_encoder_and_projector(tmp_path):
    model, loaded = _trained_and_reloaded(tmp_path)
    config = model.get_config()
    assert config["temperature"] == 0.25
    assert "projector" in config and config["projector"]["config"]["num_layers"] == 3
    assert isinstance(loaded, SimCLR)
    assert loaded.temperature == 0.25
    assert loaded.projector.num_layers == 3 and loaded.projector.keep_layer == 1
    assert loaded.augment.get_config() == model.augment.get_config()
    x = np.random.default_rng(9).uniform(size=(3, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.encoder(x, training=False).numpy(), model.encoder(x, training=False).numpy(),
                               rtol=1e-5, atol=1e-6)
    h = model.encoder(x, training=False)
    np.testing.assert_allclose(loaded.projector(h, training=False).numpy(), model.projector(h, training=False).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_save_and_reload_keeps_probe_and_optimizer_state(tmp_path):
    model, loaded = _trained_and_reloaded(tmp_path)
    # The online probe is part of the saved weights file; it must come back, not be silently re-initialised.
    assert loaded.probe is not None and loaded.probe.built, "probe weights were dropped on reload"
    np.testing.assert_allclose(loaded.probe.kernel.numpy(), model.probe.kernel.numpy())
    np.testing.assert_allclose(loaded.probe.bias.numpy(), model.probe.bias.numpy())
    assert int(loaded.optimizer.iterations.numpy()) == 1, "optimizer state (step, momentum) was not restored"
    assert len(loaded.optimizer.variables) == len(model.optimizer.variables)


@pytest.mark.parametrize("keep_layer", [0, 1])
def test_fine_tune_model_keeps_the_selected_head_layer(keep_layer):
    model = _simclr(seed=10, proj_layers=3, keep_layer=keep_layer)
    # Non-trivial BN parameters and statistics, so inference-mode BN is not close to identity.
    rng = np.random.default_rng(11)
    bn0 = model.projector.blocks[0][1]
    gamma, beta = rng.uniform(0.5, 2, bn0.gamma.shape), rng.normal(size=bn0.beta.shape)
    mean, var = rng.normal(size=bn0.moving_mean.shape), rng.uniform(0.5, 2, bn0.moving_variance.shape)
    for variable, value in zip((bn0.gamma, bn0.beta, bn0.moving_mean, bn0.moving_variance), (gamma, beta, mean, var)):
        variable.assign(value.astype(np.float32))
    fine_tune = model.fine_tune_model()
    x = rng.uniform(size=(3, SIZE, SIZE, 3)).astype(np.float32)
    got = fine_tune(x, training=False).numpy()
    h = model.encoder(x, training=False)
    if keep_layer == 0:
        np.testing.assert_allclose(got, h.numpy(), rtol=1e-5, atol=1e-6)
        return
    kernel = model.projector.blocks[0][0].kernel.numpy()
    want = np.maximum(gamma * (h.numpy() @ kernel - mean) / np.sqrt(var + 1e-5) + beta, 0.0)
    assert got.shape == (3, kernel.shape[1])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got, model.projector.layer_outputs(h, training=False)[1].numpy(), rtol=1e-5, atol=1e-6)
    # It shares the weights: a change to the head shows up in the fine-tuning model.
    model.projector.blocks[0][0].kernel.assign(2 * kernel)
    assert not np.allclose(fine_tune(x, training=False).numpy(), got)


@pytest.mark.parametrize("augment_on", ["host", "device"])
def test_build_method_respects_the_config(augment_on):
    config = TrainConfig(image_size=SIZE, width_multiplier=WIDTH, augment_on=augment_on, color_jitter_strength=0.5,
                         seed=3, method_options={"proj_layers": 3, "proj_dim": 16, "keep_proj_layer": 2,
                                                 "temperature": 0.2})
    model = build_method(config, num_classes=10)
    assert isinstance(model, SimCLR)
    assert model.temperature == 0.2 and model.seed == 3
    assert model.projector.num_layers == 3 and model.projector.output_dim == 16 and model.projector.keep_layer == 2
    dense = [layer for block in model.projector.blocks for layer in block if isinstance(layer, keras.layers.Dense)]
    assert [layer.units for layer in dense] == [64, 64, 16]  # resnet18 at width 1/8 gives 64 features
    z = model.projector(model.encoder(np.zeros((2, SIZE, SIZE, 3), np.float32)))
    assert tuple(z.shape) == (2, 16)
    assert model.probe is not None and model.probe.units == 10 and model.probe.built
    if augment_on == "device":
        # One SimCLRAugment making both views.
        assert isinstance(model.augment, ViewRecipe) and model.augment.num_views == 2
        assert len(model.augment.groups) == 1 and model.augment.groups[0].count == 2
        recipe = model.augment.groups[0].recipe
        assert isinstance(recipe, SimCLRAugment)
        assert recipe.image_size == SIZE and recipe.color_jitter_strength == 0.5
    else:
        assert model.augment is None
    no_probe = build_method(TrainConfig(image_size=SIZE, width_multiplier=WIDTH, linear_probe=False,
                                        method_options={"temperature": 0.5}), num_classes=10)
    assert no_probe.probe is None and no_probe.projector.num_layers == 2 and no_probe.projector.output_dim == 128
    assert no_probe.temperature == 0.5
