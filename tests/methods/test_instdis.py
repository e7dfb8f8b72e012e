"""InstDis: a step's loss, NCE normaliser and bank update against float64 numpy on the model's own
forward outputs; one SGD step against an independent gradient (NCE and softmax); Z frozen after the
first step; no gradient into the bank; 2 replicas (sync BN) = 1 device; device-side augmentation; a
short Fashion-MNIST run that learns; .keras and checkpoint round trips; argument checks.

The numpy references take the encoder/projector outputs (computed before the step, weights restored
after) and the bank contents, and redo the paper's arithmetic (P = exp(s)/Z, h = P/(P + K/N), bank
row <- normalise(0.5 row + 0.5 f)) in float64, so they check the train_step's composition. The
gradient reference (`_tf_instdis_loss`) writes the same objectives in TensorFlow, not with
`tfssl.losses`, pushes them through the model's own encoder and projector with the bank as a constant,
and a step with SGD (no momentum) must move every trainable variable by -LR times that gradient.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.augment import SimCLRAugment, batch_seed
from tfssl.heads import ProjectionHead
from tfssl.losses import instdis_loss
from tfssl.methods.instdis import InstDis
from method_data import assert_same_step, host_batch, one_step, uneven_global_batch

SIZE, BATCH, NUM_CLASSES, PROJ_DIM, NUM_EXAMPLES, K = 8, 8, 3, 8, 32, 16
INDEX = np.array([3, 17, 0, 9, 30, 12, 5, 21], np.int64)
LR = 0.1


def _instdis(encoder, loss="nce", num_examples=NUM_EXAMPLES, num_negatives=K, seed=0, num_classes=NUM_CLASSES,
             **kwargs):
    keras.utils.set_random_seed(seed)
    projector = ProjectionHead(num_layers=1, output_dim=PROJ_DIM, use_bn=False, name="projector")
    model = InstDis(encoder, projector, num_examples=num_examples, num_negatives=num_negatives, loss=loss,
                    num_classes=num_classes, seed=seed, **kwargs)
    model.build_heads()
    return model


def _sgd(model, lr=0.1):
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=0.0))


def _batch(seed, index=INDEX):
    """`(view, labels, index)` tensors of one host-augmented batch (`_as_batch` makes its dict)."""
    rng = np.random.default_rng(seed)
    view = rng.uniform(size=(len(index), SIZE, SIZE, 3)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, size=len(index))
    return tf.constant(view), tf.constant(labels, tf.int64), tf.constant(index, tf.int64)


def _as_batch(data):
    """The batch dict train_step takes, of a `(view, labels, index)` triple."""
    view, labels, index = data
    return host_batch(view, labels=labels, index=index)


def _normalize(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _features(model, view):
    """The step's z `[n, d]` (training-mode forward), leaving every weight as it was."""
    weights = model.get_weights()
    z = model.projector(model.encoder(view, training=True), training=True).numpy()
    model.set_weights(weights)  # undo the BN moving-statistics update of this reference pass
    return z


def numpy_loss(f, bank, index, negatives, loss, n_data, t=0.07, z=None):
    """Returns (mean loss, Z used) in float64 from the paper's definitions."""
    pos = bank[index]
    s = np.concatenate([np.sum(f * pos, 1, keepdims=True), f @ bank[negatives].T], axis=1) / t
    if loss == "softmax":
        return np.mean(np.log(np.sum(np.exp(s), axis=1)) - s[:, 0]), None
    z = n_data * np.mean(np.exp(s)) if z is None else z
    p, k = np.exp(s) / z, len(negatives)
    h = p / (p + k / n_data)
    return np.mean(-np.log(h[:, 0]) - np.sum(np.log(1 - h[:, 1:]), axis=1)), z


def numpy_bank_update(bank, index, f, m=0.5):
    bank = bank.copy()
    bank[index] = _normalize(m * bank[index] + (1 - m) * f)
    return bank


