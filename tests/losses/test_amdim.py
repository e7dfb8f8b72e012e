"""AMDIM's NCE against float64 numpy written with explicit loops, closed forms of the penalty and the soft
clip, the 3-pair objective, and 2 replicas = 1 device."""
import numpy as np
import pytest
import tensorflow as tf

from tfssl.losses.amdim import amdim_loss, amdim_nce, amdim_source_locations, soft_clip


def numpy_nce(source, targets, clip=20.0, weight=0.05):
    """Loop form: for source i and location l, the positive is image i at l, the negatives every location
    of every other image; loss = mean over (i, l) of -log softmax. Returns (loss, penalty)."""
    source = np.asarray(source, np.float64).reshape(len(source), -1)
    targets = np.asarray(targets, np.float64)
    n_src, n_trg, d = len(source), len(targets), source.shape[1]
    targets = targets.reshape(n_trg, -1, d)
    locs = targets.shape[1]
    raw = np.zeros((n_src, n_trg, locs))
    for i in range(n_src):
        for j in range(n_trg):
            for l in range(locs):
                raw[i, j, l] = np.dot(source[i], targets[j, l]) / np.sqrt(d)
    penalty = weight * np.mean(raw ** 2)
    s = raw if clip is None else clip * np.tanh(raw / clip)
    losses = []
    for i in range(n_src):
        for l in range(locs):
            negatives = [np.exp(s[i, j, m]) for j in range(n_trg) if j != i for m in range(locs)]
            positive = np.exp(s[i, i, l])
            losses.append(-np.log(positive / (positive + np.sum(negatives))))
    return float(np.mean(losses)), float(penalty)


def numpy_amdim(r1a, r5a, r7a, r1b, r5b, r7b, locations, clip=20.0, weight=0.05):
    n, d = len(r1a), r1a.shape[-1]
    flat5a, flat5b = r5a.reshape(n, -1, d), r5b.reshape(n, -1, d)
    src5a = np.stack([flat5a[i, locations[0, i]] for i in range(n)])
    src5b = np.stack([flat5b[i, locations[1, i]] for i in range(n)])
    terms, penalties = [], []
    for sa, tb, sb, ta in ((r1a, r5b, r1b, r5a), (r1a, r7b, r1b, r7a), (src5a, r5b, src5b, r5a)):
        (la, pa), (lb, pb) = numpy_nce(sa, tb, clip, weight), numpy_nce(sb, ta, clip, weight)
        terms.append(0.5 * (la + lb))
        penalties += [pa, pb]
    return np.mean(terms) + np.mean(penalties), terms, np.mean(penalties)


def _maps(rng, n, d, scale=1.0):
    return tuple((scale * rng.normal(size=(n, s, s, d))).astype(np.float32) for s in (1, 5, 7))


@pytest.mark.parametrize("n,locs,d,clip", [(1, 4, 3, 20.0), (3, 4, 5, 20.0), (4, 9, 8, 2.0), (2, 1, 3, None)])
def test_nce_matches_numpy_loops(n, locs, d, clip):
    rng = np.random.default_rng(n * 10 + locs)
    source = (3.0 * rng.normal(size=(n, d))).astype(np.float32)
    side = int(np.sqrt(locs))
    targets = (3.0 * rng.normal(size=(n, side, side, d))).astype(np.float32)
    out = amdim_nce(source, targets, clip=clip)
    want_loss, want_penalty = numpy_nce(source, targets, clip)
    np.testing.assert_allclose(float(out.loss), want_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(out.penalty), want_penalty, rtol=1e-5)
    assert tuple(out.scores.shape) == (n, n, locs)


def test_single_image_has_zero_loss():
    # No other image means no negatives: every location's softmax has one candidate.
    out = amdim_nce(np.ones((1, 4), np.float32), np.ones((1, 3, 3, 4), np.float32))
    assert float(out.loss) == pytest.approx(0.0, abs=1e-7)


def test_penalty_and_clip_closed_form():
    # d = 1: score(i, j) = source_i * target_j. Scores [[30, 0], [0, 0]].
    source = np.array([[30.0], [0.0]], np.float32)
    targets = np.array([[[[1.0]]], [[[0.0]]]], np.float32)
    out = amdim_nce(source, targets, clip=20.0, penalty_weight=0.05)
    assert float(out.penalty) == pytest.approx(0.05 * 900.0 / 4.0, rel=1e-6)  # before clipping
    clipped = 20.0 * np.tanh(30.0 / 20.0)
    assert float(out.scores[0, 0, 0]) == pytest.approx(clipped, rel=1e-6)
    want = 0.5 * (np.log1p(np.exp(-clipped)) + np.log(2.0))
    assert float(out.loss) == pytest.approx(want, rel=1e-6)
    unclipped = amdim_nce(source, targets, clip=None)
    assert float(unclipped.loss) == pytest.approx(0.5 * (np.log1p(np.exp(-30.0)) + np.log(2.0)), rel=1e-6)
    # The clip is odd, bounded by c and nearly the identity for small scores.
    x = tf.constant([-1e4, -0.1, 0.0, 0.1, 1e4])
    np.testing.assert_allclose(soft_clip(x, 20.0).numpy(), [-20.0, -0.1, 0.0, 0.1, 20.0], rtol=1e-4, atol=1e-6)


