"""CMC's two-bank loss against float64 numpy written from the paper (NCE probabilities and the softmax),
the pairing of each view with the other view's bank, frozen normalisers and the MemoryBank helper."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.heads.memory_bank import MemoryBank
from tfssl.losses.cmc import cmc_bank_loss, cmc_logits, cmc_loss
from tfssl.losses.instdis import frozen_nce_normalizer


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _batch(seed, n=5, k=7, d=4):
    rng = np.random.default_rng(seed)
    shapes = ((n, d), (n, d), (n, d), (n, d), (k, d), (k, d))
    return tuple(_unit(rng.normal(size=s)).astype(np.float32) for s in shapes)


def numpy_direction(f, pos, neg, t, objective, n_data=None, z=None):
    """One direction: NCE (h = P / (P + K / N), P = exp(s) / Z, Z = N * mean exp(s) unless given) or softmax."""
    f, pos, neg = (np.asarray(x, np.float64) for x in (f, pos, neg))
    s = np.concatenate([np.sum(f * pos, 1, keepdims=True), f @ neg.T], axis=1) / t
    if objective == "softmax":
        return float(np.mean(np.log(np.sum(np.exp(s), axis=1)) - s[:, 0])), None
    k = neg.shape[0]
    z = n_data * np.mean(np.exp(s)) if z is None else z
    p = np.exp(s) / z
    h = p / (p + k / n_data)
    return float(np.mean(-np.log(h[:, 0]) - np.sum(np.log(1.0 - h[:, 1:]), axis=1))), z


def numpy_cmc(f_l, f_ab, pos_l, pos_ab, neg_l, neg_ab, t, objective, n_data=None, zs=(None, None)):
    """L features against the ab bank plus ab features against the L bank (CMC sums the two)."""
    l_to_ab, _ = numpy_direction(f_l, pos_ab, neg_ab, t, objective, n_data, zs[0])
    ab_to_l, _ = numpy_direction(f_ab, pos_l, neg_l, t, objective, n_data, zs[1])
    return l_to_ab + ab_to_l, l_to_ab, ab_to_l


@pytest.mark.parametrize("objective,temperature", [("nce", 0.07), ("nce", 0.5), ("softmax", 0.07), ("softmax", 1.0)])
def test_matches_numpy(objective, temperature):
    batch = _batch(0)
    num_data = 50 if objective == "nce" else None
    out = cmc_loss(*batch, temperature=temperature, loss=objective, num_data=num_data)
    total, l_to_ab, ab_to_l = numpy_cmc(*batch, temperature, objective, num_data)
    np.testing.assert_allclose(float(out.loss_l_to_ab), l_to_ab, rtol=1e-5)
    np.testing.assert_allclose(float(out.loss_ab_to_l), ab_to_l, rtol=1e-5)
    np.testing.assert_allclose(float(out.loss), total, rtol=1e-5)
    assert out.logits_l_to_ab.shape == (5, 8) and out.logits_ab_to_l.shape == (5, 8)


def test_each_view_meets_the_other_views_bank():
    f_l, f_ab, pos_l, pos_ab, neg_l, neg_ab = _batch(1)
    logits_l_to_ab, logits_ab_to_l = cmc_logits(f_l, f_ab, pos_l, pos_ab, neg_l, neg_ab, 0.07)
    np.testing.assert_allclose(logits_l_to_ab.numpy()[:, 0], np.sum(f_l * pos_ab, 1) / 0.07, rtol=1e-5)
    np.testing.assert_allclose(logits_l_to_ab.numpy()[:, 1:], f_l @ neg_ab.T / 0.07, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits_ab_to_l.numpy()[:, 0], np.sum(f_ab * pos_l, 1) / 0.07, rtol=1e-5)
    np.testing.assert_allclose(logits_ab_to_l.numpy()[:, 1:], f_ab @ neg_l.T / 0.07, rtol=1e-5, atol=1e-5)


def test_softmax_closed_form():
    # Feature = its positive bank row, negatives orthogonal: each direction is log(e^(1/T) + K) - 1/T.
    t, k = 0.5, 3
    e = np.eye(4, dtype=np.float32)
    f, pos, neg = e[:1], e[:1], e[1:1 + k]
    out = cmc_loss(f, f, pos, pos, neg, neg, t, loss="softmax")
    assert float(out.loss) == pytest.approx(2.0 * (np.log(np.exp(1.0 / t) + k) - 1.0 / t), rel=1e-6)


def test_frozen_normalizers_per_direction():
    """Z of each direction is estimated on the first batch, then kept (CMC's Z_l and Z_ab)."""
    first, second = _batch(2), _batch(3)
    # Keras variables, as a method holds them (add_weight).
    z_vars = [keras.Variable(0.0, dtype="float32", trainable=False) for _ in range(2)]
    num_data = 40
    results = []
    for batch in (first, second):
        logits = cmc_logits(*batch, temperature=0.07)
        zs = tuple(frozen_nce_normalizer(v, lg, num_data) for v, lg in zip(z_vars, logits))
        results.append((cmc_loss(*batch, temperature=0.07, num_data=num_data, normalizers=zs), zs))
    f_l, f_ab, pos_l, pos_ab, neg_l, neg_ab = first
    _, z_l = numpy_direction(f_l, pos_ab, neg_ab, 0.07, "nce", num_data)
    _, z_ab = numpy_direction(f_ab, pos_l, neg_l, 0.07, "nce", num_data)
    assert z_l != pytest.approx(z_ab)
    for out, zs in results:
        np.testing.assert_allclose([float(z) for z in zs], [z_l, z_ab], rtol=1e-5)
    want, _, _ = numpy_cmc(*second, 0.07, "nce", num_data, (z_l, z_ab))
    np.testing.assert_allclose(float(results[1][0].loss), want, rtol=1e-5)


def test_gradient_reaches_features_only():
    f_l, f_ab, pos_l, pos_ab, neg_l, neg_ab = (tf.Variable(x) for x in _batch(4))
    with tf.GradientTape() as tape:
        loss = cmc_loss(f_l, f_ab, pos_l, pos_ab, neg_l, neg_ab, loss="nce", num_data=30).loss
    grads = tape.gradient(loss, [f_l, f_ab, pos_l, pos_ab, neg_l, neg_ab])
    assert all(g is not None and np.any(g.numpy() != 0) for g in grads[:2])
    assert all(g is None for g in grads[2:])


def test_bank_helper_matches_explicit_rows():
    d, size = 4, 20
    bank_l = MemoryBank(size, d, seed=1, name="bank_l")
    bank_ab = MemoryBank(size, d, seed=2, name="bank_ab")
    rng = np.random.default_rng(5)
    f_l, f_ab = (_unit(rng.normal(size=(3, d))).astype(np.float32) for _ in range(2))
    index = np.array([4, 0, 17])
    negatives = bank_l.sample(6, tf.constant([1, 2], tf.int64))
    out = cmc_bank_loss(bank_l, bank_ab, f_l, f_ab, index, negatives, 0.07, "nce")
    rows_l, rows_ab = bank_l.read().numpy(), bank_ab.read().numpy()
    neg = negatives.numpy()
    want, _, _ = numpy_cmc(f_l, f_ab, rows_l[index], rows_ab[index], rows_l[neg], rows_ab[neg], 0.07, "nce", size)
    np.testing.assert_allclose(float(out.loss), want, rtol=1e-5)
    with pytest.raises(ValueError, match="one row per training image"):
        cmc_bank_loss(bank_l, MemoryBank(size + 1, d, name="other"), f_l, f_ab, index, negatives)


def test_bad_arguments():
    batch = _batch(6)
    with pytest.raises(ValueError, match="unknown InstDis loss"):
        cmc_loss(*batch, loss="hinge")
    with pytest.raises(ValueError, match="num_data"):
        cmc_loss(*batch, loss="nce")
    with pytest.raises(ValueError, match="temperature"):
        cmc_loss(*batch, temperature=0.0, loss="softmax")
    with pytest.raises(ValueError, match="normalizers"):
        cmc_loss(*batch, num_data=10, normalizers=1.0)
    f_l, f_ab, pos_l, pos_ab, neg_l, neg_ab = batch
    with pytest.raises(ValueError, match="bank_negatives"):
        cmc_loss(f_l, f_ab, pos_l, pos_ab, neg_l, neg_ab[:, :2], loss="softmax")