@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_steps_match_numpy_and_z_is_frozen(loss, tiny_encoder):
    model = _instdis(tiny_encoder(SIZE), loss=loss)
    _sgd(model)
    z_used = None
    for step in range(2):
        data = _batch(seed=step, index=INDEX if step == 0 else INDEX[::-1] + 1)
        view, _, index = data
        z = _features(model, view)
        f = _normalize(z)
        bank = model.bank.read().numpy().astype(np.float64)
        negatives = model.negative_indices(step).numpy()
        want, z_est = numpy_loss(f, bank, index.numpy(), negatives, loss, NUM_EXAMPLES, z=z_used)
        for tracker in model.metrics:
            tracker.reset_state()
        logs = model.train_step(_as_batch(data))
        np.testing.assert_allclose(float(logs["loss"]), want, rtol=1e-4)
        np.testing.assert_allclose(float(logs["collapse_std"]), np.mean(np.std(f, axis=0)), rtol=1e-4)
        assert {"probe_loss", "probe_acc"} <= set(logs)
        # After the gradient step the batch's rows hold 0.5 old + 0.5 f (f of this step), renormalised.
        np.testing.assert_allclose(model.bank.read().numpy(), numpy_bank_update(bank, index.numpy(), f),
                                   rtol=1e-4, atol=1e-5)
        if loss == "softmax":
            assert float(model.normalizer.numpy()) == 0.0  # Z is an NCE quantity only
        elif step == 0:
            z_used = z_est  # estimated from the first batch...
            np.testing.assert_allclose(float(model.normalizer.numpy()), z_est, rtol=1e-4)
            first_z = model.normalizer.numpy()
        else:
            assert model.normalizer.numpy() == first_z  # ...then frozen (step 2's loss used it, above)
    assert int(model.optimizer.iterations.numpy()) == 2


def _tf_instdis_loss(f, bank, index, negatives, objective, temperature, normalizer=0.0, constant_z=True):
    """The paper's objectives in TF on unit features f `[n, d]` and a constant bank `[N, d]`.

    s = [v_index . f, v_negatives . f] / tau. "softmax": mean of log sum exp(s) - s_pos. "nce": P = exp(s) / Z,
    h = P / (P + K / N), mean of -log h_pos - sum_k log(1 - h_neg_k); Z = `normalizer` if > 0, else the
    first-batch estimate N * mean(exp(s)), a constant (`constant_z=False`, a gradient through the
    estimate, is a positive control only). Returns (loss, Z).
    """
    n_data, k = int(bank.shape[0]), len(negatives)
    positive = tf.reduce_sum(f * tf.gather(bank, index), axis=1, keepdims=True)
    s = tf.concat([positive, tf.matmul(f, tf.gather(bank, negatives), transpose_b=True)], axis=1) / temperature
    if objective == "softmax":
        return tf.reduce_mean(tf.reduce_logsumexp(s, axis=1) - s[:, 0]), None
    z = normalizer if normalizer > 0 else n_data * tf.reduce_mean(tf.exp(tf.stop_gradient(s) if constant_z else s))
    p = tf.exp(s) / z
    h = p / (p + k / n_data)
    return tf.reduce_mean(-tf.math.log(h[:, 0]) - tf.reduce_sum(tf.math.log(1.0 - h[:, 1:]), axis=1)), z


def _probe_cross_entropy(model, h, labels):
    """The online probe's mean cross-entropy on constant features (every example here is labelled)."""
    logits = tf.matmul(tf.stop_gradient(h), model.probe.kernel) + model.probe.bias
    return -tf.reduce_mean(tf.gather(tf.nn.log_softmax(logits, axis=1), labels, batch_dims=1))


