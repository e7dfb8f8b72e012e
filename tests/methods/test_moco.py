"""MoCo v1/v2 and v3: losses against float64 numpy on the model's own outputs, the key encoder's momentum
update against hand arithmetic, no gradient into keys, the queue after a step, shuffled BN, 2 replicas = 1
device, one SGD step against an independent gradient, a short run that learns, .keras round trips and the
parts build_method picks per version.

The independent-update tests write the losses here (MoCo eq. (1) with the queue; MoCo v3's 2 tau-scaled
symmetric ctr) with their own normalisation and cross-entropy, take the keys as constants of the key /
momentum networks, and differentiate through the query sub-networks with the batch-norm grouping the
method uses. One real `train_step` with plain SGD must move every trainable variable by -lr * that
gradient; wrong variants (other key view, other BN grouping, wrong temperature or 2 tau factor, a
differentiable key side) give clearly different gradients, so the check can fail.

Tiny conv encoder throughout (tests/methods/conftest.py): what is under test is the method's composition.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.augment import BYOLAugment, SimCLRAugment, ViewRecipe
from tfssl.config import TrainConfig
from tfssl.heads import ProjectionHead, predictor_head
from tfssl.methods import MoCo, MoCoV3, build_augment, build_method
from tfssl.encoders.shuffled_bn import shuffle_permutation
from tfssl.training import build_training
from method_data import fashion_views, host_batch, one_step, random_views, uneven_global_batch

SIZE, BATCH, NUM_CLASSES, DIM = 8, 8, 3, 8
LR = 0.1


def _moco(tiny_encoder, queue_size=16, momentum=0.9, temperature=0.2, bn_splits=1, seed=0, image_size=SIZE,
          layers=2, num_classes=NUM_CLASSES):
    keras.utils.set_random_seed(seed)
    projector = ProjectionHead(num_layers=layers, output_dim=DIM, hidden_dim=16, use_bn=False, name="projector")
    model = MoCo(tiny_encoder(image_size), projector, queue_size=queue_size, momentum=momentum,
                 temperature=temperature, bn_splits=bn_splits, num_classes=num_classes, seed=seed)
    model.build_heads()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1))
    return model


def _moco_v3(tiny_encoder, temperature=0.5, tau_base=0.9, seed=0, image_size=SIZE, num_classes=NUM_CLASSES,
             total_steps=10):
    keras.utils.set_random_seed(seed)
    projector = ProjectionHead(num_layers=2, output_dim=DIM, hidden_dim=16, last_bn=True, name="projector")
    model = MoCoV3(tiny_encoder(image_size), projector, predictor_head(DIM, 16), temperature=temperature,
                   tau_base=tau_base, total_steps=total_steps, num_classes=num_classes, seed=seed)
    model.build_heads()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1))
    return model


def _step(model, view1, view2, labels):
    """One train_step through Keras fit on a single batch; returns the logged values."""
    history = model.fit(tf.data.Dataset.from_tensors(host_batch(view1, view2, labels=labels)), epochs=1,
                        verbose=0).history
    return {name: values[-1] for name, values in history.items()}


def _l2n(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _numpy_infonce(q, k, queue, temperature):
    q, k, queue = _l2n(q), _l2n(k), _l2n(queue)
    logits = np.concatenate([(q * k).sum(1, keepdims=True), q @ queue.T], axis=1) / temperature
    return -_log_softmax(logits)[:, 0].mean()


def _numpy_ctr(q, k, temperature):
    logits = _l2n(q) @ _l2n(k).T / temperature
    return -np.diag(_log_softmax(logits)).mean() * 2 * temperature


def test_moco_step_loss_queue_and_momentum_by_hand(tiny_encoder):
    model = _moco(tiny_encoder)
    view1, view2, labels = random_views(0, BATCH, SIZE, NUM_CLASSES)
    # Forward passes of the networks as they stand before the step (train-mode BN: batch statistics).
    q = model.projector(model.encoder(view1, training=True), training=True).numpy()
    k = model.key_projector(model.key_encoder(view2, training=True), training=True).numpy()
    queue_before = model.queue.read().numpy()
    pairs_before = [(o.numpy(), t.numpy()) for o, t in model.key_pairs()]
    logs = _step(model, view1, view2, labels)

    np.testing.assert_allclose(logs["loss"], _numpy_infonce(q, k, queue_before, 0.2), rtol=1e-5)
    # The newest keys replaced the oldest rows 0..B-1 (normalised); the rest of the queue is untouched.
    queue_after = model.queue.read().numpy()
    np.testing.assert_allclose(queue_after[:BATCH], _l2n(k), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(queue_after[BATCH:], queue_before[BATCH:])
    assert int(model.queue.pointer.numpy()) == BATCH
    # f_k <- 0.9 f_k + 0.1 f_q, with f_q already updated by this step's gradient.
    for (online, target), (online0, target0) in zip(model.key_pairs(), pairs_before):
        assert not np.allclose(online.numpy(), online0) or online0.ndim == 1
        np.testing.assert_allclose(target.numpy(), 0.9 * target0 + 0.1 * online.numpy(), rtol=1e-5, atol=1e-7)
    # Top-1 key retrieval among 1 + K candidates, from the same numpy logits.
    logits = np.concatenate([(_l2n(q) * _l2n(k)).sum(1, keepdims=True), _l2n(q) @ _l2n(queue_before).T], 1)
    np.testing.assert_allclose(logs["key_acc"], np.mean(logits.argmax(1) == 0), atol=1e-6)


def _tf_l2n(x):
    return x / tf.norm(x, axis=1, keepdims=True)


def _tf_cross_entropy(logits, columns):
    """Mean over rows of -log softmax(logits)[row, columns[row]], from logsumexp."""
    picked = tf.gather(logits, columns, batch_dims=1)
    return tf.reduce_mean(tf.reduce_logsumexp(logits, axis=1) - picked)


def _probe_cross_entropy(model, features, labels):
    """The online probe's loss on constant features (all labels are >= 0 here)."""
    logits = tf.matmul(tf.constant(features.numpy()), model.probe.kernel) + model.probe.bias
    return _tf_cross_entropy(logits, labels)


