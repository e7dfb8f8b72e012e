"""Barlow Twins and VICReg: numpy references, closed forms, and global-batch statistics on 2 replicas."""
import numpy as np
import pytest
import tensorflow as tf

from tfssl.losses import barlow_twins_loss, vicreg_loss

# Columns 2-4 of the 4x4 Sylvester-Hadamard matrix: entries +-1, zero mean, biased variance 1, and
# mutually orthogonal -- perfectly decorrelated features with known statistics.
HADAMARD = np.array([[1, 1, 1], [-1, 1, -1], [1, -1, -1], [-1, -1, 1]], np.float32)


def numpy_barlow(z1, z2, lambd, scale, eps):
    """Barlow Twins eq. (1)-(2) with an explicit loop over the cross-correlation entries."""
    z1, z2 = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
    a = (z1 - z1.mean(axis=0)) / np.sqrt(z1.var(axis=0) + eps)
    b = (z2 - z2.mean(axis=0)) / np.sqrt(z2.var(axis=0) + eps)
    n, d = a.shape
    total = 0.0
    for i in range(d):
        for j in range(d):
            c_ij = np.dot(a[:, i], b[:, j]) / n
            total += (1.0 - c_ij) ** 2 if i == j else lambd * c_ij**2
    return scale * total


def numpy_vicreg(z1, z2, sim_weight, var_weight, cov_weight, eps, gamma):
    """VICReg as in the authors' code, via np.cov / np.var with ddof=1."""
    z1, z2 = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
    d = z1.shape[1]
    invariance = np.mean((z1 - z2) ** 2)

    def hinge(z):
        return np.mean(np.maximum(0.0, gamma - np.sqrt(np.var(z, axis=0, ddof=1) + eps)))

    def decorrelation(z):
        cov = np.cov(z, rowvar=False)
        return np.sum(cov[~np.eye(d, dtype=bool)] ** 2) / d

    return (
        sim_weight * invariance
        + var_weight * (hinge(z1) + hinge(z2)) / 2
        + cov_weight * (decorrelation(z1) + decorrelation(z2))
    )


def correlated_views(rng, n, d):
    z1 = rng.normal(size=(n, d)) * rng.uniform(0.2, 2.0, size=d) + rng.normal(size=d)
    z2 = 0.8 * z1 + 0.5 * rng.normal(size=(n, d))
    return z1.astype(np.float32), z2.astype(np.float32)


@pytest.mark.parametrize(
    "n,d,lambd,scale,eps", [(4, 3, 0.0051, 1.0, 1e-5), (8, 5, 0.5, 0.1, 1e-5), (16, 2, 0.0, 2.0, 0.1)]
)
def test_barlow_matches_numpy(n, d, lambd, scale, eps):
    z1, z2 = correlated_views(np.random.default_rng(n + d), n, d)
    loss, parts = barlow_twins_loss(z1, z2, lambd, scale, eps)
    np.testing.assert_allclose(loss.numpy(), numpy_barlow(z1, z2, lambd, scale, eps), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        scale * (parts["on_diagonal"] + lambd * parts["off_diagonal"]).numpy(), loss.numpy(), rtol=1e-6
    )


@pytest.mark.parametrize(
    "n,d,weights,eps,gamma",
    [(4, 3, (25.0, 25.0, 1.0), 1e-4, 1.0), (9, 5, (1.0, 2.0, 3.0), 0.1, 0.5), (16, 2, (0.0, 1.0, 0.0), 1e-4, 2.0)],
)
def test_vicreg_matches_numpy(n, d, weights, eps, gamma):
    z1, z2 = correlated_views(np.random.default_rng(n * d), n, d)
    loss, parts = vicreg_loss(z1, z2, *weights, eps=eps, gamma=gamma)
    np.testing.assert_allclose(loss.numpy(), numpy_vicreg(z1, z2, *weights, eps, gamma), rtol=1e-4, atol=1e-6)
    recombined = weights[0] * parts["invariance"] + weights[1] * parts["variance"] + weights[2] * parts["covariance"]
    np.testing.assert_allclose(recombined.numpy(), loss.numpy(), rtol=1e-6)


