"""MoCo InfoNCE (queue and in-batch) and MoCo v3's symmetric loss: numpy, closed forms, 2 replicas."""
import numpy as np
import pytest
import tensorflow as tf

from tfssl.losses import contrastive_accuracy_and_entropy, infonce_loss, symmetric_contrastive_loss


def unit_rows(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def numpy_moco(q, k, queue, temperature):
    """MoCo eq. (1) one query at a time: -log exp(q.k+/t) / (exp(q.k+/t) + sum_queue exp(q.k-/t))."""
    q, k, queue = unit_rows(q), unit_rows(k), unit_rows(queue)
    losses = []
    for qi, ki in zip(q, k):
        positive = np.exp(qi @ ki / temperature)
        negatives = sum(np.exp(qi @ neg / temperature) for neg in queue)
        losses.append(-np.log(positive / (positive + negatives)))
    return float(np.mean(losses))


def numpy_in_batch(q, k, temperature):
    """Query i against every key of the batch, key i positive."""
    sims = unit_rows(q) @ unit_rows(k).T / temperature
    log_probs = sims - np.log(np.exp(sims).sum(axis=1, keepdims=True))
    return float(-np.mean(np.diag(log_probs)))


def numpy_mocov3(q1, q2, k1, k2, temperature):
    return 2 * temperature * (numpy_in_batch(q1, k2, temperature) + numpy_in_batch(q2, k1, temperature))


def random_pair(rng, n, d):
    q = rng.normal(size=(n, d)).astype(np.float32)
    return q, (q + 0.7 * rng.normal(size=(n, d))).astype(np.float32)


@pytest.mark.parametrize("n,queue_size", [(1, 1), (4, 16), (9, 5)])
@pytest.mark.parametrize("temperature", [0.07, 0.2, 1.0])
def test_queue_matches_numpy(n, queue_size, temperature):
    rng = np.random.default_rng(n * 31 + queue_size)
    q, k = random_pair(rng, n, 6)
    queue = unit_rows(rng.normal(size=(queue_size, 6))).astype(np.float32)
    out = infonce_loss(q, k, queue, temperature)
    np.testing.assert_allclose(out.loss.numpy(), numpy_moco(q, k, queue, temperature), rtol=1e-5, atol=1e-5)
    assert out.logits.shape == (n, 1 + queue_size)
    assert np.all(out.labels.numpy() == 0)


@pytest.mark.parametrize("n,d,temperature", [(2, 3, 0.1), (8, 5, 0.5), (5, 16, 1.0)])
def test_in_batch_and_symmetric_match_numpy(n, d, temperature):
    rng = np.random.default_rng(n + d)
    q1, k1 = random_pair(rng, n, d)
    q2, k2 = random_pair(rng, n, d)
    single = infonce_loss(q1, k2, None, temperature).loss
    np.testing.assert_allclose(single.numpy(), numpy_in_batch(q1, k2, temperature), rtol=1e-5, atol=1e-6)
    sym = symmetric_contrastive_loss(q1, q2, k1, k2, temperature).loss
    np.testing.assert_allclose(sym.numpy(), numpy_mocov3(q1, q2, k1, k2, temperature), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_closed_form_one_negative(temperature):
    # q = k = e1; the single negative orthogonal (cos 0) or opposite (cos -1).
    e1, e2 = np.eye(2, dtype=np.float32)
    orthogonal = infonce_loss([e1], [e1], [e2], temperature).loss
    assert float(orthogonal) == pytest.approx(np.log1p(np.exp(-1 / temperature)), rel=1e-5, abs=1e-7)
    opposite = infonce_loss([e1], [e1], [-e1], temperature).loss
    assert float(opposite) == pytest.approx(np.log1p(np.exp(-2 / temperature)), rel=1e-5, abs=1e-7)


def test_closed_form_uninformative_query_is_log_of_candidates():
    # Query orthogonal to its key and to all K negatives: uniform softmax over K + 1 -> log(K + 1).
    q = np.array([[0, 0, 1.0]], np.float32)
    k = np.array([[1.0, 0, 0]], np.float32)
    queue = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0], [-1.0, 0, 0]], np.float32)
    assert float(infonce_loss(q, k, queue, 0.2).loss) == pytest.approx(np.log(5.0), rel=1e-6)


def test_unnormalized_uses_raw_dot_products():
    q, k, queue = [[2.0, 0.0]], [[3.0, 0.0]], [[0.0, 1.0]]
    # logits [6, 0] at temperature 1.
    assert float(infonce_loss(q, k, queue, 1.0, normalize=False).loss) == pytest.approx(np.log1p(np.exp(-6.0)), rel=1e-4)
    # normalised: logits [1, 0]
    assert float(infonce_loss(q, k, queue, 1.0).loss) == pytest.approx(np.log1p(np.exp(-1.0)))


def test_mocov3_closed_form_and_two_tau_scaling():
    # One image: the positive is the only candidate -> 0. Orthogonal unit pairs, N = 2: each direction
    # is log(1 + exp(-1/t)); the paper multiplies by 2t and sums the two directions.
    e = np.eye(2, dtype=np.float32)
    assert abs(float(symmetric_contrastive_loss(e[:1], e[:1], e[:1], e[:1], 0.3).loss)) < 1e-6
    t = 0.25
    expected = 2 * t * 2 * np.log1p(np.exp(-1 / t))
    assert float(symmetric_contrastive_loss(e, e, e, e, t).loss) == pytest.approx(expected, rel=1e-5)


