"""BYOL normalised MSE and SimSiam negative cosine: numpy, closed forms, stop-gradient, 2 replicas."""
import numpy as np
import pytest
import tensorflow as tf

from tfssl.losses import negative_cosine_loss, normalized_mse_loss


def numpy_normalized_mse(p, t):
    """BYOL eq. (2) as a squared distance between unit vectors (not via 2 - 2 cos)."""
    total = 0.0
    for pi, ti in zip(np.asarray(p, np.float64), np.asarray(t, np.float64)):
        diff = pi / np.sqrt(np.sum(pi**2)) - ti / np.sqrt(np.sum(ti**2))
        total += np.sum(diff**2)
    return total / len(p)


def numpy_negative_cosine(p, z):
    p, z = np.asarray(p, np.float64), np.asarray(z, np.float64)
    return float(-np.mean(np.einsum("nd,nd->n", p, z) / (np.linalg.norm(p, axis=1) * np.linalg.norm(z, axis=1))))


@pytest.mark.parametrize("n,d", [(1, 2), (3, 7), (16, 4)])
def test_match_numpy(n, d):
    rng = np.random.default_rng(n * 10 + d)
    p, t = rng.normal(size=(2, n, d)).astype(np.float32)
    np.testing.assert_allclose(normalized_mse_loss(p, t).numpy(), numpy_normalized_mse(p, t), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(negative_cosine_loss(p, t).numpy(), numpy_negative_cosine(p, t), rtol=1e-5, atol=1e-6)


def test_closed_forms():
    v = np.array([[1.0, 2.0, -2.0], [0.5, 0.0, 0.0]], np.float32)
    orth = np.array([[2.0, 1.0, 2.0], [0.0, 0.0, 3.0]], np.float32)  # orthogonal to v row by row
    for target, mse, neg_cos in ((3.0 * v, 0.0, -1.0), (-v, 4.0, 1.0), (orth, 2.0, 0.0)):
        assert float(normalized_mse_loss(v, target)) == pytest.approx(mse, abs=1e-6)
        assert float(negative_cosine_loss(v, target)) == pytest.approx(neg_cos, abs=1e-6)


def test_gradient_stops_at_targets_and_has_closed_form():
    p = tf.Variable([[3.0, 4.0]])
    t = tf.Variable([[1.0, 0.0]])
    with tf.GradientTape(persistent=True) as tape:
        mse = normalized_mse_loss(p, t)
        neg = negative_cosine_loss(p, t)
    for loss in (mse, neg):
        grad_t = tape.gradient(loss, t)
        assert grad_t is None or not np.any(grad_t.numpy())
    # d cos(p, t) / dp = (t_hat - cos * p_hat) / |p| with p_hat = (.6, .8), t_hat = (1, 0), cos = .6, |p| = 5.
    dcos = (np.array([1.0, 0.0]) - 0.6 * np.array([0.6, 0.8])) / 5.0
    np.testing.assert_allclose(tape.gradient(mse, p).numpy()[0], -2.0 * dcos, rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(neg, p).numpy()[0], -dcos, rtol=1e-5)


def test_zero_vectors_stay_finite():
    z = tf.Variable(np.zeros((2, 3), np.float32))
    with tf.GradientTape() as tape:
        loss = normalized_mse_loss(z, np.ones((2, 3), np.float32))
    assert np.isfinite(float(loss)) and np.all(np.isfinite(tape.gradient(loss, z).numpy()))


def test_bad_shapes():
    with pytest.raises(ValueError, match="same shape"):
        normalized_mse_loss(np.ones((4, 3)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="same shape"):
        negative_cosine_loss(np.ones((4, 3)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="matrix"):
        negative_cosine_loss(np.ones((2, 2, 3)), np.ones((2, 2, 3)))


@pytest.mark.parametrize("loss_fn", [normalized_mse_loss, negative_cosine_loss])
def test_two_replicas_equal_one_device(two_replica_strategy, loss_fn):
    rng = np.random.default_rng(7)
    x1, x2 = rng.normal(size=(2, 6, 5)).astype(np.float32)
    w0 = rng.normal(size=(5, 3)).astype(np.float32)
    w_target = rng.normal(size=(5, 3)).astype(np.float32)

    def loss_and_grad(w, a, b, num_replicas):
        # Local mean; divided once by the replica count (as train_step does) the summed gradients are global.
        with tf.GradientTape() as tape:
            loss = loss_fn(tf.matmul(a, w), tf.matmul(b, w_target))
            scaled = loss / num_replicas
        return loss, tape.gradient(scaled, w)

    ref_loss, ref_grad = loss_and_grad(tf.Variable(w0), x1, x2, 1)
    strategy = two_replica_strategy
    with strategy.scope():
        w = tf.Variable(w0)
    ds = tf.data.Dataset.from_tensor_slices((x1, x2)).batch(6)
    a, b = next(iter(strategy.experimental_distribute_dataset(ds)))
    num_replicas = strategy.num_replicas_in_sync
    loss, grad = strategy.run(tf.function(lambda a, b: loss_and_grad(w, a, b, num_replicas)), args=(a, b))
    np.testing.assert_allclose(strategy.reduce("MEAN", loss, axis=None).numpy(), ref_loss.numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        strategy.reduce("SUM", grad, axis=None).numpy(), ref_grad.numpy(), rtol=1e-4, atol=1e-6
    )