def test_barlow_closed_forms_on_decorrelated_features():
    d = HADAMARD.shape[1]
    # Standardisation divides by sqrt(1 + eps), so C = +-I / (1 + eps) or a permutation / (1 + eps).
    loss, parts = barlow_twins_loss(HADAMARD, HADAMARD, eps=1.0)
    assert float(loss) == pytest.approx(d * 0.25, rel=1e-6)  # C = I/2: each (1 - 1/2)^2
    assert float(parts["off_diagonal"]) == pytest.approx(0.0, abs=1e-7)
    loss, _ = barlow_twins_loss(HADAMARD, 5.0 * HADAMARD - 2.0)  # default eps: loss ~ d * eps^2
    assert 0.0 <= float(loss) < 1e-8
    loss, _ = barlow_twins_loss(HADAMARD, -HADAMARD, eps=1.0)
    assert float(loss) == pytest.approx(d * 1.5**2, rel=1e-6)
    # Views whose features are a cyclic shift of each other: C_ii = 0, one off-diagonal 1/(1+eps) per row.
    loss, parts = barlow_twins_loss(HADAMARD, HADAMARD[:, [1, 2, 0]], lambd=0.3, scale=2.0, eps=1.0)
    assert float(parts["on_diagonal"]) == pytest.approx(d, rel=1e-6)
    assert float(parts["off_diagonal"]) == pytest.approx(d * 0.25, rel=1e-6)
    assert float(loss) == pytest.approx(2.0 * (d + 0.3 * d * 0.25), rel=1e-6)


@pytest.mark.parametrize("gamma,eps", [(1.0, 1e-4), (0.5, 0.01), (0.05, 0.01)])
def test_vicreg_constant_features_closed_form(gamma, eps):
    # Collapsed embedding: std = sqrt(eps) everywhere, no covariance, views identical.
    z = np.full((6, 4), 0.7, np.float32)
    loss, parts = vicreg_loss(z, z, var_weight=25.0, eps=eps, gamma=gamma)
    expected_hinge = max(0.0, gamma - np.sqrt(eps))
    assert float(parts["variance"]) == pytest.approx(expected_hinge, abs=1e-6)
    assert float(parts["invariance"]) == 0.0 and float(parts["covariance"]) == 0.0
    assert float(loss) == pytest.approx(25.0 * expected_hinge, abs=1e-5)


def test_vicreg_closed_forms_shift_and_duplicate_features():
    # Decorrelated features of unbiased variance 4 s^2 / 3, second view shifted by c: covariance 0.
    s, c, eps = 0.5, 0.3, 1e-4
    loss, parts = vicreg_loss(s * HADAMARD, s * HADAMARD + c, 2.0, 3.0, 4.0, eps=eps)
    hinge = 1.0 - np.sqrt(4 * s**2 / 3 + eps)
    assert float(parts["invariance"]) == pytest.approx(c**2, rel=1e-5)
    assert float(parts["variance"]) == pytest.approx(hinge, rel=1e-5)
    assert float(parts["covariance"]) == pytest.approx(0.0, abs=1e-7)
    assert float(loss) == pytest.approx(2.0 * c**2 + 3.0 * hinge, rel=1e-5)
    # Two copies of one feature x = (1, -1, 1, -1): Cov = 4/3 everywhere, off-diagonal sum 2 (4/3)^2,
    # divided by d = 2, for each of the two (identical) views; std sqrt(4/3 + eps) > 1 -> no hinge.
    z = np.array([[1, 1], [-1, -1], [1, 1], [-1, -1]], np.float32)
    loss, parts = vicreg_loss(z, z)
    assert float(parts["covariance"]) == pytest.approx(2 * 16 / 9, rel=1e-5)
    assert float(parts["variance"]) == 0.0
    assert float(loss) == pytest.approx(32 / 9, rel=1e-5)