def test_logits_work_with_accuracy_helper():
    e = np.eye(3, dtype=np.float32)
    out = symmetric_contrastive_loss(e, e, e, e, 0.01)
    acc, entropy = contrastive_accuracy_and_entropy(out.logits, out.labels)
    assert out.logits.shape == (6, 3)
    assert float(acc) == 1.0 and float(entropy) < 1e-6


def test_keys_and_queue_get_no_gradient():
    rng = np.random.default_rng(1)
    q, k = (tf.Variable(x) for x in random_pair(rng, 4, 3))
    queue = tf.Variable(rng.normal(size=(6, 3)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        moco = infonce_loss(q, k, queue, 0.2).loss
        v3 = symmetric_contrastive_loss(q, q * 2.0, k, k * 3.0, 0.2).loss
    for loss in (moco, v3):
        for constant in (k, queue):
            grad = tape.gradient(loss, constant)
            assert grad is None or not np.any(grad.numpy())
        assert np.any(tape.gradient(loss, q).numpy())


@pytest.mark.parametrize("bad", [0, -0.1, "0.2", None])
def test_bad_temperature(bad):
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="temperature"):
        infonce_loss(x, x, x, bad)
    with pytest.raises(ValueError, match="temperature"):
        symmetric_contrastive_loss(x, x, x, x, bad)


def test_bad_shapes():
    a = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="same shape"):
        infonce_loss(a, np.ones((5, 3)), None)
    with pytest.raises(ValueError, match="same shape"):
        infonce_loss(a, np.ones((4, 2)), a)
    with pytest.raises(ValueError, match="queue"):
        infonce_loss(a, a, np.ones((8, 2)))
    with pytest.raises(ValueError, match="matrix"):
        infonce_loss(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="same shape"):
        symmetric_contrastive_loss(a, np.ones((2, 3)), a, a)


def summed_over_two_replicas(strategy, w0, inputs, loss_fn):
    """Runs loss_fn(w, *local_batch) on both replicas; returns the MEAN of the (local-mean) losses and the
    SUM of the gradients of loss / num_replicas (the one division `SSLMethod.train_step` makes)."""
    with strategy.scope():
        w = tf.Variable(w0)
    global_n = len(inputs[0])
    ds = tf.data.Dataset.from_tensor_slices(inputs).batch(global_n)
    batch = next(iter(strategy.experimental_distribute_dataset(ds)))
    num_replicas = strategy.num_replicas_in_sync

    def step(*local):
        with tf.GradientTape() as tape:
            loss = loss_fn(w, *local)
            scaled = loss / num_replicas
        return loss, tape.gradient(scaled, w)

    loss, grad = strategy.run(tf.function(step), args=tuple(batch))
    return strategy.reduce("MEAN", loss, axis=None).numpy(), strategy.reduce("SUM", grad, axis=None).numpy()


def single_device(w0, inputs, loss_fn):
    w = tf.Variable(w0)
    with tf.GradientTape() as tape:
        loss = loss_fn(w, *inputs)
    return loss.numpy(), tape.gradient(loss, w).numpy()


def test_two_replicas_shared_queue_equal_one_device(two_replica_strategy):
    rng = np.random.default_rng(5)
    x, xk = rng.normal(size=(2, 8, 5)).astype(np.float32)
    w0 = rng.normal(size=(5, 4)).astype(np.float32)
    wk = rng.normal(size=(5, 4)).astype(np.float32)
    queue = unit_rows(rng.normal(size=(7, 4))).astype(np.float32)

    def loss_fn(w, a, b):
        return infonce_loss(tf.matmul(a, w), tf.matmul(b, wk), queue, 0.2).loss

    loss, grad = summed_over_two_replicas(two_replica_strategy, w0, (x, xk), loss_fn)
    ref_loss, ref_grad = single_device(w0, (x, xk), loss_fn)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ref_loss, numpy_moco(x @ w0, xk @ wk, queue, 0.2), rtol=1e-5)


def test_two_replicas_mocov3_equal_one_device(two_replica_strategy):
    """Keys gathered from both replicas: a replica's positives sit at global, not local, indices."""
    rng = np.random.default_rng(6)
    x1, x2 = rng.normal(size=(2, 8, 5)).astype(np.float32)
    w0 = rng.normal(size=(5, 4)).astype(np.float32)
    wk = (w0 + 0.3 * rng.normal(size=(5, 4))).astype(np.float32)

    def loss_fn(w, a, b):
        q1, q2 = tf.matmul(a, w), tf.matmul(b, w)
        return symmetric_contrastive_loss(q1, q2, tf.matmul(a, wk), tf.matmul(b, wk), 0.5).loss

    loss, grad = summed_over_two_replicas(two_replica_strategy, w0, (x1, x2), loss_fn)
    ref_loss, ref_grad = single_device(w0, (x1, x2), loss_fn)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ref_loss, numpy_mocov3(x1 @ w0, x2 @ w0, x1 @ wk, x2 @ wk, 0.5), rtol=1e-5)