def _check_sgd_update(variables, before, grads):
    """Every variable moved by -LR * its reference gradient; returns the largest step taken."""
    largest = max(np.max(np.abs(LR * g)) for g in grads)
    for v, w0, g in zip(variables, before, grads):
        # A gradient that is exactly 0 in theory (a shift removed by a later batch norm) is float32 noise on
        # both sides: compare near-zero gradients at 1e-7 of the largest step, not at 1e-3 of their noise.
        scale = max(np.max(np.abs(LR * g)), 1e-4 * largest)
        np.testing.assert_allclose(v.numpy() - w0, -LR * g, rtol=1e-3, atol=1e-3 * scale, err_msg=v.path)
    return max(np.max(np.abs(v.numpy() - w0)) for v, w0 in zip(variables, before))


def _gradient_gap(grads, other):
    """||g - g'|| / ||g|| over all variables together."""
    flat = np.concatenate([g.ravel() for g in grads])
    return np.linalg.norm(flat - np.concatenate([g.ravel() for g in other])) / np.linalg.norm(flat)


def _moco_reference_gradients(model, view1, view2, labels, query_groups, key_groups, temperature, key_view=2):
    """Gradient of MoCo eq. (1) + the probe's cross-entropy w.r.t. `model.trainable_variables`, written here.

    Keys: the key network on view `key_view` (2 in MoCo: queries view 1, keys view 2), a numpy constant; with
    shuffled BN (`key_groups` > 1) the batch goes through it in the groups of the step's permutation, each
    key returned to its image's row. Queries: the query encoder on `query_groups` consecutive chunks of view
    1 (the head, without BN, on the whole batch). Logits [q.k, q.queue_1..K] / temperature of unit vectors,
    label 0.

    Returns:
      `(gradients as numpy arrays, InfoNCE loss, probe loss)`.
    """
    key_images = view2 if key_view == 2 else view1
    net = lambda x: model.key_projector(model.key_encoder(x, training=True), training=True).numpy()
    if key_groups == 1:
        keys = net(key_images)
    else:  # step 0's permutation, cut into groups in the shuffled order
        perm = shuffle_permutation(BATCH, tf.constant([model.seed, 0])).numpy()
        keys = np.zeros((BATCH, DIM), np.float32)
        for group in np.split(perm, key_groups):
            keys[group] = net(tf.gather(key_images, group))
    keys = tf.constant(keys)
    queue = tf.constant(model.queue.keys.numpy())
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        chunk = BATCH // query_groups
        h = tf.concat([model.encoder(view1[i * chunk:(i + 1) * chunk], training=True)
                       for i in range(query_groups)], axis=0)
        q = _tf_l2n(model.projector(h, training=True))
        positive = tf.reduce_sum(q * _tf_l2n(keys), axis=1, keepdims=True)
        negatives = tf.matmul(q, _tf_l2n(queue), transpose_b=True)
        logits = tf.concat([positive, negatives], axis=1) / temperature
        loss = _tf_cross_entropy(logits, tf.zeros([BATCH], tf.int32))
        probe_loss = _probe_cross_entropy(model, h, labels)
        total = loss + probe_loss
    grads = tape.gradient(total, variables)
    assert all(g is not None for g in grads), [v.path for v, g in zip(variables, grads) if g is None]
    return [g.numpy() for g in grads], float(loss), float(probe_loss)


