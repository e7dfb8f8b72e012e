"""Weighted kNN (Wu et al. 2018) against a plain numpy loop and hand-computed votes."""

import math
import warnings

import numpy as np
import pytest

from tfssl.evaluation import knn_accuracy, knn_predict, knn_votes


def _reference_votes(train, labels, queries, num_classes, k, temperature):
    """Independent float64 loop: per query, argsort similarities, add exp(sim/T) per class.

    Returns (votes [M, C] unscaled, boundary gap [M] between the k-th and (k+1)-th similarity,
    max similarity [M]).
    """
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    votes = np.zeros((len(queries), num_classes))
    gaps = np.full(len(queries), np.inf)
    max_sim = np.zeros(len(queries))
    for q, query in enumerate(queries):
        sims = np.array([float(np.dot(row, query)) for row in train])
        order = np.argsort(-sims, kind="stable")
        for i in order[:k]:
            votes[q, labels[i]] += math.exp(sims[i] / temperature)
        if k < len(sims):
            gaps[q] = sims[order[k - 1]] - sims[order[k]]
        max_sim[q] = sims[order[0]]
    return votes, gaps, max_sim


@pytest.mark.parametrize("k,temperature", [(1, 0.1), (5, 0.07), (20, 0.5), (60, 1.0)])
def test_matches_numpy_reference(k, temperature):
    rng = np.random.default_rng(k)
    num_classes = 4
    train = rng.normal(size=(60, 8)) * rng.uniform(0.5, 3.0, size=(60, 1))  # norms vary
    labels = rng.integers(0, num_classes, 60)
    queries = rng.normal(size=(23, 8))
    ref_votes, gaps, max_sim = _reference_votes(train, labels, queries, num_classes, k, temperature)
    # Ties avoided by construction: keep queries whose neighbour set and winning class are
    # unambiguous at float32 precision, and require that this is nearly all of them.
    top2 = np.sort(ref_votes, axis=1)[:, -2:]
    clear = (gaps > 1e-4) & (top2[:, 1] - top2[:, 0] > 1e-3 * top2[:, 1])
    assert clear.sum() >= 20

    votes = knn_votes(train, labels, queries, num_classes, k=k, temperature=temperature,
                      batch_size=7)  # 7 does not divide 23: exercises the partial last batch
    predicted = knn_predict(train, labels, queries, num_classes, k=k, temperature=temperature,
                            batch_size=7)

    scaled_ref = ref_votes * np.exp(-max_sim / temperature)[:, None]  # documented row scaling
    np.testing.assert_allclose(votes[clear], scaled_ref[clear], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(predicted[clear], np.argmax(ref_votes, axis=1)[clear])
    assert predicted.dtype == np.int64 and predicted.shape == (23,)


def test_closed_form_two_classes():
    # Train features (unnormalised on purpose): a=(3,0) class 0, b=(0,2) class 1, c=(1,1) class 1.
    # Query (1,0): cosine similarities a=1, b=0, c=1/sqrt(2).
    train = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    labels = np.array([0, 1, 1])
    query = np.array([[1.0, 0.0]])
    # T=1, k=3: class 0 gets e^1 = 2.718, class 1 gets e^0 + e^0.7071 = 3.028 -> class 1.
    assert knn_predict(train, labels, query, 2, k=3, temperature=1.0)[0] == 1
    # Votes are returned scaled by e^-1 (max similarity 1 over T=1): [1, e^-1 + e^(0.7071-1)].
    np.testing.assert_allclose(knn_votes(train, labels, query, 2, k=3, temperature=1.0),
                               [[1.0, 0.367879 + 0.746106]], rtol=1e-5)
    # T=0.1: class 0 gets e^10 = 22026, class 1 gets 1 + e^7.071 = 1177 -> class 0.
    assert knn_predict(train, labels, query, 2, k=3, temperature=0.1)[0] == 0
    # k=2 keeps a and c only: T=1 gives 2.718 vs 2.028 -> class 0.
    assert knn_predict(train, labels, query, 2, k=2, temperature=1.0)[0] == 0


def test_small_temperature_does_not_overflow():
    train = np.array([[1.0, 0.0], [0.0, 1.0]])
    # exp(1 / 1e-4) overflows float32 without the per-row shift; the shift keeps it finite.
    votes = knn_votes(train, [0, 1], [[1.0, 0.1]], 2, k=2, temperature=1e-4)
    assert np.all(np.isfinite(votes))
    assert knn_predict(train, [0, 1], [[1.0, 0.1]], 2, k=2, temperature=1e-4)[0] == 0


def test_perfect_on_separated_clusters():
    rng = np.random.default_rng(0)
    centers = np.eye(5, 16) * 10.0
    train_labels = np.repeat(np.arange(5), 30)
    test_labels = np.repeat(np.arange(5), 10)
    train = centers[train_labels] + rng.normal(size=(150, 16))
    test = centers[test_labels] + rng.normal(size=(50, 16))
    assert knn_accuracy(train, train_labels, test, test_labels, 5, k=20, temperature=0.1) == 1.0


def test_k_larger_than_train_set_is_clipped_with_warning():
    rng = np.random.default_rng(1)
    train, labels = rng.normal(size=(10, 4)), rng.integers(0, 3, 10)
    queries = rng.normal(size=(6, 4))
    with pytest.warns(UserWarning, match="k=200 is larger than the 10"):
        clipped = knn_votes(train, labels, queries, 3, k=200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # k == N must not warn
        exact = knn_votes(train, labels, queries, 3, k=10)
    np.testing.assert_allclose(clipped, exact)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"k": 0}, "k must be a positive integer"),
        ({"k": -3}, "k must be a positive integer"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"temperature": -0.1}, "temperature must be > 0"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"train_labels": np.zeros(7, np.int64)}, "one label per feature row"),
        ({"query_features": np.zeros((3, 5))}, "dimension 5 but train_features have 4"),
        ({"train_labels": np.full(8, 3)}, r"must lie in \[0, 3\)"),
        ({"train_labels": np.full(8, -1)}, "unlabelled"),
        ({"train_features": np.zeros(8)}, "2-D array"),
        ({"num_classes": 0}, "num_classes must be a positive integer"),
    ],
)
def test_invalid_arguments(kwargs, match):
    args = {"train_features": np.ones((8, 4)), "train_labels": np.zeros(8, np.int64),
            "query_features": np.ones((3, 4)), "num_classes": 3}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        knn_predict(**args)


def test_accuracy_checks_query_labels():
    with pytest.raises(ValueError, match="query_labels"):
        knn_accuracy(np.ones((4, 2)), [0, 1, 0, 1], np.ones((3, 2)), [0, 1], 2, k=2)