@pytest.mark.parametrize("objective,warm_up", [("nce", False), ("nce", True), ("softmax", True)])
def test_train_step_matches_independent_sgd_update(objective, warm_up, tiny_encoder):
    """One SGD step (no momentum) moves every trainable variable by -LR * g, g the gradient of the
    objective written above plus the probe's cross-entropy, through the encoder and projector as they
    were before the step, with the bank rows (positives and the step's negatives) as constants.

    Without warm-up the step estimates Z from its own batch; after a warm-up step (other views, an
    overlapping index, so some positives are rows that step wrote) Z is the frozen value, the bank has
    moved and the negatives are step 1's draw.
    """
    keras.utils.set_random_seed(2)  # the encoder is built before _instdis seeds the projector
    model = _instdis(tiny_encoder(SIZE), loss=objective, seed=2)
    _sgd(model, lr=LR)
    if warm_up:
        model.train_step(_as_batch(_batch(seed=20, index=np.array([3, 17, 30, 1, 2, 4, 6, 7], np.int64))))
        for tracker in model.metrics:
            tracker.reset_state()  # so the logs below are the checked step's alone
    view, labels, index = _batch(seed=21)
    step = int(model.optimizer.iterations.numpy())
    assert step == int(warm_up)
    bank = tf.constant(model.bank.read().numpy())  # the state the real step will see
    stored_z = float(model.normalizer.numpy())
    assert (stored_z > 0) == (warm_up and objective == "nce")
    negatives = model.negative_indices(step).numpy()  # stateless: the draw train_step makes at this step
    start = model.get_weights()
    variables = model.trainable_variables

    def reference(temperature=model.temperature, negatives=negatives, constant_z=True):
        model.set_weights(start)
        with tf.GradientTape() as tape:
            h = model.encoder(view, training=True)
            z = model.projector(h, training=True)
            f = z / tf.norm(z, axis=1, keepdims=True)
            loss, normalizer = _tf_instdis_loss(f, bank, index, negatives, objective, temperature, stored_z,
                                                constant_z)
            probe_loss = _probe_cross_entropy(model, h, labels)
            total = loss + probe_loss
        grads = tape.gradient(total, variables)
        assert all(g is not None for g in grads)
        return [g.numpy() for g in grads], float(loss), float(probe_loss), normalizer

    grads, want_loss, want_probe_loss, want_z = reference()
    controls = {"temperature 0.1": reference(temperature=0.1)[0],
                "the next step's negatives": reference(negatives=model.negative_indices(step + 1).numpy())[0]}
    if not stored_z and objective == "nce":
        controls["a gradient through the Z estimate"] = reference(constant_z=False)[0]
    model.set_weights(start)  # undo the BN moving-statistics updates of the reference passes
    np.testing.assert_array_equal(model.bank.read().numpy(), bank.numpy())
    assert float(model.normalizer.numpy()) == stored_z
    before = [v.numpy() for v in variables]
    logs = model.train_step(host_batch(view, labels=labels, index=index))

    np.testing.assert_allclose(float(logs["loss"]), want_loss, rtol=1e-5)
    np.testing.assert_allclose(float(logs["probe_loss"]), want_probe_loss, rtol=1e-5)
    if objective == "nce":
        np.testing.assert_allclose(float(model.normalizer.numpy()), float(want_z), rtol=1e-5)
    largest = max(np.max(np.abs(LR * g)) for g in grads)
    assert largest > 1e-3, largest  # the step did something
    for v, w0, g in zip(variables, before, grads):
        scale = np.max(np.abs(LR * g)) + 1e-12
        np.testing.assert_allclose(v.numpy() - w0, -LR * g, rtol=1e-3, atol=1e-3 * scale, err_msg=v.path)
    # Another temperature, other negatives or a gradient through Z give a clearly different gradient
    # (seen: largest relative gaps 0.5 to 1.8): the check above can fail.
    gaps = {name: max(np.max(np.abs(g - o)) / (np.max(np.abs(o)) + 1e-12) for g, o in zip(grads, other))
            for name, other in controls.items()}
    assert min(gaps.values()) > 0.05, gaps


