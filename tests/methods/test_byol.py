"""BYOL: EMA target against hand arithmetic, no gradient into the target, one SGD step against an independent
gradient, loss and collapse monitor against numpy, a short run that learns, .keras round trip, build_method.

The numpy references take the model's own forward outputs (computed separately, before the step) and
redo the normalised-MSE / std arithmetic in float64, so they check the train_step's composition. The
independent-update test writes eq. (2) with its own cosine, takes the target projections as constants and
differentiates through the online sub-networks one view at a time: one real `train_step` with plain SGD
must move every trainable variable by -lr * that gradient, and gradients with the target left
differentiable or both views in one batch-norm batch must differ from it (so the check can fail).
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.augment import BYOLAugment, ViewRecipe
from tfssl.config import TrainConfig
from tfssl.encoders import build_encoder
from tfssl.heads import ProjectionHead, predictor_head
from tfssl.methods import BYOL, build_method
from method_data import fashion_views, host_batch, random_views

SIZE, WIDTH, BATCH, NUM_CLASSES, PROJ_DIM = 8, 0.125, 8, 3, 8
LR = 0.1


def _byol(seed=0, tau_base=0.9, total_steps=4, augment=None, image_size=SIZE, num_classes=NUM_CLASSES,
          encoder=None):
    keras.utils.set_random_seed(seed)
    encoder = encoder or build_encoder("resnet18", image_size, width_multiplier=WIDTH)
    projector = ProjectionHead(num_layers=2, output_dim=PROJ_DIM, hidden_dim=16, last_bn=False, name="projector")
    predictor = predictor_head(PROJ_DIM, 16)
    model = BYOL(encoder, projector, predictor, tau_base=tau_base, total_steps=total_steps, augment=augment,
                 num_classes=num_classes, seed=seed)
    model.build_heads()
    return model


def _views(seed=0, batch=BATCH):
    return random_views(seed, batch, SIZE, NUM_CLASSES)


def _batch(seed=0, batch=BATCH):
    """The host-augmented batch dict of `_views`."""
    view1, view2, labels = _views(seed, batch)
    return host_batch(view1, view2, labels=labels)


def _sgd(model, lr=0.1):
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=0.0))


def _normalize(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def numpy_collapse_std(z):
    return float(np.mean(np.std(_normalize(z), axis=0)))


def test_target_starts_as_a_copy_and_is_not_trainable():
    model = _byol()
    trainable = {id(v) for v in model.trainable_variables}
    target = model.target_encoder.weights + model.target_projector.weights
    assert target and not any(id(v) in trainable for v in target)
    assert not any(v.trainable for v in target)
    for online, copy in zip(model.encoder.weights + model.projector.weights, target):
        np.testing.assert_array_equal(online.numpy(), copy.numpy())
    x = _views()[0]
    np.testing.assert_allclose(model.target_projection(x).numpy(),
                               model.projector(model.encoder(x, training=True), training=True).numpy(), atol=1e-5)


def test_ema_update_matches_hand_arithmetic_and_schedule_end_points():
    model = _byol(tau_base=0.9, total_steps=4)
    # Endpoints and midpoint of tau(k) = 1 - (1 - 0.9) (cos(pi k / K) + 1) / 2.
    for step, want in ((0, 0.9), (2, 0.95), (4, 1.0), (9, 1.0)):
        np.testing.assert_allclose(float(model.target_momentum(step)), want, atol=1e-6)
    np.testing.assert_allclose(float(model.target_momentum(1)), 1 - 0.1 * (np.cos(np.pi / 4) + 1) / 2, atol=1e-6)
    _sgd(model)
    pairs = model.target_pairs()
    assert len(pairs) == len(model.encoder.trainable_weights) + len(model.projector.trainable_weights)
    for step, tau in ((0, 0.9), (1, 1 - 0.1 * (np.cos(np.pi / 4) + 1) / 2)):
        target_before = [t.numpy().astype(np.float64) for _, t in pairs]
        assert int(model.optimizer.iterations.numpy()) == step
        model.train_step(_batch(seed=step))
        for (online, target), before in zip(pairs, target_before):
            want = tau * before + (1 - tau) * online.numpy().astype(np.float64)  # online AFTER its SGD step
            np.testing.assert_allclose(target.numpy(), want, rtol=1e-5, atol=1e-6, err_msg=target.path)
    moved = [not np.allclose(t.numpy(), o.numpy()) for o, t in pairs]
    assert any(moved)  # the online network moved and the target only partly followed


def test_constant_tau_without_total_steps():
    model = _byol(tau_base=0.97, total_steps=None)
    assert float(model.target_momentum(0)) == pytest.approx(0.97) == float(model.target_momentum(10 ** 6))
    with pytest.raises(ValueError, match="tau_base"):
        _byol(tau_base=1.5)
    with pytest.raises(ValueError, match="total_steps"):
        _byol(total_steps=0)


def test_no_gradient_reaches_the_target():
    model = _byol()
    view1, view2, _ = _views()
    target_vars = model.target_encoder.weights + model.target_projector.weights
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([v.value for v in target_vars])
        # Target forward INSIDE the tape: only the loss's stop-gradient can keep gradients out.
        target1 = model.target_projector(model.target_encoder(view1, training=True), training=True)
        target2 = model.target_projector(model.target_encoder(view2, training=True), training=True)
        _, _, p1 = model.online(view1)
        _, _, p2 = model.online(view2)
        loss = model.symmetric_loss(p1, p2, target1, target2)
    grads = tape.gradient(loss, [v.value for v in target_vars])
    assert all(g is None or not np.any(g.numpy()) for g in grads)
    online_grads = tape.gradient(loss, model.encoder.trainable_weights + model.predictor.trainable_weights)
    assert all(g is not None and np.any(g.numpy()) for g in online_grads)

    # With tau = 1 a whole train_step leaves the target's EMA-updated weights bit-identical.
    frozen = _byol(seed=1, tau_base=1.0, total_steps=None)
    _sgd(frozen)
    before = [t.numpy() for _, t in frozen.target_pairs()]
    online_before = [o.numpy() for o, _ in frozen.target_pairs()]
    frozen.train_step(_batch(seed=2))
    for (_, target), b in zip(frozen.target_pairs(), before):
        np.testing.assert_array_equal(target.numpy(), b)
    assert any(not np.allclose(o.numpy(), ob) for (o, _), ob in zip(frozen.target_pairs(), online_before))


def test_step_loss_and_collapse_std_match_numpy():
    model = _byol(seed=3)
    view1, view2, labels = _views(seed=4)
    weights = model.get_weights()
    t1, t2 = model.target_projection(view1).numpy(), model.target_projection(view2).numpy()
    _, z1, p1 = model.online(view1)
    _, z2, p2 = model.online(view2)
    model.set_weights(weights)  # undo the BN moving-statistics updates of these reference passes

    def nmse(p, t):
        return np.mean(np.sum((_normalize(p) - _normalize(t)) ** 2, axis=1))

    want = nmse(p1.numpy(), t2) + nmse(p2.numpy(), t1)
    _sgd(model)
    logs = model.train_step(host_batch(view1, view2, labels=labels))
    np.testing.assert_allclose(float(logs["loss"]), want, rtol=1e-5)
    assert 0.0 < want < 8.0
    np.testing.assert_allclose(float(logs["collapse_std"]), numpy_collapse_std(np.concatenate([z1, z2])),
                               rtol=1e-5)
    assert {"probe_loss", "probe_acc"} <= set(logs)


def _byol_reference_gradients(model, view1, view2, labels, target_has_gradient=False, views_together=False):
    """Gradient of BYOL eq. (2) + the probe's cross-entropy w.r.t. `model.trainable_variables`, written here.

    loss = mean(2 - 2 cos(q(z1), z'2)) + mean(2 - 2 cos(q(z2), z'1)), z'_v the target network's projection of
    view v (train-mode BN, one view per call) taken as a numpy constant; the probe sees constant view-1
    features. The two switches build the wrong versions the positive controls need: `target_has_gradient`
    uses the online projections z_v as targets, differentiably (the same values at step 0, where the target
    is a copy of the online network); `views_together` puts both views through one batch-norm batch.

    Returns:
      `(gradients as numpy arrays, BYOL loss, probe loss)`.
    """
    def cosine(a, b):
        return tf.reduce_sum(a * b, axis=1) / (tf.norm(a, axis=1) * tf.norm(b, axis=1))

    def target(view):
        return tf.constant(model.target_projector(model.target_encoder(view, training=True), training=True).numpy())

    target1, target2 = target(view1), target(view2)
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        if views_together:
            h = model.encoder(tf.concat([view1, view2], axis=0), training=True)
            h1, h2 = h[:BATCH], h[BATCH:]
        else:
            h1, h2 = model.encoder(view1, training=True), model.encoder(view2, training=True)
        z1, z2 = model.projector(h1, training=True), model.projector(h2, training=True)
        p1, p2 = model.predictor(z1, training=True), model.predictor(z2, training=True)
        if target_has_gradient:
            target1, target2 = z1, z2
        loss = tf.reduce_mean(2.0 - 2.0 * cosine(p1, target2)) + tf.reduce_mean(2.0 - 2.0 * cosine(p2, target1))
        logits = tf.matmul(tf.constant(h1.numpy()), model.probe.kernel) + model.probe.bias
        probe_loss = -tf.reduce_mean(tf.gather(tf.nn.log_softmax(logits, axis=1), labels, batch_dims=1))
        total = loss + probe_loss
    grads = tape.gradient(total, variables)
    assert all(g is not None for g in grads), [v.path for v, g in zip(variables, grads) if g is None]
    return [g.numpy() for g in grads], float(loss), float(probe_loss)


def test_train_step_matches_independent_sgd_update(tiny_encoder):
    keras.utils.set_random_seed(8)
    model = _byol(seed=8, encoder=tiny_encoder(SIZE))
    view1, view2, labels = _views(seed=9)
    weights = model.get_weights()
    grads, want_loss, want_probe_loss = _byol_reference_gradients(model, view1, view2, labels)
    controls = {}
    for name, wrong in (("target_has_gradient", dict(target_has_gradient=True)),
                        ("views_together", dict(views_together=True))):
        model.set_weights(weights)  # every reference pass starts from (and leaves nothing in) the pre-step state
        controls[name] = _byol_reference_gradients(model, view1, view2, labels, **wrong)
    model.set_weights(weights)
    variables = model.trainable_variables
    before = [v.numpy() for v in variables]
    _sgd(model, LR)
    logs = model.train_step(host_batch(view1, view2, labels=labels))

    largest = max(np.max(np.abs(LR * g)) for g in grads)
    for v, w0, g in zip(variables, before, grads):
        # The projector's output bias only feeds the predictor's first batch norm, which removes any shift:
        # its gradient is exactly 0 and both sides hold float32 noise (~1e-8). Such near-zero gradients are
        # compared at 1e-7 of the largest step instead of at 1e-3 of their own noise.
        scale = max(np.max(np.abs(LR * g)), 1e-4 * largest)
        np.testing.assert_allclose(v.numpy() - w0, -LR * g, rtol=1e-3, atol=1e-3 * scale, err_msg=v.path)
    assert max(np.max(np.abs(v.numpy() - w0)) for v, w0 in zip(variables, before)) > 1e-3
    np.testing.assert_allclose(float(logs["loss"]), want_loss, rtol=1e-5)
    np.testing.assert_allclose(float(logs["probe_loss"]), want_probe_loss, rtol=1e-5)
    # A differentiable target has the same loss at step 0 but another gradient: only the update check sees it.
    np.testing.assert_allclose(controls["target_has_gradient"][1], want_loss, rtol=1e-5)
    flat = np.concatenate([g.ravel() for g in grads])
    for name, (wrong_grads, _, _) in controls.items():
        gap = np.linalg.norm(flat - np.concatenate([g.ravel() for g in wrong_grads])) / np.linalg.norm(flat)
        assert gap > 0.05, (name, gap)


def test_collapse_std_closed_forms():
    d = 6
    spread = np.concatenate([np.eye(d), -np.eye(d)]) * 3.0  # +-e_i: per-dimension std sqrt(2 / 2d) = 1/sqrt(d)
    np.testing.assert_allclose(float(BYOL.collapse_std(tf.constant(spread, tf.float32))), 1 / np.sqrt(d), rtol=1e-6)
    collapsed = np.tile(np.random.default_rng(0).normal(size=(1, d)), (10, 1))
    assert float(BYOL.collapse_std(tf.constant(collapsed, tf.float32))) < 1e-6
    z = np.random.default_rng(1).normal(size=(32, d)) * np.arange(1, d + 1)
    np.testing.assert_allclose(float(BYOL.collapse_std(tf.constant(z, tf.float32))), numpy_collapse_std(z), rtol=1e-5)


def test_short_fit_lowers_the_loss(tiny_encoder):
    steps = 25
    keras.utils.set_random_seed(0)
    model = _byol(seed=0, tau_base=0.99, total_steps=steps, image_size=16, num_classes=10, encoder=tiny_encoder(16))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.9))
    history = model.fit(fashion_views(16, 16), steps_per_epoch=1, epochs=steps, verbose=0)
    losses = np.array(history.history["loss"])
    assert np.all(np.isfinite(losses))
    assert losses[-5:].mean() < losses[:5].mean() - 0.3, losses
    collapse = np.array(history.history["collapse_std"])
    assert np.all((collapse > 0) & (collapse <= 1.0))


def test_save_and_reload_round_trip(tmp_path):
    from tfssl.augment import byol_views

    pair = byol_views(SIZE, color_jitter_strength=0.5)
    model = _byol(seed=5, augment=pair, tau_base=0.95, total_steps=7)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.9))
    model.train_step(_batch(seed=6))  # target and online now differ, optimizer has state
    path = str(tmp_path / "byol.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, BYOL)
    assert (loaded.tau_base, loaded.total_steps) == (0.95, 7)
    # The pair became a view recipe of one crop group per view, and comes back as one.
    assert isinstance(loaded.augment, ViewRecipe) and [g.count for g in loaded.augment.groups] == [1, 1]
    assert [g.recipe.get_config() for g in model.augment.groups] == [r.get_config() for r in pair.recipes]
    assert [g.recipe.get_config() for g in loaded.augment.groups] == [r.get_config() for r in pair.recipes]
    assert len(loaded.trainable_variables) == len(model.trainable_variables)
    assert not any(v.trainable for v in loaded.target_encoder.weights)
    assert int(loaded.optimizer.iterations.numpy()) == 1
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = _views(seed=7)[0]
    for name in ("encoder", "target_encoder"):
        np.testing.assert_allclose(getattr(loaded, name)(x, training=False).numpy(),
                                   getattr(model, name)(x, training=False).numpy(), rtol=1e-5, atol=1e-6)
    z = model.projector(model.encoder(x, training=False), training=False)
    np.testing.assert_allclose(loaded.predictor(z, training=False).numpy(), model.predictor(z, training=False).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_build_method_and_config_flags():
    config = TrainConfig(method="byol", image_size=SIZE, width_multiplier=WIDTH, augment_on="device",
                         color_jitter_strength=0.5, method_options=dict(proj_dim=16, proj_hidden_dim=24, tau_base=0.98))
    model = build_method(config, num_classes=10, total_steps=50)
    assert isinstance(model, BYOL) and (model.tau_base, model.total_steps) == (0.98, 50)
    assert isinstance(model.augment, ViewRecipe) and [g.count for g in model.augment.groups] == [1, 1]
    assert isinstance(model.augment.recipe_of(1), BYOLAugment) and model.augment.recipe_of(1).solarize_prob == 0.2
    dense = [layer.units for block in model.projector.blocks for layer in block
             if isinstance(layer, keras.layers.Dense)]
    assert dense == [24, 16] and not model.projector.last_bn
    # Predictor defaults to the projector's hidden width; an explicit flag overrides it.
    assert model.predictor.hidden_dim == 24 and model.predictor.output_dim == 16
    wide = build_method(TrainConfig(method="byol", image_size=SIZE, width_multiplier=WIDTH,
                                    method_options=dict(proj_dim=128, proj_hidden_dim=0, pred_hidden_dim=32)),
                        num_classes=None)
    assert wide.predictor.hidden_dim == 32 and wide.total_steps is None and wide.probe is None
    for name, bad in (("tau_base", 1.2), ("proj_hidden_dim", -1), ("pred_hidden_dim", -4)):
        with pytest.raises(ValueError, match=f"--byol_{name} must be in"):
            TrainConfig(model_dir="x", method="byol", method_options={name: bad}).validate()

