"""InstDis losses (NCE and non-parametric softmax) against float64 numpy written from the paper's
definitions (h = P / (P + K Pn) with P = exp(s) / Z), closed forms, replica scaling, gradients."""
import numpy as np
import pytest
import tensorflow as tf

from tfssl.losses import estimate_nce_normalizer, instdis_logits, instdis_loss


def _normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _batch(seed, n=5, k=7, d=4):
    rng = np.random.default_rng(seed)
    f, pos, neg = (_normalize(rng.normal(size=shape)).astype(np.float32) for shape in ((n, d), (n, d), (k, d)))
    return f, pos, neg


def numpy_logits(f, pos, neg, t):
    f, pos, neg = (np.asarray(x, np.float64) for x in (f, pos, neg))
    s_pos = np.sum(f * pos, axis=1) / t
    s_neg = np.einsum("id,kd->ik", f, neg) / t
    return s_pos, s_neg


def numpy_nce(f, pos, neg, t, n_data, z=None):
    """Wu et al. 2018 eq. (3)-(6) term by term (probabilities, not the log-space form of the code)."""
    s_pos, s_neg = numpy_logits(f, pos, neg, t)
    k = neg.shape[0]
    if z is None:
        z = n_data * np.mean(np.exp(np.concatenate([s_pos[:, None], s_neg], axis=1)))
    p_pos, p_neg = np.exp(s_pos) / z, np.exp(s_neg) / z
    pn = 1.0 / n_data
    h_pos, h_neg = p_pos / (p_pos + k * pn), p_neg / (p_neg + k * pn)
    return np.mean(-np.log(h_pos) - np.sum(np.log(1.0 - h_neg), axis=1)), z


def numpy_softmax(f, pos, neg, t):
    s_pos, s_neg = numpy_logits(f, pos, neg, t)
    s = np.concatenate([s_pos[:, None], s_neg], axis=1)
    top = s.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.sum(np.exp(s - top), axis=1))
    return np.mean(log_norm - s_pos)


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_logits_and_softmax_match_numpy(temperature):
    f, pos, neg = _batch(0)
    logits = instdis_logits(f, pos, neg, temperature).numpy()
    s_pos, s_neg = numpy_logits(f, pos, neg, temperature)
    assert logits.shape == (5, 8)
    np.testing.assert_allclose(logits[:, 0], s_pos, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits[:, 1:], s_neg, rtol=1e-5, atol=1e-5)
    loss, out_logits = instdis_loss(f, pos, neg, temperature, loss="softmax")
    np.testing.assert_allclose(out_logits.numpy(), logits)
    np.testing.assert_allclose(float(loss), numpy_softmax(f, pos, neg, temperature), rtol=1e-5)


@pytest.mark.parametrize("temperature, n_data, z", [(0.07, 1000, None), (0.07, 1000, 2.5e4), (0.2, 64, 300.0)])
def test_nce_matches_numpy(temperature, n_data, z):
    f, pos, neg = _batch(1)
    want, want_z = numpy_nce(f, pos, neg, temperature, n_data, z)
    loss, _ = instdis_loss(f, pos, neg, temperature, loss="nce", num_data=n_data, normalizer=z)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    if z is None:  # the estimate the loss used is the batch estimate of the paper
        logits = instdis_logits(f, pos, neg, temperature)
        np.testing.assert_allclose(float(estimate_nce_normalizer(logits, n_data)), want_z, rtol=1e-5)


def test_closed_forms_when_every_logit_is_equal():
    # Identical features and K negatives all equal to the positive: every logit is 1 / tau.
    k, t = 6, 0.1
    f = np.tile(_normalize(np.array([[1.0, 2.0, -1.0]])), (4, 1)).astype(np.float32)
    neg = np.tile(f[:1], (k, 1))
    softmax, _ = instdis_loss(f, f, neg, t, loss="softmax")
    np.testing.assert_allclose(float(softmax), np.log(k + 1), rtol=1e-6)
    # NCE with Z estimated from this batch: Z = N exp(1/t), so P = 1/N and h = 1/(K+1) everywhere:
    # loss = -log(1/(K+1)) - K log(K/(K+1)).
    nce, _ = instdis_loss(f, f, neg, t, loss="nce", num_data=50)
    np.testing.assert_allclose(float(nce), np.log(k + 1) + k * np.log((k + 1) / k), rtol=1e-5)