def test_equal_scores_closed_form():
    # Every score equal: each (i, l) has one positive among 1 + (N - 1) L equal candidates.
    n, side, d = 3, 5, 4
    out = amdim_nce(np.full((n, d), 0.5, np.float32), np.full((n, side, side, d), 2.0, np.float32))
    assert float(out.loss) == pytest.approx(np.log(1 + (n - 1) * side * side), rel=1e-6)
    assert float(out.penalty) == pytest.approx(0.05 * (d * 0.5 * 2.0 / np.sqrt(d)) ** 2, rel=1e-6)


def test_amdim_loss_matches_numpy():
    rng = np.random.default_rng(7)
    maps_a, maps_b = _maps(rng, 4, 6, 2.0), _maps(rng, 4, 6, 2.0)
    seed = [3, 11]
    out = amdim_loss(*maps_a, *maps_b, seed=seed)
    locations = amdim_source_locations(seed, 4, 25).numpy()
    assert locations.shape == (2, 4) and locations.min() >= 0 and locations.max() < 25
    want, terms, penalty = numpy_amdim(*maps_a, *maps_b, locations)
    np.testing.assert_allclose(float(out.loss), want, rtol=1e-5)
    np.testing.assert_allclose([float(out.nce_1t5), float(out.nce_1t7), float(out.nce_5t5)], terms, rtol=1e-5)
    np.testing.assert_allclose(float(out.penalty), penalty, rtol=1e-5)


def test_source_locations_are_stateless_and_vary():
    a = amdim_source_locations([1, 2], 64, 25).numpy()
    np.testing.assert_array_equal(a, amdim_source_locations(tf.constant([1, 2]), 64, 25).numpy())
    assert not np.array_equal(a, amdim_source_locations([1, 3], 64, 25).numpy())
    assert not np.array_equal(a[0], a[1])  # the two views draw independently
    assert len(np.unique(a)) > 10


def test_two_replicas_equal_one_device(two_replica_strategy):
    """Targets gathered across replicas and locations drawn over the global batch: the mean of the replicas'
    losses and the sum of their gradients (of loss / replicas) equal one device on the global batch."""
    rng = np.random.default_rng(5)
    n, c, d = 6, 3, 4
    inputs = tuple(rng.normal(size=(n, s, s, c)).astype(np.float32) for s in (1, 5, 7) for _ in range(2))
    w0 = rng.normal(size=(c, d)).astype(np.float32)
    seed = tf.constant([4, 9], tf.int64)

    def loss_and_grad(w, x, num_replicas):
        with tf.GradientTape() as tape:
            r1a, r1b, r5a, r5b, r7a, r7b = (tf.einsum("bhwc,cd->bhwd", t, w) for t in x)
            out = amdim_loss(r1a, r5a, r7a, r1b, r5b, r7b, seed=seed)
            scaled = out.loss / num_replicas
        return out.loss, tape.gradient(scaled, w)

    single_loss, single_grad = loss_and_grad(tf.Variable(w0), inputs, 1)
    strategy = two_replica_strategy
    with strategy.scope():
        w = tf.Variable(w0)
    ds = tf.data.Dataset.from_tensor_slices(inputs).batch(n)
    x = next(iter(strategy.experimental_distribute_dataset(ds)))
    replicas = strategy.num_replicas_in_sync
    loss, grad = strategy.run(tf.function(lambda *x: loss_and_grad(w, x, replicas)), args=tuple(x))
    np.testing.assert_allclose(strategy.reduce("MEAN", loss, axis=None).numpy(), single_loss.numpy(), rtol=1e-5)
    np.testing.assert_allclose(strategy.reduce("SUM", grad, axis=None).numpy(), single_grad.numpy(),
                               rtol=1e-4, atol=1e-6)
    assert np.any(np.abs(single_grad.numpy()) > 1e-3)
    maps = [t @ w0 for t in inputs]
    want, _, _ = numpy_amdim(maps[0], maps[2], maps[4], maps[1], maps[3], maps[5],
                             amdim_source_locations(seed, n, 25).numpy())
    np.testing.assert_allclose(single_loss.numpy(), want, rtol=1e-5)


def test_gradients_finite_for_saturated_scores():
    src = tf.Variable(np.full((3, 4), 100.0, np.float32))
    with tf.GradientTape() as tape:
        loss = amdim_nce(src, np.full((3, 5, 5, 4), 100.0, np.float32)).loss
    assert np.all(np.isfinite(tape.gradient(loss, src).numpy()))


def test_bad_arguments():
    src, trg = np.ones((2, 4), np.float32), np.ones((2, 5, 5, 4), np.float32)
    with pytest.raises(ValueError, match="clip"):
        amdim_nce(src, trg, clip=0.0)
    with pytest.raises(ValueError, match="penalty_weight"):
        amdim_nce(src, trg, penalty_weight=-1.0)
    with pytest.raises(ValueError, match="same known feature size"):
        amdim_nce(src, trg[..., :3])
    with pytest.raises(ValueError, match="same images"):
        amdim_nce(src, trg[:1])
    with pytest.raises(ValueError, match="1x1 map"):
        amdim_nce(np.ones((2, 2, 2, 4), np.float32), trg)
    with pytest.raises(ValueError, match="feature map"):
        amdim_nce(src, np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="shape \\[2\\]"):
        amdim_source_locations([1, 2, 3], 4, 25)