def test_negative_indices_are_shared_stateless_draws(tiny_encoder):
    model = _instdis(tiny_encoder(SIZE), num_examples=1000, num_negatives=4096)
    draws = model.negative_indices(3).numpy()
    assert draws.shape == (4096,) and draws.dtype == np.int64
    assert draws.min() >= 0 and draws.max() < 1000
    np.testing.assert_array_equal(model.negative_indices(3).numpy(), draws)  # a function of (seed, step)
    assert not np.array_equal(model.negative_indices(4).numpy(), draws)
    counts = np.bincount(draws, minlength=1000)
    assert len(np.unique(draws)) > 950 and counts.max() < 20  # roughly uniform over [0, N)
    other_seed = _instdis(tiny_encoder(SIZE), num_examples=1000, num_negatives=4096, seed=1)
    assert not np.array_equal(other_seed.negative_indices(3).numpy(), draws)
    # The same draws when compiled with XLA (--jit_compile), so the flag does not change the run.
    compiled = tf.function(model.negative_indices, jit_compile=True)
    np.testing.assert_array_equal(compiled(tf.constant(3, tf.int64)).numpy(), draws)


def test_mixed_bfloat16_keeps_the_bank_math_in_float32(tiny_encoder):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = _instdis(tiny_encoder(SIZE))
        _sgd(model)
        logs = model.train_step(_as_batch(_batch(seed=9)))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.bank.bank.dtype == "float32" and model.normalizer.dtype == "float32"
    assert np.isfinite(float(logs["loss"])) and float(model.normalizer.numpy()) > 0
    np.testing.assert_allclose(np.linalg.norm(model.bank.read().numpy(), axis=1), 1.0, rtol=1e-5)


def test_no_gradient_into_the_bank(tiny_encoder):
    model = _instdis(tiny_encoder(SIZE))
    trainable = {id(v) for v in model.trainable_variables}
    for state in (model.bank.bank, model.normalizer):
        assert id(state) not in trainable and not state.trainable
    view, _, index = _batch(seed=3)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(model.bank.bank.value)
        f = tf.math.l2_normalize(model.projector(model.encoder(view, training=True)), axis=1)
        positives = model.bank.lookup(index)
        negatives = model.bank.lookup(model.negative_indices(0))
        out = model.frozen_normalizer(f, positives, negatives)
        loss = instdis_loss(f, positives, negatives, num_data=NUM_EXAMPLES, normalizer=out).loss
        control = tf.reduce_sum(tf.gather(model.bank.bank.value, index))  # the watch itself works
    assert tape.gradient(loss, model.bank.bank.value) is None
    assert tape.gradient(control, model.bank.bank.value) is not None
    grads = tape.gradient(loss, model.encoder.trainable_weights + model.projector.trainable_weights)
    assert all(g is not None and np.any(g.numpy()) for g in grads)