def test_nce_stays_finite_at_extreme_logits():
    f, pos, neg = _batch(2)
    # A tiny Z makes P(j) huge (h -> 1 for negatives): the log-space form must not give inf or NaN.
    loss, _ = instdis_loss(f, pos, neg, 0.01, loss="nce", num_data=10, normalizer=1e-30)
    assert np.isfinite(float(loss)) and float(loss) > 100
    want, _ = numpy_nce(f, pos, neg, 0.07, 10 ** 6, 1e6)
    got, _ = instdis_loss(f, pos, neg, 0.07, loss="nce", num_data=10 ** 6, normalizer=1e6)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


@pytest.mark.parametrize("loss_name", ["nce", "softmax"])
def test_gradient_reaches_only_the_features(loss_name):
    f, pos, neg = (tf.constant(x) for x in _batch(3))
    with tf.GradientTape() as tape:
        tape.watch([f, pos, neg])
        loss, _ = instdis_loss(f, pos, neg, 0.07, loss=loss_name, num_data=100, normalizer=150.0)
    grad_f, grad_pos, grad_neg = tape.gradient(loss, [f, pos, neg])
    assert grad_pos is None and grad_neg is None
    assert np.any(grad_f.numpy() != 0)
    # Central finite difference of the float64 reference along one direction.
    direction = np.random.default_rng(4).normal(size=f.shape)
    eps = 1e-4
    ref = numpy_nce if loss_name == "nce" else numpy_softmax
    args = (100, 150.0) if loss_name == "nce" else ()

    def value(x):
        out = ref(x, pos.numpy(), neg.numpy(), 0.07, *args)
        return out[0] if loss_name == "nce" else out

    f64 = f.numpy().astype(np.float64)
    numeric = (value(f64 + eps * direction) - value(f64 - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(np.sum(grad_f.numpy() * direction), numeric, rtol=1e-3)


def test_replica_scaling_and_shared_normalizer(two_replica_strategy):
    """On 2 replicas each returns its local mean (no replica division any more) and the batch estimate
    of Z is the global one; the mean of the replicas' losses is the global-batch loss."""
    strategy = two_replica_strategy
    f, pos, neg = _batch(5, n=4)
    ds = tf.data.Dataset.from_tensor_slices((f, pos)).batch(4)
    local_f, local_pos = next(iter(strategy.experimental_distribute_dataset(ds)))

    @tf.function
    def run(a, b):
        loss, logits = instdis_loss(a, b, neg, 0.07, loss="nce", num_data=40)
        return loss, estimate_nce_normalizer(logits, 40)

    losses, zs = strategy.run(run, args=(local_f, local_pos))
    losses = [float(x) for x in strategy.experimental_local_results(losses)]
    zs = [float(x) for x in strategy.experimental_local_results(zs)]
    _, global_z = numpy_nce(f, pos, neg, 0.07, 40)
    np.testing.assert_allclose(zs, [global_z, global_z], rtol=1e-5)
    for replica, got in enumerate(losses):
        rows = slice(2 * replica, 2 * replica + 2)
        want, _ = numpy_nce(f[rows], pos[rows], neg, 0.07, 40, global_z)
        np.testing.assert_allclose(got, want, rtol=1e-5)
    whole, _ = numpy_nce(f, pos, neg, 0.07, 40)
    np.testing.assert_allclose(np.mean(losses), whole, rtol=1e-5)


def test_bad_arguments():
    f, pos, neg = _batch(6)
    with pytest.raises(ValueError, match="unknown InstDis loss"):
        instdis_loss(f, pos, neg, loss="hinge")
    with pytest.raises(ValueError, match="num_data"):
        instdis_loss(f, pos, neg, loss="nce")
    with pytest.raises(ValueError, match="num_data"):
        instdis_loss(f, pos, neg, loss="nce", num_data=0)
    with pytest.raises(ValueError, match="temperature"):
        instdis_loss(f, pos, neg, temperature=0.0, loss="softmax")
    with pytest.raises(ValueError, match="bank_negatives"):
        instdis_logits(f, pos, neg[:, :2], 0.07)
    with pytest.raises(ValueError, match="bank_positive"):
        instdis_logits(f, pos[:3], neg, 0.07)
