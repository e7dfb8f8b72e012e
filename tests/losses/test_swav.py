"""Sinkhorn-Knopp codes and the SwAV loss against independent numpy versions (float64), their
marginals and closed forms, stop-gradients (with positive controls), low-precision scores, bad
arguments, and 2 replicas against one device on the global batch."""
import importlib

import numpy as np
import pytest
import tensorflow as tf

from tfssl.losses import sinkhorn_knopp, swav_loss


def numpy_sinkhorn(scores, epsilon, iterations):
    """Sinkhorn-Knopp as diagonal scalings: Q = diag(u) P diag(v) with P = exp(S / eps)^T, `[K, B]`.

    Each iteration picks u so every row of Q sums to 1/K, then v so every column sums to 1/B; the
    codes are B * Q^T. (Scaling invariance makes the reference's first division by sum(P) a no-op.)
    """
    p = np.exp(np.asarray(scores, np.float64) / epsilon).T
    k, b = p.shape
    v = np.ones(b)
    for _ in range(iterations):
        u = 1.0 / (k * (p @ v))
        v = 1.0 / (b * (p.T @ u))
    return (b * u[:, None] * p * v[None, :]).T


def numpy_log_softmax(x):
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def numpy_swav(scores, codes, temperature):
    """Caron et al. eq. (3) with multi-crop: each coded crop predicted from every other crop."""
    log_probs = [numpy_log_softmax(np.asarray(s, np.float64) / temperature) for s in scores]
    per_code = []
    for i, q in enumerate(codes):
        q = np.asarray(q, np.float64)
        per_code.append(np.mean([np.mean(-np.sum(q * log_probs[v], axis=1)) for v in range(len(scores)) if v != i]))
    return float(np.mean(per_code))


def cosine_scores(rng, n, k, d=8):
    """Scores as SwAV makes them: unit projections against unit prototypes, in [-1, 1]."""
    z = rng.normal(size=(n, d))
    c = rng.normal(size=(d, k))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    c /= np.linalg.norm(c, axis=0, keepdims=True)
    return (z @ c).astype(np.float32)