@pytest.mark.parametrize("version, layers, temperature, bn_splits", [
    ("v1", 1, 0.07, 1),  # linear head, tau 0.07, BN over the whole (single-device) batch
    ("v2", 2, 0.2, 2),   # MLP head, tau 0.2, shuffled BN in 2 groups
], ids=["v1", "v2"])
def test_moco_train_step_matches_independent_sgd_update(tiny_encoder, version, layers, temperature, bn_splits):
    model = _moco(tiny_encoder, layers=layers, temperature=temperature, bn_splits=bn_splits, seed=3)
    view1, view2, labels = random_views(4, BATCH, SIZE, NUM_CLASSES)
    weights = model.get_weights()
    reference = dict(query_groups=bn_splits, key_groups=bn_splits, temperature=temperature)
    grads, want_loss, want_probe_loss = _moco_reference_gradients(model, view1, view2, labels, **reference)
    controls = {}
    other_groups = 2 if bn_splits == 1 else 1
    for name, wrong in (("keys_of_view_1", dict(key_view=1)),
                        ("other_query_bn_groups", dict(query_groups=other_groups)),
                        ("other_key_bn_groups", dict(key_groups=other_groups)),
                        ("other_temperature", dict(temperature=0.2 if temperature == 0.07 else 0.07))):
        model.set_weights(weights)  # reference passes must leave no BN statistics behind
        controls[name] = _moco_reference_gradients(model, view1, view2, labels, **{**reference, **wrong})
    model.set_weights(weights)
    variables = model.trainable_variables
    before = [v.numpy() for v in variables]
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=LR, momentum=0.0))
    logs = model.train_step(host_batch(view1, view2, labels=labels))

    assert _check_sgd_update(variables, before, grads) > 1e-3
    np.testing.assert_allclose(float(logs["loss"]), want_loss, rtol=1e-5)
    np.testing.assert_allclose(float(logs["probe_loss"]), want_probe_loss, rtol=1e-5)
    for name, (wrong_grads, _, _) in controls.items():
        gap = _gradient_gap(grads, wrong_grads)
        assert gap > 0.05, (version, name, gap)
    # The key network's momentum update and the queue are checked by hand in the test above.


