"""InvaSpread against float64 numpy loops (the paper's probabilities, not the log-space code), closed forms,
finite-difference gradients, and 2 replicas = 1 device."""
import numpy as np
import pytest
import tensorflow as tf

from tfssl.losses.invaspread import invaspread_loss, log1mexp


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def numpy_invaspread(z1, z2, temperature=0.1, candidates=None):
    """Loss = -[sum_i log p_i + sum_i sum_{k not in {i, ihat}} log(1 - e_ik / Z_i)] / 2B, loops over i, k.

    `candidates` (2B x d, optional) replaces the candidate side (held constant for the detached gradient)."""
    x = np.concatenate([_unit(z1), _unit(z2)])
    c = x if candidates is None else candidates
    two_b = len(x)
    b = two_b // 2
    total = 0.0
    for i in range(two_b):
        ihat = (i + b) % two_b
        e = {k: np.exp(np.dot(x[i], c[k]) / temperature) for k in range(two_b) if k != i}
        z = sum(e.values())
        total += np.log(e[ihat] / z)
        total += sum(np.log(1.0 - e[k] / z) for k in e if k != ihat)
    return -total / two_b


@pytest.mark.parametrize("n,d,temperature", [(1, 3, 0.1), (2, 4, 0.1), (5, 8, 0.1), (6, 3, 0.5)])
def test_matches_numpy(n, d, temperature):
    rng = np.random.default_rng(n * 31 + d)
    z1 = rng.normal(size=(n, d)).astype(np.float32)
    z2 = (z1 + 0.5 * rng.normal(size=(n, d))).astype(np.float32)
    out = invaspread_loss(z1, z2, temperature)
    np.testing.assert_allclose(float(out.loss), numpy_invaspread(z1, z2, temperature), rtol=1e-5, atol=1e-6)
    # Detaching the candidates changes gradients only.
    detached = invaspread_loss(z1, z2, temperature, detach_candidates=True)
    np.testing.assert_allclose(float(detached.loss), float(out.loss), rtol=1e-6)


def test_closed_form_identical_views_orthogonal_images():
    # Views equal, images orthonormal: the positive scores 1/tau, the 2B - 2 negatives 0.
    b = 3
    eye = np.eye(b, dtype=np.float32)
    for tau, tolerance in ((0.5, 1e-6), (0.1, 1e-5)):  # at tau 0.1 the loss is ~4e-4: no cancellation allowed
        z = np.exp(1.0 / tau) + 2 * b - 2
        want = -(np.log(np.exp(1.0 / tau) / z) + (2 * b - 2) * np.log(1.0 - 1.0 / z))
        assert float(invaspread_loss(eye, eye, tau).loss) == pytest.approx(want, rel=tolerance)


def test_single_image_is_positive_only():
    # One image: Z_i holds only the positive, p_i = 1 and there are no spreading terms.
    assert float(invaspread_loss([[1.0, 2.0]], [[-3.0, 0.5]], 0.1).loss) == pytest.approx(0.0, abs=1e-7)


def test_logits_and_labels_layout():
    rng = np.random.default_rng(2)
    z1, z2 = rng.normal(size=(2, 3, 4)).astype(np.float32)
    out = invaspread_loss(z1, z2, 0.1)
    x = np.concatenate([_unit(z1), _unit(z2)])
    np.testing.assert_allclose(out.logits.numpy(), x @ x.T / 0.1, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out.labels.numpy(), [3, 4, 5, 0, 1, 2])


@pytest.mark.parametrize("detach", [False, True])
def test_gradient_matches_finite_differences(detach):
    rng = np.random.default_rng(4)
    z1, z2 = rng.normal(size=(2, 3, 4))
    v1, v2 = tf.Variable(z1.astype(np.float32)), tf.Variable(z2.astype(np.float32))
    with tf.GradientTape() as tape:
        loss = invaspread_loss(v1, v2, 0.5, detach_candidates=detach).loss
    g1, g2 = (g.numpy() for g in tape.gradient(loss, [v1, v2]))
    direction = rng.normal(size=(2, 3, 4))
    fixed = np.concatenate([_unit(z1), _unit(z2)])

    def value(a, b):
        return numpy_invaspread(a, b, 0.5, candidates=fixed if detach else None)

    eps = 1e-5
    numeric = (value(z1 + eps * direction[0], z2 + eps * direction[1])
               - value(z1 - eps * direction[0], z2 - eps * direction[1])) / (2 * eps)
    analytic = np.sum(g1 * direction[0]) + np.sum(g2 * direction[1])
    np.testing.assert_allclose(analytic, numeric, rtol=2e-3, atol=1e-5)


def test_gradients_finite_in_degenerate_cases():
    # All embeddings equal, and a negative holding nearly all of Z at a tiny temperature.
    for z1, z2, tau in ((np.ones((4, 3)), np.ones((4, 3)), 0.1),
                        (np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([[-1.0, 0.0], [-1.0, 0.0]]), 0.01)):
        v = tf.Variable(z1.astype(np.float32))
        with tf.GradientTape() as tape:
            loss = invaspread_loss(v, z2.astype(np.float32), tau).loss
        assert np.isfinite(float(loss))
        assert np.all(np.isfinite(tape.gradient(loss, v).numpy()))


def test_log1mexp_is_accurate():
    x = np.array([-1e-8, -1e-3, -0.5, -0.7, -2.0, -40.0], np.float64)
    want = np.log(-np.expm1(x))  # float64 rounds log(1 - 4e-18) to 0; float32 keeps -4e-18
    np.testing.assert_allclose(log1mexp(tf.constant(x, tf.float32)).numpy(), want, rtol=1e-5, atol=1e-12)
    assert np.isfinite(log1mexp(tf.constant(0.0)).numpy())


def test_two_replicas_equal_one_device(two_replica_strategy):
    rng = np.random.default_rng(9)
    x1, x2 = rng.normal(size=(2, 8, 5)).astype(np.float32)
    w0 = rng.normal(size=(5, 4)).astype(np.float32)

    def loss_and_grad(w, a, b, num_replicas):
        with tf.GradientTape() as tape:
            loss = invaspread_loss(tf.matmul(a, w), tf.matmul(b, w), 0.1).loss
            scaled = loss / num_replicas
        return loss, tape.gradient(scaled, w)

    single_loss, single_grad = loss_and_grad(tf.Variable(w0), x1, x2, 1)
    strategy = two_replica_strategy
    with strategy.scope():
        w = tf.Variable(w0)
    a, b = next(iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((x1, x2)).batch(8))))
    replicas = strategy.num_replicas_in_sync
    loss, grad = strategy.run(tf.function(lambda a, b: loss_and_grad(w, a, b, replicas)), args=(a, b))
    np.testing.assert_allclose(strategy.reduce("MEAN", loss, axis=None).numpy(), single_loss.numpy(), rtol=1e-5)
    np.testing.assert_allclose(strategy.reduce("SUM", grad, axis=None).numpy(), single_grad.numpy(),
                               rtol=1e-4, atol=1e-6)
    assert np.any(np.abs(single_grad.numpy()) > 1e-3)
    np.testing.assert_allclose(single_loss.numpy(), numpy_invaspread(x1 @ w0, x2 @ w0, 0.1), rtol=1e-5)


def test_bad_arguments():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="temperature"):
        invaspread_loss(x, x, temperature=-0.1)
    with pytest.raises(ValueError, match="same shape"):
        invaspread_loss(x, np.ones((3, 3), np.float32))
    with pytest.raises(ValueError, match="matrix"):
        invaspread_loss(np.ones((2, 3, 1)), np.ones((2, 3, 1)))