@pytest.mark.parametrize("n,k", [(12, 5), (6, 10), (16, 16), (1, 3)])
@pytest.mark.parametrize("epsilon", [0.05, 0.2, 1.0])
def test_sinkhorn_matches_numpy_and_codes_sum_to_one(n, k, epsilon):
    scores = cosine_scores(np.random.default_rng(n * 10 + k), n, k)
    codes = sinkhorn_knopp(scores, epsilon, 3)
    assert codes.dtype == tf.float32 and codes.shape == (n, k)
    np.testing.assert_allclose(codes.numpy(), numpy_sinkhorn(scores, epsilon, 3), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(codes.numpy().sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("n,k", [(12, 4), (8, 8), (9, 3)])
def test_many_iterations_give_equal_prototype_usage(n, k):
    scores = cosine_scores(np.random.default_rng(n + k), n, k)
    codes = sinkhorn_knopp(scores, 0.1, 50).numpy()
    np.testing.assert_allclose(codes.sum(axis=0), n / k, rtol=1e-5)
    np.testing.assert_allclose(codes.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(numpy_sinkhorn(scores, 0.1, 50).sum(axis=0), n / k, rtol=1e-5)
    np.testing.assert_allclose(codes, numpy_sinkhorn(scores, 0.1, 50), rtol=1e-5, atol=1e-5)


def test_sinkhorn_default_arguments_are_the_papers():
    scores = cosine_scores(np.random.default_rng(1), 10, 6)
    np.testing.assert_allclose(sinkhorn_knopp(scores).numpy(), numpy_sinkhorn(scores, 0.05, 3), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_low_precision_scores_give_finite_float32_codes(dtype):
    rng = np.random.default_rng(2)
    scores = tf.cast(0.9 + 0.1 * rng.uniform(size=(8, 5)), dtype)
    # Positive control: exp(s / 0.05) ~ e^20 overflows float16 (bfloat16 has float32's range).
    if dtype == tf.float16:
        assert not np.all(np.isfinite(tf.exp(scores / tf.cast(0.05, dtype)).numpy()))
    codes = sinkhorn_knopp(scores, 0.05, 3)
    assert codes.dtype == tf.float32
    assert np.all(np.isfinite(codes.numpy()))
    expected = numpy_sinkhorn(tf.cast(scores, tf.float64).numpy(), 0.05, 3)
    np.testing.assert_allclose(codes.numpy(), expected, rtol=1e-5, atol=1e-5)


class _TensorFlowWithoutStopGradient:
    """TensorFlow with `stop_gradient` as the identity, patched into tfssl.losses.swav only (positive
    control: proves the tests below would see a gradient if the stop-gradients were missing)."""

    @staticmethod
    def stop_gradient(tensor, name=None):
        return tf.identity(tensor, name=name)

    def __getattr__(self, name):
        return getattr(tf, name)


@pytest.mark.parametrize("control", [False, True])
def test_no_gradient_through_sinkhorn_or_codes(control, monkeypatch):
    if control:
        monkeypatch.setattr(importlib.import_module("tfssl.losses.swav"), "tf", _TensorFlowWithoutStopGradient())
    rng = np.random.default_rng(4)
    scores = tf.Variable(cosine_scores(rng, 6, 4))
    codes_in = tf.Variable(numpy_sinkhorn(cosine_scores(rng, 6, 4), 0.05, 3).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        codes = sinkhorn_knopp(scores)
        loss = swav_loss([scores * 1.0, scores * 0.5], [codes_in], 0.1)
    assert (tape.gradient(codes, scores) is None) != control
    assert (tape.gradient(loss, codes_in) is None) != control
    assert tape.gradient(loss, scores) is not None


def _crops(rng, n, k, num_crops):
    # Crops of different resolutions give differently spread scores: scale each crop's by its own factor.
    return [cosine_scores(rng, n, k) * (1.0 if v < 2 else 0.3 + 0.2 * v) for v in range(num_crops)]


@pytest.mark.parametrize("num_crops,num_codes", [(4, 2), (2, 2), (3, 1), (6, 2)])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_swav_loss_matches_numpy(num_crops, num_codes, temperature):
    rng = np.random.default_rng(num_crops * 10 + num_codes)
    scores = _crops(rng, 7, 5, num_crops)
    codes = [sinkhorn_knopp(s).numpy() for s in scores[:num_codes]]
    loss = swav_loss(scores, codes, temperature)
    assert loss.dtype == tf.float32 and loss.shape == ()
    np.testing.assert_allclose(float(loss), numpy_swav(scores, codes, temperature), rtol=1e-5)


def test_swav_loss_gradient_treats_codes_as_constants():
    """Codes from the same scores (the SwAV way): the gradient is that of the loss with fixed codes,
    d/ds_v = sum over coded i != v of (softmax(s_v / T) - q_i) / (T n (V - 1) C)."""
    rng = np.random.default_rng(5)
    n, k, temperature, num_codes = 6, 4, 0.1, 2
    scores = [tf.Variable(s) for s in _crops(rng, n, k, 4)]
    with tf.GradientTape() as tape:
        codes = [sinkhorn_knopp(s) for s in scores[:num_codes]]
        loss = swav_loss(scores, codes, temperature)
    grads = tape.gradient(loss, scores)
    for v, (s, grad) in enumerate(zip(scores, grads)):
        x = s.numpy().astype(np.float64) / temperature
        softmax = np.exp(numpy_log_softmax(x))
        expected = sum(softmax - codes[i].numpy() for i in range(num_codes) if i != v)
        expected = expected / (temperature * n * (len(scores) - 1) * num_codes)
        np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("num_crops,num_codes", [(2, 1), (2, 2), (5, 2)])
def test_uniform_scores_give_log_k(num_crops, num_codes):
    rng = np.random.default_rng(6)
    k = 7
    scores = [np.full((5, k), 0.3, np.float32) for _ in range(num_crops)]
    codes = [rng.dirichlet(np.ones(k), size=5).astype(np.float32) for _ in range(num_codes)]
    assert float(swav_loss(scores, codes, 0.1)) == pytest.approx(np.log(k), rel=1e-6)


@pytest.mark.parametrize("kwargs,message", [
    (dict(epsilon=0), "epsilon must be a number > 0"),
    (dict(epsilon=-0.05), "epsilon must be a number > 0"),
    (dict(epsilon="0.05"), "epsilon must be a number > 0"),
    (dict(iterations=0), "iterations must be an integer >= 1"),
    (dict(iterations=2.5), "iterations must be an integer >= 1"),
    (dict(scores=np.ones(4, np.float32)), r"must be \[n, K\] \(rank 2\)"),
    (dict(scores=np.ones((2, 3, 4), np.float32)), r"must be \[n, K\] \(rank 2\)"),
])
def test_sinkhorn_bad_arguments(kwargs, message):
    args = dict(scores=np.ones((3, 4), np.float32), epsilon=0.05, iterations=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        sinkhorn_knopp(**args)


_S, _Q = np.zeros((3, 4), np.float32), np.full((3, 4), 0.25, np.float32)


@pytest.mark.parametrize("scores,codes,temperature,message", [
    ([_S], [_Q], 0.1, "list of >= 2 crops"),
    (_S, [_Q], 0.1, "list of >= 2 crops"),
    ([_S, _S], [], 0.1, "list of 1 to 2"),
    ([_S, _S], [_Q, _Q, _Q], 0.1, "list of 1 to 2"),
    ([_S, _S], _Q, 0.1, "list of 1 to 2"),
    ([_S, _S], [_Q], 0, "temperature must be a number > 0"),
    ([_S, _S], [_Q], -1.0, "temperature must be a number > 0"),
    ([_S, np.zeros((3, 5), np.float32)], [_Q], 0.1, "one number of prototypes K"),
    ([_S, _S[0]], [_Q], 0.1, r"scores\[1\] must be \[n, K\]"),
])
def test_swav_loss_bad_arguments(scores, codes, temperature, message):
    with pytest.raises(ValueError, match=message):
        swav_loss(scores, codes, temperature)


def _per_replica(strategy, fn, *arrays):
    """Runs `fn` on each of 2 replicas with its half of the rows of every array (replica r gets rows
    [r n / 2, (r + 1) n / 2)); returns each output's per-replica values concatenated along axis 0."""
    tensors = [tf.constant(a) for a in arrays]

    @tf.function
    def step():
        def replica_fn():
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            halves = [tf.reshape(t, [2, -1] + list(t.shape[1:]))[replica] for t in tensors]
            return fn(*halves)
        return strategy.run(replica_fn)

    outputs = step()
    return tf.nest.map_structure(
        lambda out: np.stack([o.numpy() for o in strategy.experimental_local_results(out)]), outputs)


@pytest.mark.parametrize("iterations", [3, 20])
def test_sinkhorn_two_replicas_equal_one_device(two_replica_strategy, iterations):
    scores = cosine_scores(np.random.default_rng(7), 10, 6)
    codes = _per_replica(two_replica_strategy, lambda s: sinkhorn_knopp(s, 0.05, iterations), scores)
    single = sinkhorn_knopp(scores, 0.05, iterations).numpy()
    np.testing.assert_allclose(codes.reshape(single.shape), single, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(single, numpy_sinkhorn(scores, 0.05, iterations), rtol=1e-5, atol=1e-5)


def test_swav_loss_two_replicas_equal_one_device(two_replica_strategy):
    rng = np.random.default_rng(8)
    crops = _crops(rng, 8, 5, 4)

    def loss_fn(*scores):
        codes = [sinkhorn_knopp(s) for s in scores[:2]]
        return swav_loss(list(scores), codes, 0.1)

    losses = _per_replica(two_replica_strategy, loss_fn, *crops)
    assert losses.shape == (2,)
    single = float(loss_fn(*crops))
    assert float(np.mean(losses)) == pytest.approx(single, rel=1e-5)
    codes = [numpy_sinkhorn(s, 0.05, 3) for s in crops[:2]]
    assert single == pytest.approx(numpy_swav(crops, codes, 0.1), rel=1e-5)