def test_queue_wraps_around_over_steps(tiny_encoder):
    model = _moco(tiny_encoder, queue_size=12)  # 12 = 8 + 4: the second batch wraps
    keys = []
    for seed in (1, 2):
        view1, view2, labels = random_views(seed, BATCH, SIZE, NUM_CLASSES)
        keys.append(_l2n(model.key_projector(model.key_encoder(view2, training=True), training=True).numpy()))
        _step(model, view1, view2, labels)
    queue = model.queue.read().numpy()
    np.testing.assert_allclose(queue[:4], keys[1][4:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(queue[4:8], keys[0][4:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(queue[8:12], keys[1][:4], rtol=1e-5, atol=1e-6)
    assert int(model.queue.pointer.numpy()) == 4


def test_no_gradient_reaches_key_encoder_or_queue(tiny_encoder):
    from tfssl.losses import infonce_loss

    model = _moco(tiny_encoder)
    view1, view2, _ = random_views(0, BATCH, SIZE, NUM_CLASSES)
    key_weights = model.key_encoder.weights + model.key_projector.weights + model.queue.weights
    assert not any(v.trainable for v in key_weights)
    trainable_ids = {id(v) for v in model.trainable_variables}
    assert not any(id(v) in trainable_ids for v in key_weights)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([v.value for v in key_weights])
        q = model.projector(model.encoder(view1, training=True), training=True)
        loss = infonce_loss(q, model.keys(view2, tf.constant(0)), model.queue.read(), 0.2).loss
    assert all(g is None for g in tape.gradient(loss, key_weights))
    grads = tape.gradient(loss, model.encoder.trainable_variables)
    assert all(g is not None for g in grads)


def test_shuffled_bn_normalises_each_key_with_its_group(tiny_encoder):
    """bn_splits=2: every key equals the key network's output on the shuffled group it was placed in."""
    model = _moco(tiny_encoder, bn_splits=2)
    _, view2, _ = random_views(3, BATCH, SIZE, NUM_CLASSES)
    keys = model.keys(view2, tf.constant(5)).numpy()
    perm = shuffle_permutation(BATCH, tf.constant([0, 5])).numpy()
    assert sorted(perm.tolist()) == list(range(BATCH))
    assert not np.array_equal(perm, shuffle_permutation(BATCH, tf.constant([0, 6])).numpy())
    net = lambda x: model.key_projector(model.key_encoder(x, training=True), training=True).numpy()
    for group in (perm[:4], perm[4:]):
        np.testing.assert_allclose(keys[group], net(tf.gather(view2, group)), rtol=1e-5, atol=1e-6)
    # Normalising all 8 together gives different keys: the grouping is real, not a no-op.
    assert np.max(np.abs(keys - net(view2))) > 1e-3


def _moco_config(bn_splits, method="moco_v1", queue=16):
    options = dict(proj_dim=DIM, temperature=0.2, queue_size=queue, momentum=0.9, bn_splits=bn_splits)
    if method == "moco_v2":
        options.update(proj_layers=2, proj_hidden_dim=16)  # v1's head is one linear layer
    return TrainConfig(model_dir="unused", method=method, image_size=SIZE, batch_size=BATCH, optimizer="sgd",
                       momentum=0.0, weight_decay=0.0, learning_rate=0.05, lr_scaling="none", warmup_epochs=0.0,
                       augment_on="host", seed=0, method_options=options)


def test_two_replicas_shuffle_bn_equal_one_device_with_two_splits(two_replica_strategy,
                                                                  tiny_encoder_in_build_method):
    """Shuffled BN over 2 replicas is, step for step, one device whose key batch is cut in 2 shuffled groups."""
    strategy, single_strategy = two_replica_strategy, tf.distribute.get_strategy()
    distributed, _ = build_training(_moco_config(1), strategy, NUM_CLASSES, steps_per_epoch=1, total_steps=10)
    single, _ = build_training(_moco_config(2), single_strategy, NUM_CLASSES, steps_per_epoch=1, total_steps=10)
    single.set_weights(distributed.get_weights())
    initial = [v.numpy().copy() for v in single.trainable_variables]
    data = uneven_global_batch(BATCH, SIZE, NUM_CLASSES)
    logs = [one_step(distributed, strategy, data), one_step(single, single_strategy, data)]
    for name in ("loss", "collapse_std", "key_acc", "probe_loss"):
        np.testing.assert_allclose(logs[0][name], logs[1][name], rtol=1e-4, atol=1e-6, err_msg=name)
    for v_dist, v_single in zip(distributed.weights, single.weights):
        if "moving" in v_single.path:
            continue  # BN moving statistics: per-replica means are averaged, splits are applied in turn
        replicas = [np.asarray(r) for r in strategy.experimental_local_results(v_dist.value)]
        np.testing.assert_allclose(replicas[1], replicas[0], rtol=1e-6, atol=1e-7, err_msg=v_dist.path)
        np.testing.assert_allclose(replicas[0], v_single.numpy(), rtol=1e-4, atol=1e-6, err_msg=v_dist.path)
    moved = [np.max(np.abs(v.numpy() - w0)) > 0 for v, w0 in zip(single.trainable_variables, initial)]
    assert sum(moved) > 0.9 * len(moved)


def test_moco_v3_loss_against_numpy(tiny_encoder):
    model = _moco_v3(tiny_encoder)
    view1, view2, labels = random_views(0, BATCH, SIZE, NUM_CLASSES)
    online = lambda v: model.predictor(model.projector(model.encoder(v, training=True), training=True),
                                       training=True).numpy()
    target = lambda v: model.target_projector(model.target_encoder(v, training=True), training=True).numpy()
    q1, q2, k1, k2 = online(view1), online(view2), target(view1), target(view2)
    logs = _step(model, view1, view2, labels)
    want = _numpy_ctr(q1, k2, 0.5) + _numpy_ctr(q2, k1, 0.5)
    np.testing.assert_allclose(logs["loss"], want, rtol=1e-5)
    hits = np.concatenate([(_l2n(q1) @ _l2n(k2).T).argmax(1), (_l2n(q2) @ _l2n(k1).T).argmax(1)]) == np.tile(
        np.arange(BATCH), 2)
    np.testing.assert_allclose(logs["key_acc"], hits.mean(), atol=1e-6)


def _moco_v3_reference_gradients(model, view1, view2, labels, crossed=True, two_tau=True, keys_have_gradient=False):
    """Gradient of MoCo v3's loss + the probe's cross-entropy w.r.t. `model.trainable_variables`, written here.

    loss = ctr(q1, k2) + ctr(q2, k1), ctr(q, k) = 2 tau * mean_i CE(row i of q.k^T / tau, column i) on unit
    vectors; q_v = predictor(projector(encoder(x_v))), one view per call (per-view BN, as BYOL); k_v the
    momentum network's projection of view v, a numpy constant. Wrong versions for the positive controls:
    `crossed=False` pairs each query with its own view's keys, `two_tau=False` drops the 2 tau factor,
    `keys_have_gradient` uses the online projections (the same values at step 0) differentiably.

    Returns:
      `(gradients as numpy arrays, loss, probe loss)`.
    """
    tau = model.temperature
    momentum_net = lambda x: tf.constant(
        model.target_projector(model.target_encoder(x, training=True), training=True).numpy())
    k1, k2 = momentum_net(view1), momentum_net(view2)

    def ctr(q, k):
        logits = tf.matmul(_tf_l2n(q), _tf_l2n(k), transpose_b=True) / tau
        return (2.0 * tau if two_tau else 1.0) * _tf_cross_entropy(logits, tf.range(BATCH))

    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        h1, h2 = model.encoder(view1, training=True), model.encoder(view2, training=True)
        z1, z2 = model.projector(h1, training=True), model.projector(h2, training=True)
        q1, q2 = model.predictor(z1, training=True), model.predictor(z2, training=True)
        if keys_have_gradient:
            k1, k2 = z1, z2
        loss = ctr(q1, k2) + ctr(q2, k1) if crossed else ctr(q1, k1) + ctr(q2, k2)
        probe_loss = _probe_cross_entropy(model, h1, labels)
        total = loss + probe_loss
    grads = tape.gradient(total, variables)
    assert all(g is not None for g in grads), [v.path for v, g in zip(variables, grads) if g is None]
    return [g.numpy() for g in grads], float(loss), float(probe_loss)


def test_moco_v3_train_step_matches_independent_sgd_update_and_momentum_by_hand(tiny_encoder):
    tau_base, total_steps = 0.9, 10
    # Temperature 0.2, not 0.5: at 0.5 the 2 tau factor is 1 and leaving it out could not be seen.
    model = _moco_v3(tiny_encoder, temperature=0.2, tau_base=tau_base, total_steps=total_steps, seed=5)
    view1, view2, labels = random_views(6, BATCH, SIZE, NUM_CLASSES)
    weights = model.get_weights()
    grads, want_loss, want_probe_loss = _moco_v3_reference_gradients(model, view1, view2, labels)
    controls = {}
    for name, wrong in (("same_view_pairs", dict(crossed=False)), ("no_2_tau_factor", dict(two_tau=False)),
                        ("keys_have_gradient", dict(keys_have_gradient=True))):
        model.set_weights(weights)  # reference passes must leave no BN statistics behind
        controls[name] = _moco_v3_reference_gradients(model, view1, view2, labels, **wrong)
    model.set_weights(weights)
    variables = model.trainable_variables
    before = [v.numpy() for v in variables]
    # (online, momentum) weight pairs of encoder and projector, matched by position; BN moving statistics
    # (not trainable in the online network) are left to the momentum network's own forward passes.
    pairs = [(online, target)
             for online_net, target_net in ((model.encoder, model.target_encoder),
                                            (model.projector, model.target_projector))
             for online, target in zip(online_net.weights, target_net.weights) if online.trainable]
    assert len(pairs) == len(model.encoder.trainable_weights) + len(model.projector.trainable_weights)
    target_before = [t.numpy().astype(np.float64) for _, t in pairs]
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=LR, momentum=0.0))
    logs = model.train_step(host_batch(view1, view2, labels=labels))

    assert _check_sgd_update(variables, before, grads) > 1e-3
    np.testing.assert_allclose(float(logs["loss"]), want_loss, rtol=1e-5)
    np.testing.assert_allclose(float(logs["probe_loss"]), want_probe_loss, rtol=1e-5)
    np.testing.assert_allclose(controls["keys_have_gradient"][1], want_loss, rtol=1e-5)  # same value, other gradient
    for name, (wrong_grads, _, _) in controls.items():
        gap = _gradient_gap(grads, wrong_grads)
        assert gap > 0.05, (name, gap)
    # Momentum at step 0: 1 - (1 - tau_base) (cos(0) + 1) / 2 = tau_base, applied after the SGD step, so the
    # momentum network follows the online weights AFTER their update.
    m = 1 - (1 - tau_base) * (np.cos(np.pi * 0 / total_steps) + 1) / 2
    moved = 0
    for (online, target), t0 in zip(pairs, target_before):
        want = m * t0 + (1 - m) * online.numpy().astype(np.float64)
        np.testing.assert_allclose(target.numpy(), want, rtol=1e-5, atol=1e-7, err_msg=target.path)
        moved += np.max(np.abs(target.numpy() - t0)) > 1e-5
    assert moved > len(pairs) // 2  # at step 0 the momentum copy equals the online weights: only the update moves it


def test_moco_v3_closed_form_at_uniform_similarity(tiny_encoder):
    """Identical keys for every image: each query sees B equal logits, so ctr = 2 tau log B per direction."""
    from tfssl.losses import symmetric_contrastive_loss

    q = tf.random.normal([BATCH, DIM])
    k = tf.ones([BATCH, DIM])
    loss = symmetric_contrastive_loss(q, q, k, k, temperature=0.5).loss
    np.testing.assert_allclose(float(loss), 2 * 2 * 0.5 * np.log(BATCH), rtol=1e-5)


@pytest.mark.parametrize("method", ["moco_v1", "moco_v3"])
def test_short_run_learns(method, tiny_encoder):
    """A few dozen steps on real Fashion-MNIST views: the contrastive loss falls."""
    if method == "moco_v1":
        model = _moco(tiny_encoder, image_size=16, queue_size=32, num_classes=10)
    else:
        model = _moco_v3(tiny_encoder, image_size=16, num_classes=10, total_steps=60)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9))
    history = model.fit(fashion_views(16, 32), steps_per_epoch=10, epochs=6, verbose=0).history["loss"]
    assert history[-1] < history[0] - 0.05, history
    assert history[-1] == pytest.approx(min(history), abs=0.1)


