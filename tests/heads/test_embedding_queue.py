"""EmbeddingQueue (SwAV's queue): FIFO order against a hand-kept list, the start step, the fill count."""
import numpy as np
import pytest
import tensorflow as tf

from tfssl.heads import EmbeddingQueue


def test_fifo_start_and_fill_against_a_python_list():
    queue = EmbeddingQueue(crops=2, length=6, dim=2, start_step=2)
    expected = [[], []]  # newest first, as the reference's queue[i, :bs] = embedding
    rng = np.random.default_rng(0)
    for step in range(6):
        new = [rng.normal(size=(2, 2)).astype(np.float32) for _ in range(2)]
        queue.push([tf.constant(e) for e in new], step)
        if step >= 2:
            for crop in range(2):
                expected[crop] = (list(new[crop]) + expected[crop])[:6]
        for crop in range(2):
            want = np.zeros((6, 2), np.float32)
            if expected[crop]:
                want[:len(expected[crop])] = np.stack(expected[crop])
            np.testing.assert_array_equal(queue.rows.numpy()[crop], want, err_msg=f"step {step} crop {crop}")
        assert int(queue.filled.numpy()) == min(6, 2 * max(0, step - 1))
        assert bool(queue.full().numpy()) == (step >= 4)


def test_nothing_written_before_the_start():
    queue = EmbeddingQueue(crops=1, length=4, dim=3, start_step=10)
    queue.push([tf.ones((2, 3))], 9)
    assert not queue.rows.numpy().any() and int(queue.filled.numpy()) == 0
    queue.push([tf.ones((2, 3))], 10)  # positive control: from the start step on, it writes
    assert queue.rows.numpy()[0, :2].all() and int(queue.filled.numpy()) == 2


def test_local_slices_of_two_replicas_cover_the_queue_once(two_replica_strategy):
    with two_replica_strategy.scope():
        queue = EmbeddingQueue(crops=1, length=4, dim=1)
    queue.rows.assign(np.arange(4, dtype=np.float32).reshape(1, 4, 1))
    parts = two_replica_strategy.run(tf.function(lambda: queue.local_slice(0)))
    got = np.concatenate([p.numpy() for p in two_replica_strategy.experimental_local_results(parts)])
    np.testing.assert_array_equal(got.ravel(), [0, 1, 2, 3])


@pytest.mark.parametrize("kwargs, message", [
    (dict(length=0), "length must be an integer >= 1"), (dict(start_step=-1), "start_step must be"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EmbeddingQueue(**kwargs)
