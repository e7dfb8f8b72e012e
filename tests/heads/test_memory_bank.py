"""MemoryBank: unit-norm start, momentum update against hand arithmetic, no gradient, gathered writes
on two replicas, argument checks, config round trip."""
import numpy as np
import pytest
import tensorflow as tf

from tfssl.heads import MemoryBank


def _normalize(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_initial_rows_are_random_unit_vectors():
    bank = MemoryBank(size=50, dim=4, seed=3)
    rows = bank.read().numpy()
    assert rows.shape == (50, 4) and rows.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)
    # Directions spread over the sphere: not all alike, mean direction small.
    assert np.linalg.norm(rows.mean(axis=0)) < 0.5
    np.testing.assert_array_equal(MemoryBank(size=50, dim=4, seed=3).read().numpy(), rows)
    assert not np.allclose(MemoryBank(size=50, dim=4, seed=4).read().numpy(), rows)
    np.testing.assert_array_equal(bank.lookup(tf.constant([7, 2, 7])).numpy(), rows[[7, 2, 7]])


@pytest.mark.parametrize("momentum", [0.5, 0.0, 0.9])
def test_update_matches_hand_arithmetic_and_leaves_other_rows(momentum):
    rng = np.random.default_rng(0)
    bank = MemoryBank(size=6, dim=3, momentum=momentum, seed=1)
    before = bank.read().numpy().astype(np.float64)
    features = rng.normal(size=(2, 3)).astype(np.float32)  # deliberately not unit norm
    bank.update(tf.constant([4, 1], tf.int64), features)
    after = bank.read().numpy()
    want = before.copy()
    for row, f in zip((4, 1), features.astype(np.float64)):
        mixed = momentum * before[row] + (1 - momentum) * f
        want[row] = mixed / np.sqrt(np.sum(mixed ** 2))
    np.testing.assert_allclose(after, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(after[[0, 2, 3, 5]], before[[0, 2, 3, 5]].astype(np.float32))
    if momentum == 0.0:  # m = 0 overwrites the row with the normalised feature
        np.testing.assert_allclose(after[[4, 1]], _normalize(features), rtol=1e-5)


def test_no_gradient_into_the_bank():
    bank = MemoryBank(size=5, dim=3)
    assert not bank.trainable_variables and len(bank.non_trainable_variables) == 1
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(bank.bank.value)
        through_lookup = tf.reduce_sum(bank.lookup(tf.constant([0, 3])) ** 2) + tf.reduce_sum(bank.read())
        direct = tf.reduce_sum(tf.gather(bank.bank.value, [0, 3]) ** 2)  # control: the watch does work
    assert tape.gradient(through_lookup, bank.bank.value) is None
    assert tape.gradient(direct, bank.bank.value) is not None


def test_two_replicas_write_the_gathered_rows(two_replica_strategy):
    strategy = two_replica_strategy
    rng = np.random.default_rng(2)
    with strategy.scope():
        bank = MemoryBank(size=10, dim=3, momentum=0.5, seed=5)
    before = bank.read().numpy().astype(np.float64)
    indices = np.array([8, 0, 3, 6], np.int64)  # global batch: [8, 0] on replica 0, [3, 6] on replica 1
    features = rng.normal(size=(4, 3)).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((indices, features)).batch(4)
    local_indices, local_features = next(iter(strategy.experimental_distribute_dataset(ds)))
    strategy.run(tf.function(bank.update), args=(local_indices, local_features))
    want = before.copy()
    want[indices] = _normalize(0.5 * before[indices] + 0.5 * features)
    replicas = strategy.experimental_local_results(bank.bank.value)
    assert len(replicas) == 2
    for value in replicas:  # both replicas hold both replicas' rows
        np.testing.assert_allclose(value.numpy(), want, rtol=1e-5, atol=1e-6)


def test_bad_arguments_and_config_round_trip():
    for kwargs, match in ((dict(size=0), "size"), (dict(size=4, dim=0), "dim"),
                          (dict(size=4, momentum=-0.1), "momentum"), (dict(size=4, momentum=1.0), "momentum")):
        with pytest.raises(ValueError, match=match):
            MemoryBank(**kwargs)
    bank = MemoryBank(size=7, dim=2, momentum=0.25, seed=9, name="bank_layer")
    copy = MemoryBank.from_config(bank.get_config())
    assert (copy.size, copy.dim, copy.momentum, copy.seed, copy.name) == (7, 2, 0.25, 9, "bank_layer")
    np.testing.assert_array_equal(copy.read().numpy(), bank.read().numpy())