@pytest.mark.parametrize(
    "kwargs", [dict(lambd=-0.1), dict(scale=0.0), dict(eps=0.0), dict(lambd="0.005"), dict(scale=None)]
)
def test_barlow_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        barlow_twins_loss(np.ones((4, 3)), np.ones((4, 3)), **kwargs)


@pytest.mark.parametrize(
    "kwargs", [dict(sim_weight=-1.0), dict(var_weight=-0.5), dict(cov_weight="1"), dict(eps=-1e-4), dict(gamma=0)]
)
def test_vicreg_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        vicreg_loss(np.ones((4, 3)), np.ones((4, 3)), **kwargs)


@pytest.mark.parametrize("loss_fn", [barlow_twins_loss, vicreg_loss])
def test_bad_shapes_and_batch(loss_fn):
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(np.ones((4, 3)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(np.ones((4, 3)), np.ones((5, 3)))
    with pytest.raises(ValueError, match="matrix"):
        loss_fn(np.ones(4), np.ones(4))
    with pytest.raises(ValueError, match="at least 2"):
        loss_fn(np.ones((1, 3)), np.ones((1, 3)))


@pytest.mark.parametrize(
    "loss_fn,numpy_fn",
    [
        (barlow_twins_loss, lambda a, b: numpy_barlow(a, b, 0.0051, 1.0, 1e-5)),
        (vicreg_loss, lambda a, b: numpy_vicreg(a, b, 25.0, 25.0, 1.0, 1e-4, 1.0)),
    ],
)
def test_two_replicas_equal_one_device(two_replica_strategy, loss_fn, numpy_fn):
    """Statistics over the global batch: each replica returns the global value; divided once by the replica
    count (as train_step does), the gradients summed over replicas (through the gather) are the global one."""
    rng = np.random.default_rng(11)
    x1 = rng.normal(size=(8, 5)).astype(np.float32)
    x2 = (x1 + 0.4 * rng.normal(size=(8, 5))).astype(np.float32)
    w0 = (0.5 * rng.normal(size=(5, 4))).astype(np.float32)

    def loss_and_grad(w, a, b, num_replicas):
        with tf.GradientTape() as tape:
            loss, parts = loss_fn(tf.matmul(a, w), tf.matmul(b, w))
            scaled = loss / num_replicas
        return loss, parts, tape.gradient(scaled, w)

    ref_loss, ref_parts, ref_grad = loss_and_grad(tf.Variable(w0), x1, x2, 1)
    strategy = two_replica_strategy
    with strategy.scope():
        w = tf.Variable(w0)
    ds = tf.data.Dataset.from_tensor_slices((x1, x2)).batch(8)
    a, b = next(iter(strategy.experimental_distribute_dataset(ds)))
    num_replicas = strategy.num_replicas_in_sync
    loss, parts, grad = strategy.run(tf.function(lambda a, b: loss_and_grad(w, a, b, num_replicas)), args=(a, b))

    np.testing.assert_allclose(strategy.reduce("MEAN", loss, axis=None).numpy(), ref_loss.numpy(), rtol=1e-5)
    for local in strategy.experimental_local_results(loss):
        np.testing.assert_allclose(local.numpy(), ref_loss.numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        strategy.reduce("SUM", grad, axis=None).numpy(), ref_grad.numpy(), rtol=1e-4, atol=1e-5
    )
    assert np.any(np.abs(ref_grad.numpy()) > 1e-3)
    for name, value in ref_parts.items():
        for local in strategy.experimental_local_results(parts[name]):
            np.testing.assert_allclose(local.numpy(), value.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ref_loss.numpy(), numpy_fn(x1 @ w0, x2 @ w0), rtol=1e-4)
