"""YADIM's last-map NCE against float64 numpy loops, closed forms, and 2 replicas = 1 device."""
import numpy as np
import pytest
import tensorflow as tf

from tfssl.losses.yadim import yadim_nce


def numpy_yadim(a, b, similarity="dot", temperature=1.0, clip=None, with_positive=True, symmetric=True):
    """-log(sum_{R+} exp(phi) / sum_D exp(phi)) per anchor location, D = R+ u R- (or R-), loops over sets."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    n, d = a.shape[0], a.shape[-1]
    a, b = a.reshape(n, -1, d), b.reshape(n, -1, d)
    if similarity == "cosine":
        a = a / np.linalg.norm(a, axis=-1, keepdims=True)
        b = b / np.linalg.norm(b, axis=-1, keepdims=True)

    def phi(u, v):
        s = np.dot(u, v) / temperature
        return s if clip is None else clip * np.tanh(s / clip)

    def one_way(anchors, others):
        losses = []
        for i in range(n):
            for anchor in anchors[i]:
                positives = [np.exp(phi(anchor, r)) for r in others[i]]
                negatives = [np.exp(phi(anchor, r)) for j in range(n) if j != i for r in others[j]]
                denominator = np.sum(positives + negatives) if with_positive else np.sum(negatives)
                losses.append(-np.log(np.sum(positives) / denominator))
        return np.mean(losses)

    forward = one_way(a, b)
    return 0.5 * (forward + one_way(b, a)) if symmetric else forward


@pytest.mark.parametrize("shape", [(4, 6), (3, 2, 2, 5), (5, 1, 1, 4), (2, 3, 4)])
@pytest.mark.parametrize("kwargs", [
    {},
    {"similarity": "cosine", "temperature": 0.2},
    {"temperature": 2.0, "clip": 3.0},
    {"positive_in_denominator": False},
    {"symmetric": False},
])
def test_matches_numpy(shape, kwargs):
    rng = np.random.default_rng(len(shape) * 7 + len(kwargs))
    a = rng.normal(size=shape).astype(np.float32)
    b = (a + 0.7 * rng.normal(size=shape)).astype(np.float32)
    out = yadim_nce(a, b, **kwargs)
    ref_kwargs = dict(kwargs)
    ref_kwargs["with_positive"] = ref_kwargs.pop("positive_in_denominator", True)
    np.testing.assert_allclose(float(out.loss), numpy_yadim(a, b, **ref_kwargs), rtol=2e-5, atol=1e-5)


def test_closed_form_orthonormal_pairs():
    n = 4
    eye = np.eye(n, dtype=np.float32)
    # Positive dot 1, negatives 0: -log(e / (e + n - 1)); literal form: -log(e / (n - 1)).
    assert float(yadim_nce(eye, eye).loss) == pytest.approx(np.log(np.e + n - 1) - 1.0, rel=1e-6)
    literal = yadim_nce(eye, eye, positive_in_denominator=False).loss
    assert float(literal) == pytest.approx(np.log(n - 1) - 1.0, rel=1e-6)


def test_literal_form_is_unbounded_but_default_is_not():
    # Scaling the features drives the literal loss to -inf; the default stays >= 0.
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 8)).astype(np.float32)
    literal = [float(yadim_nce(s * a, s * a, positive_in_denominator=False).loss) for s in (1.0, 3.0, 10.0)]
    assert literal[0] > literal[1] > literal[2] and literal[2] < -50.0
    assert all(float(yadim_nce(s * a, s * a).loss) >= 0.0 for s in (1.0, 3.0, 10.0))


def test_positive_set_sums_over_locations():
    # d = 1, two images with two locations each; R+ holds both locations of the same image in view b.
    a = np.array([[[1.0], [0.0]], [[0.0], [0.0]]], np.float32)
    b = np.array([[[1.0], [2.0]], [[0.0], [0.0]]], np.float32)
    out = yadim_nce(a, b, symmetric=False)
    e1, e2 = np.exp(1.0), np.exp(2.0)
    # Anchor (0, 0): positives e^1 + e^2, negatives 1 + 1; the three other anchors score 0 everywhere.
    want = (np.log((e1 + e2 + 2.0) / (e1 + e2)) + 3.0 * np.log(2.0)) / 4.0
    assert float(out.loss) == pytest.approx(want, rel=1e-6)
    assert out.logits.shape == (4, 4)
    np.testing.assert_array_equal(out.positive_mask.numpy(), [[1, 1, 0, 0]] * 2 + [[0, 0, 1, 1]] * 2)


def test_two_replicas_equal_one_device(two_replica_strategy):
    rng = np.random.default_rng(3)
    x1, x2 = rng.normal(size=(2, 6, 2, 2, 3)).astype(np.float32)
    w0 = rng.normal(size=(3, 4)).astype(np.float32)

    def loss_and_grad(w, a, b, num_replicas):
        with tf.GradientTape() as tape:
            loss = yadim_nce(tf.einsum("bhwc,cd->bhwd", a, w), tf.einsum("bhwc,cd->bhwd", b, w),
                             temperature=2.0).loss
            scaled = loss / num_replicas
        return loss, tape.gradient(scaled, w)

    single_loss, single_grad = loss_and_grad(tf.Variable(w0), x1, x2, 1)
    strategy = two_replica_strategy
    with strategy.scope():
        w = tf.Variable(w0)
    a, b = next(iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((x1, x2)).batch(6))))
    replicas = strategy.num_replicas_in_sync
    loss, grad = strategy.run(tf.function(lambda a, b: loss_and_grad(w, a, b, replicas)), args=(a, b))
    np.testing.assert_allclose(strategy.reduce("MEAN", loss, axis=None).numpy(), single_loss.numpy(), rtol=1e-5)
    np.testing.assert_allclose(strategy.reduce("SUM", grad, axis=None).numpy(), single_grad.numpy(),
                               rtol=1e-4, atol=1e-6)
    assert np.any(np.abs(single_grad.numpy()) > 1e-3)
    np.testing.assert_allclose(single_loss.numpy(), numpy_yadim(x1 @ w0, x2 @ w0, temperature=2.0), rtol=1e-5)


def test_bad_arguments():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="similarity"):
        yadim_nce(x, x, similarity="l2")
    with pytest.raises(ValueError, match="temperature"):
        yadim_nce(x, x, temperature=0.0)
    with pytest.raises(ValueError, match="clip"):
        yadim_nce(x, x, clip=-1.0)
    with pytest.raises(ValueError, match="same shape"):
        yadim_nce(x, np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="feature map"):
        yadim_nce(np.ones((2, 1, 1, 1, 3), np.float32), x)