def test_two_replicas_match_one_device(two_replica_strategy, tiny_encoder):
    strategy = two_replica_strategy
    index = tf.constant(INDEX)
    dataset = uneven_global_batch(BATCH, SIZE, NUM_CLASSES).map(
        lambda batch: host_batch(batch["views"][0], labels=batch["labels"], index=index))
    models = []
    for scope_strategy in (strategy, tf.distribute.get_strategy()):
        with scope_strategy.scope():
            model = _instdis(tiny_encoder(SIZE, sync_bn=True))
            _sgd(model, lr=0.05)
            model.optimizer.build(model.trainable_variables)
        models.append(model)
    distributed, single = models
    single.set_weights(distributed.get_weights())
    initial = [np.array(v.numpy()) for v in single.weights]
    distributed_logs = one_step(distributed, strategy, dataset)
    single_logs = one_step(single, tf.distribute.get_strategy(), dataset)

    for v_dist, v_single, w0 in zip(distributed.weights, single.weights, initial):
        assert_same_step(strategy.experimental_local_results(v_dist.value), v_single.numpy(), w0, v_dist.path)
    # Both replicas' halves of the batch were written to the bank, and Z is the global-batch estimate.
    moved_rows = np.flatnonzero(np.any(single.bank.read().numpy() != initial[-1], axis=1))
    assert sorted(moved_rows) == sorted(INDEX)
    assert float(single.normalizer.numpy()) > 0
    moved = [np.max(np.abs(v.numpy() - w0)) > 0 for v, w0 in zip(single.weights, initial) if v.trainable]
    assert sum(moved) > 0.9 * len(moved)
    for name in ("loss", "collapse_std", "probe_loss", "probe_acc"):
        np.testing.assert_allclose(distributed_logs[name], single_logs[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_device_augmented_batches(tiny_encoder):
    model = _instdis(tiny_encoder(SIZE), augment=SimCLRAugment(SIZE, color_jitter_strength=0.5))
    _sgd(model)
    rng = np.random.default_rng(4)
    images = tf.constant(rng.integers(0, 256, size=(BATCH, 12, 12, 1)), tf.uint8)
    labels = tf.constant(rng.integers(0, NUM_CLASSES, BATCH))

    def device_batch(batch_index):
        seed = tf.tile(batch_seed(0, 0, batch_index)[None], [BATCH, 1])
        return {"images": images, "seed": seed, "labels": labels, "index": tf.constant(INDEX)}

    data = device_batch(0)
    views = model.views(data)
    assert len(views) == 1  # one view per image
    view = views[0]
    assert view.shape == (BATCH, SIZE, SIZE, 3) and view.dtype == tf.float32
    np.testing.assert_array_equal(model.views(data)[0].numpy(), view.numpy())  # seeded by the batch's seed
    before = model.bank.read().numpy()
    logs = model.train_step(data)
    assert np.isfinite(float(logs["loss"]))
    changed = np.flatnonzero(np.any(model.bank.read().numpy() != before, axis=1))
    assert sorted(changed) == sorted(INDEX)
    # The batch's seed, not the step, makes the view: the same batch again gives the same view, the next
    # batch (another seed) draws new views.
    np.testing.assert_array_equal(model.views(data)[0].numpy(), view.numpy())
    assert not np.array_equal(model.views(device_batch(1))[0].numpy(), view.numpy())
    with pytest.raises(ValueError, match="index"):
        model.train_step({name: value for name, value in data.items() if name != "index"})


def fashion_indexed_views(image_size, batch):
    """Endless {"views": (view,), "labels", "index"} batches of the first 64 Fashion-MNIST train images, mildly
    augmented."""
    from tfssl.data import load_split

    split = load_split("fashion_mnist", "train[:64]")
    images, labels, index = (np.stack([e[i].numpy() for e in split.dataset]) for i in range(3))
    augment = SimCLRAugment(image_size, color_jitter_strength=0.25, crop_area=(0.5, 1.0))
    ds = tf.data.Dataset.from_tensor_slices((images, labels, index)).repeat().batch(batch).enumerate()

    def view(step, element):
        x = tf.image.convert_image_dtype(element[0], tf.float32)
        return host_batch(augment(x, tf.stack([step, 2 * step])), labels=element[1], index=element[2])

    return ds.map(view), split.num_examples


def test_short_fit_lowers_the_loss(tiny_encoder):
    """24 steps on 64 real images with the non-parametric softmax: the loss falls from its random-bank
    value to below log(K + 1), the loss of any collapsed solution (all logits equal), so the positive
    really beats the negatives.

    The NCE objective is not used here: with N = 64 the bank is full of the (nearly parallel) features of
    an untrained network after 4 steps, every negative logit then exceeds log(K Z / N) for the Z frozen
    from the random bank, and this toy run collapses (its loss rises). The paper's regime differs: with
    N >> steps x batch the first epoch's negatives are mostly untouched random rows.
    """
    steps, num_negatives = 24, 64
    dataset, num_examples = fashion_indexed_views(16, 16)
    assert num_examples == 64
    model = _instdis(tiny_encoder(16), loss="softmax", num_examples=num_examples, num_negatives=num_negatives,
                     num_classes=10)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.03, momentum=0.9))
    history = model.fit(dataset, steps_per_epoch=1, epochs=steps, verbose=0)
    losses = np.array(history.history["loss"])
    assert np.all(np.isfinite(losses))
    assert losses[-4:].mean() < losses[:4].mean() - 3.0, losses
    assert losses[-4:].mean() < np.log(num_negatives + 1) - 0.3, losses
    collapse = np.array(history.history["collapse_std"])
    assert np.all((collapse > 0) & (collapse <= 1.0))


