"""KeyQueue: FIFO order, wrap-around, oversize batches, no gradient through read() (with positive
controls that remove the stop-gradient), also on MoCo's loss path, gathered enqueue across replicas."""
import importlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.heads import KeyQueue, ProjectionHead
from tfssl.losses import infonce_loss
from tfssl.methods import MoCo


def reference_fifo(initial, batches):
    """Plain-python ring buffer: write each key at the pointer, advance, wrap."""
    buffer, pointer = initial.copy(), 0
    for batch in batches:
        for key in batch[-len(buffer):]:
            buffer[pointer] = key
            pointer = (pointer + 1) % len(buffer)
    return buffer, pointer


def test_initial_keys_are_unit_norm():
    queue = KeyQueue(size=6, dim=3)
    np.testing.assert_allclose(np.linalg.norm(queue.read().numpy(), axis=1), 1.0, rtol=1e-5)


def test_fifo_with_wrap_around_and_oversize_batch():
    rng = np.random.default_rng(0)
    queue = KeyQueue(size=5, dim=2)
    initial = queue.read().numpy()
    batches = [rng.normal(size=(n, 2)).astype(np.float32) for n in (2, 2, 3, 7, 1)]
    for i, batch in enumerate(batches):
        queue.enqueue(batch)
        expected, pointer = reference_fifo(initial, batches[:i + 1])
        np.testing.assert_allclose(queue.read().numpy(), expected)
        assert int(queue.pointer.numpy()) == pointer


class _TensorFlowWithoutStopGradient:
    """Stands in for the `tf` module of one library module: TensorFlow itself, except that
    `stop_gradient` is the identity. Installed with monkeypatch in that module's namespace only, it
    removes the stop-gradient there (the positive control) and nowhere else in the session."""

    @staticmethod
    def stop_gradient(tensor, name=None):
        return tf.identity(tensor, name=name)

    def __getattr__(self, name):
        return getattr(tf, name)


def _without_stop_gradient(patch, *module_names):
    for name in module_names:
        patch.setattr(importlib.import_module(name), "tf", _TensorFlowWithoutStopGradient())


def _gradient_into_keys(queue, query, mode):
    """d/d(keys) of sum_j <read()_j, query>, a logit-style dot product of every stored key with a query.

    The keys variable is non-trainable, so the tape only sees it because it is watched explicitly.
    """
    def compute():
        with tf.GradientTape() as tape:
            tape.watch(queue.keys.value)
            loss = tf.reduce_sum(tf.linalg.matvec(queue.read(), query))
        assert [id(v) for v in tape.watched_variables()] == [id(queue.keys.value)]
        return loss, tape.gradient(loss, queue.keys.value)

    # A fresh tf.function per call, so graph mode traces read() as the namespace stands right now.
    return compute() if mode == "eager" else tf.function(compute)()


@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_no_gradient_flows_through_read_into_the_keys(mode, monkeypatch):
    queue = KeyQueue(size=4, dim=3)
    assert isinstance(queue.keys.value, tf.Variable)  # what the tape can watch
    assert not queue.trainable_variables and not queue.keys.trainable and not queue.pointer.trainable
    keys = queue.read().numpy()
    query = tf.constant([0.5, -2.0, 3.0])

    loss, grad = _gradient_into_keys(queue, query, mode)
    # The stop-gradient cuts the path entirely: TF reports None (unconnected), not a zero tensor.
    assert grad is None
    np.testing.assert_allclose(loss.numpy(), (keys @ query.numpy()).sum(), rtol=1e-6)

    # Positive control: the same computation with read()'s stop-gradient replaced by the identity
    # must see the closed-form gradient d/dK sum_j <K_j, q> = every row equal to q.
    with monkeypatch.context() as patch:
        _without_stop_gradient(patch, KeyQueue.__module__)
        patched_loss, patched_grad = _gradient_into_keys(queue, query, mode)
    assert patched_grad is not None
    np.testing.assert_array_equal(patched_grad.numpy(), np.tile(query.numpy(), (4, 1)))
    assert patched_loss.numpy() == loss.numpy()  # the forward value does not depend on the patch

    # The patch was scoped: read() stops the gradient again.
    assert _gradient_into_keys(queue, query, mode)[1] is None


def _tiny_moco(queue_size=6, dim=4):
    """A MoCo whose query encoder is one conv + global pooling: the queue path is what matters."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, strides=2)(inputs))
    projector = ProjectionHead(num_layers=1, output_dim=dim, use_bn=False, name="projector")
    model = MoCo(keras.Model(inputs, features), projector, queue_size=queue_size, temperature=0.5)
    model.build_heads()
    return model


def _numpy_infonce_queue_gradient(q, k, queue, temperature):
    """d/d(queue) in float64 of MoCo's mean InfoNCE loss, through the l2-normalisation of each queue row."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    k = k / np.linalg.norm(k, axis=1, keepdims=True)
    norms = np.linalg.norm(queue, axis=1, keepdims=True)
    unit = queue / norms
    logits = np.concatenate([(q * k).sum(1, keepdims=True), q @ unit.T], axis=1) / temperature
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d_unit = p[:, 1:].T @ q / (temperature * len(q))  # d loss / d unit_j
    return (d_unit - (d_unit * unit).sum(1, keepdims=True) * unit) / norms


# Both read() and infonce_loss stop the gradient into the queue; either alone must be enough.
@pytest.mark.parametrize("removed", [(), ("queue",), ("loss",), ("queue", "loss")])
def test_moco_loss_sends_no_gradient_into_its_queue(removed, monkeypatch):
    model = _tiny_moco()
    rng = np.random.default_rng(0)
    view1, view2 = (rng.uniform(size=(5, 8, 8, 3)).astype(np.float32) for _ in range(2))
    modules = {"queue": KeyQueue.__module__, "loss": infonce_loss.__module__}
    with monkeypatch.context() as patch:
        _without_stop_gradient(patch, *(modules[name] for name in removed))
        with tf.GradientTape() as tape:
            tape.watch(model.queue.keys.value)
            q = model.projector(model.encoder(view1, training=True), training=True)
            k = model.keys(view2, tf.constant(0))
            loss = infonce_loss(q, k, model.queue.read(), model.temperature).loss  # as in train_step
        grad = tape.gradient(loss, model.queue.keys.value)
    if len(removed) < 2:
        assert grad is None
    else:  # positive control: with both stop-gradients gone the gradient is there, and is the right one
        want = _numpy_infonce_queue_gradient(*(np.asarray(t, np.float64) for t in (q, k, model.queue.read())),
                                             model.temperature)
        assert np.abs(want).max() > 1e-3
        np.testing.assert_allclose(grad.numpy(), want, rtol=1e-4, atol=1e-6)


def test_two_replicas_enqueue_the_gathered_keys(two_replica_strategy):
    rng = np.random.default_rng(1)
    with two_replica_strategy.scope():
        queue = KeyQueue(size=6, dim=3)
    initial = queue.read().numpy()
    keys = rng.normal(size=(4, 3)).astype(np.float32)  # global batch: 2 keys per replica
    ds = tf.data.Dataset.from_tensor_slices(keys).batch(4)
    local = next(iter(two_replica_strategy.experimental_distribute_dataset(ds)))
    two_replica_strategy.run(tf.function(queue.enqueue), args=(local,))
    expected, pointer = reference_fifo(initial, [keys])  # replica order = global batch order
    for value in two_replica_strategy.experimental_local_results(queue.keys.value):
        np.testing.assert_allclose(value.numpy(), expected, rtol=1e-6)
    assert int(queue.pointer.numpy()) == pointer
