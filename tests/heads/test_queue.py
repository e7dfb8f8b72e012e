"""KeyQueue: FIFO order, wrap-around, oversize batches, gathered enqueue across replicas."""
import numpy as np
import tensorflow as tf

from tfssl.heads import KeyQueue


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


def test_no_gradient_through_the_queue():
    queue = KeyQueue(size=4, dim=2)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(queue.read())
    assert tape.gradient(loss, queue.trainable_variables) == []
    assert not queue.trainable_variables


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