def test_save_reload_and_checkpoint_round_trip(tmp_path, tiny_encoder):
    model = _instdis(tiny_encoder(SIZE), loss="nce", temperature=0.1, bank_momentum=0.75,
                     augment=SimCLRAugment(SIZE, color_jitter_strength=0.5))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.9))
    model.train_step(_as_batch(_batch(seed=5)))  # bank, Z and optimizer now hold state
    path = str(tmp_path / "instdis.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, InstDis)
    assert ((loaded.num_examples, loaded.temperature, loaded.num_negatives, loaded.bank_momentum, loaded.objective)
            == (NUM_EXAMPLES, 0.1, K, 0.75, "nce"))
    assert loaded.augment.get_config() == model.augment.get_config()
    assert int(loaded.optimizer.iterations.numpy()) == 1
    np.testing.assert_array_equal(loaded.bank.read().numpy(), model.bank.read().numpy())
    assert float(loaded.normalizer.numpy()) == float(model.normalizer.numpy()) > 0
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = _batch(seed=6)[0]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    h = model.encoder(x, training=False)
    np.testing.assert_allclose(loaded.projector(h).numpy(), model.projector(h).numpy(), rtol=1e-5, atol=1e-6)

    # tf.train.Checkpoint (what pretrain saves) also carries the bank and Z.
    tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    fresh = _instdis(tiny_encoder(SIZE), loss="nce", temperature=0.1, bank_momentum=0.75, seed=7)
    assert not np.array_equal(fresh.bank.read().numpy(), model.bank.read().numpy())
    tf.train.Checkpoint(model=fresh).read(str(tmp_path / "ckpt")).expect_partial()
    np.testing.assert_array_equal(fresh.bank.read().numpy(), model.bank.read().numpy())
    assert float(fresh.normalizer.numpy()) == float(model.normalizer.numpy())


def test_bad_arguments_and_a_model_without_bank(tiny_encoder):
    encoder = tiny_encoder(SIZE)
    for kwargs, match in ((dict(bank_momentum=-0.5), "bank_momentum"), (dict(bank_momentum=1.0), "bank_momentum"),
                          (dict(num_negatives=0), "num_negatives"), (dict(loss="triplet"), "unknown InstDis loss"),
                          (dict(num_examples=0), "num_examples"), (dict(temperature=-1.0), "temperature")):
        with pytest.raises(ValueError, match=match):
            _instdis(encoder, **kwargs)
    model = _instdis(encoder, num_examples=None, linear_probe=False)
    assert model.bank is None and model.normalizer is None
    copy = InstDis.from_config(model.get_config())
    assert copy.bank is None and copy.num_negatives == K and copy.objective == "nce"
    copy.set_weights(model.get_weights())  # no bank, no Z: the same weight list as the original
    x = _batch(seed=8)[0]
    np.testing.assert_allclose(copy(x).numpy(), model(x).numpy(), atol=1e-6)
    _sgd(model)
    with pytest.raises(ValueError, match="num_examples"):
        model.train_step(_as_batch(_batch(seed=8)))


@pytest.mark.parametrize("head_bn", [False, True])
def test_build_method_head_and_bank(head_bn):
    """build_method: the paper's linear 128-d head (batch-normalised with --instdis_head_bn), a bank row per
    training example, the flags' loss settings; restore-style builds (no num_examples) have no bank."""
    from tfssl.config import TrainConfig
    from tfssl.methods import build_method

    config = TrainConfig(model_dir="x", method="instdis", image_size=8, width_multiplier=0.125,
                         method_options=dict(proj_dim=16, head_bn=head_bn, negatives=32, momentum=0.5, temperature=0.07,
                                             loss="softmax"))
    model = build_method(config, num_examples=50)
    assert model.projector.num_layers == 1 and model.projector.use_bn == head_bn
    assert [w.name for w in model.projector.weights if "moving_mean" in w.path] == (["moving_mean"] if head_bn else [])
    assert tuple(model.bank.bank.shape) == (50, 16) and model.num_negatives == 32 and model.objective == "softmax"
    assert build_method(config).bank is None