@pytest.mark.parametrize("method", ["moco_v1", "moco_v3"])
def test_keras_round_trip(method, tiny_encoder, tmp_path):
    model = _moco(tiny_encoder) if method == "moco_v1" else _moco_v3(tiny_encoder)
    view1, view2, labels = random_views(0, BATCH, SIZE, NUM_CLASSES)
    _step(model, view1, view2, labels)
    path = str(tmp_path / f"{method}.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    np.testing.assert_allclose(loaded.predict(view1, verbose=0), model.predict(view1, verbose=0), rtol=1e-5,
                               atol=1e-6)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    if method == "moco_v1":
        np.testing.assert_array_equal(loaded.queue.read().numpy(), model.queue.read().numpy())
        assert loaded.get_config()["queue_size"] == 16 and loaded.temperature == 0.2
    else:
        assert loaded.temperature == 0.5


def test_build_method_parts_per_version():
    v1 = build_method(_moco_config(1, "moco_v1"))
    assert len(v1.projector.blocks) == 1 and not v1.projector.use_bn
    v2 = build_method(_moco_config(1, "moco_v2"))
    assert len(v2.projector.blocks) == 2 and not v2.projector.use_bn
    assert isinstance(v1, MoCo) and isinstance(v2, MoCo) and v2.queue.size == 16
    v3 = build_method(TrainConfig(model_dir="x", method="moco_v3", image_size=SIZE, width_multiplier=0.125,
                                  method_options=dict(proj_layers=2, proj_dim=DIM, proj_hidden_dim=16,
                                                      pred_hidden_dim=0, temperature=1.0, tau_base=0.99)),
                      total_steps=5)
    assert isinstance(v3, MoCoV3) and v3.projector.last_bn and v3.tau_base == 0.99 and v3.temperature == 1.0
    def only_recipe(recipe):
        """The per-image pipeline of a view recipe whose two views come from one recipe."""
        assert isinstance(recipe, ViewRecipe) and recipe.num_views == 2 and len(recipe.groups) == 1
        return recipe.groups[0].recipe

    aug1 = only_recipe(build_augment(_moco_config(1, "moco_v1")))
    assert aug1.jitter_prob == 1.0 and tuple(aug1.crop_area) == (0.2, 1.0) and not aug1.blur_enabled
    aug2 = only_recipe(build_augment(TrainConfig(model_dir="x", method="moco_v2", image_size=SIZE, blur="true")))
    assert isinstance(aug2, SimCLRAugment) and aug2.blur_enabled and tuple(aug2.crop_area) == (0.2, 1.0)
    # MoCo v3: BYOL's asymmetric pair, one crop group (one view) per recipe of the pair.
    aug3 = build_augment(TrainConfig(model_dir="x", method="moco_v3", image_size=SIZE))
    assert isinstance(aug3, ViewRecipe) and [g.count for g in aug3.groups] == [1, 1]
    assert all(isinstance(g.recipe, BYOLAugment) for g in aug3.groups)
    assert [(g.recipe.blur_prob, g.recipe.solarize_prob) for g in aug3.groups] == [(1.0, 0.0), (0.1, 0.2)]


@pytest.mark.parametrize("changes, options, message", [
    (dict(method="moco_v2", sync_bn=True), {}, "--sync_bn re-opens"),
    (dict(method="moco_v1"), dict(bn_splits=3), "--moco_v1_bn_splits=3 must divide the per-replica batch 8"),
    (dict(method="moco_v1"), dict(queue_size=0), "--moco_v1_queue_size"),
    (dict(method="moco_v2"), dict(momentum=1.5), "--moco_v2_momentum"),
])
def test_config_errors(changes, options, message):
    config = TrainConfig(model_dir="x", batch_size=8, method_options=options, **changes)
    with pytest.raises(ValueError, match=message):
        config.validate()

