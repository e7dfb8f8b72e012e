"""Linear probe: learns separable data, stays at chance on noise, selects l2 on val only."""

import numpy as np
import pytest

from tfssl.evaluation import evaluate_features, fit_standardizer, linear_probe

FAST = {"epochs": 30, "batch_size": 64, "learning_rate": 1e-2}


def _blobs(rng, labels, dim=16, spread=6.0, offset=0.0, scale=1.0):
    """Gaussian blobs with class means spread * e_c (linearly separable up to a tiny overlap)."""
    centers = np.eye(int(labels.max()) + 1, dim) * spread
    features = centers[labels] + rng.normal(size=(len(labels), dim))
    return (features * scale + offset).astype(np.float32), labels


def test_separable_blobs_reach_high_accuracy():
    rng = np.random.default_rng(0)
    train, val, test = (_blobs(rng, rng.integers(0, 3, n)) for n in (300, 100, 200))
    result = linear_probe(train, val, test, 3, **FAST)
    assert result["val_accuracy"] > 0.95
    assert result["test_accuracy"] > 0.95
    assert set(result) == {"val_accuracy", "test_accuracy", "best_l2", "val_accuracy_by_l2"}
    assert list(result["val_accuracy_by_l2"]) == [0.0, 1e-5, 1e-4, 1e-3]
    assert result["val_accuracy"] == max(result["val_accuracy_by_l2"].values())


def test_random_labels_give_chance_accuracy():
    rng = np.random.default_rng(1)
    train, val, test = ((rng.normal(size=(n, 16)).astype(np.float32), rng.integers(0, 4, n))
                        for n in (400, 400, 1000))
    result = linear_probe(train, val, test, 4, **FAST)
    # Chance is 0.25; 1000 test examples give a standard error of 0.014.
    assert 0.19 < result["test_accuracy"] < 0.31


def test_features_are_standardised_with_train_statistics():
    rng = np.random.default_rng(2)
    # Huge offset and scale: without standardisation Adam at this lr would not fit in 30 epochs.
    train, val = (_blobs(rng, rng.integers(0, 2, n), offset=5e3, scale=1e3) for n in (300, 100))
    # A test split with only class 1: standardising it with its own mean would centre it on the
    # decision boundary and misclassify about half; the train statistics keep it on class 1's side.
    test = _blobs(rng, np.ones(200, np.int64), offset=5e3, scale=1e3)
    result = linear_probe(train, val, test, 2, **FAST)
    assert result["val_accuracy"] > 0.95
    assert result["test_accuracy"] > 0.95


def _selection_case(rng):
    """Imbalanced 2-class data where l2=0 separates the classes and l2=30 predicts class 0 always.

    With a strong penalty the weights vanish and only the (unpenalised) bias, i.e. the majority
    class 0, remains. Returns train, the true split, and a 'lying' split whose features all come
    from class 1 but are labelled 0, on which the constant model is perfect and l2=0 is wrong.
    """
    labels = (rng.uniform(size=400) < 0.3).astype(np.int64)
    train = _blobs(rng, labels, spread=3.0)
    truthful = _blobs(rng, (rng.uniform(size=200) < 0.3).astype(np.int64), spread=3.0)
    lying = (_blobs(rng, np.ones(200, np.int64), spread=3.0)[0], np.zeros(200, np.int64))
    return train, truthful, lying


def test_selection_follows_val_not_test():
    rng = np.random.default_rng(3)
    train, truthful, lying = _selection_case(rng)
    grid = (0.0, 30.0)

    result = linear_probe(train, truthful, lying, 2, l2_grid=grid, **FAST)
    by_l2 = result["val_accuracy_by_l2"]
    assert by_l2[0.0] > 0.95 and by_l2[30.0] < 0.8  # the two models really differ
    assert result["best_l2"] == 0.0  # test labels favour 30.0 but must not be consulted
    assert result["test_accuracy"] < 0.1  # the selected model's (bad) score, reported honestly

    result = linear_probe(train, lying, truthful, 2, l2_grid=grid, **FAST)
    assert result["best_l2"] == 30.0  # now val favours the constant model; test disagrees
    assert result["val_accuracy"] == 1.0
    assert result["test_accuracy"] < 0.8


def test_each_l2_model_is_trained_independently_of_the_grid():
    rng = np.random.default_rng(4)
    train, val = (_blobs(rng, rng.integers(0, 3, n), spread=1.5) for n in (300, 300))
    alone = linear_probe(train, val, None, 3, l2_grid=(1e-2,), **FAST)
    stacked = linear_probe(train, val, None, 3, l2_grid=(0.0, 1e-2, 1.0), **FAST)
    assert alone["test_accuracy"] is None
    # Same init, same batches, separate losses: only float rounding may differ.
    assert abs(alone["val_accuracy_by_l2"][1e-2] - stacked["val_accuracy_by_l2"][1e-2]) <= 2 / 300


def test_fit_standardizer_matches_numpy():
    rng = np.random.default_rng(5)
    x = rng.normal(loc=3.0, scale=2.0, size=(50, 4)).astype(np.float32)
    x[:, 2] = 7.0  # constant column: centred, not divided by ~0
    mean, std = fit_standardizer(x)
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(std[[0, 1, 3]], x[:, [0, 1, 3]].astype(np.float64).std(0), rtol=1e-5)
    assert std[2] == 1.0


@pytest.mark.parametrize(
    "change,match",
    [
        ({"train": (np.ones((10, 3)), np.zeros(9, np.int64))}, "one label per feature row"),
        ({"val": (np.ones((10, 4)), np.zeros(10, np.int64))}, "dimension 4 but train"),
        ({"test": (np.ones((10, 4)), np.zeros(10, np.int64))}, "dimension 4 but train"),
        ({"val": np.ones((10, 3))}, r"\(features, labels\) pair"),
        ({"l2_grid": ()}, "l2_grid must be a non-empty"),
        ({"l2_grid": (0.0, -1e-4)}, "l2_grid"),
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"learning_rate": 0.0}, "learning_rate must be > 0"),
        ({"num_classes": 1}, "num_classes must be an integer >= 2"),
        ({"train": (np.ones((10, 3)), np.full(10, 5))}, r"must lie in \[0, 2\)"),
    ],
)
def test_invalid_arguments(change, match):
    split = (np.ones((10, 3), np.float32), np.zeros(10, np.int64))
    args = {"train": split, "val": split, "test": split, "num_classes": 2}
    args.update(change)
    with pytest.raises(ValueError, match=match):
        linear_probe(**args)


def test_evaluate_features_combines_probe_and_knn():
    rng = np.random.default_rng(6)
    train, val, test = (_blobs(rng, rng.integers(0, 3, n)) for n in (150, 60, 60))
    report = evaluate_features(train, val, test, 3, knn_k=10, knn_temperature=0.1,
                               linear_kwargs=dict(FAST, l2_grid=(0.0, 1e-3)))
    assert set(report) == {"linear", "knn"}
    assert report["knn"]["k"] == 10 and report["knn"]["temperature"] == 0.1
    assert report["knn"]["val_accuracy"] > 0.95 and report["knn"]["test_accuracy"] > 0.95
    assert report["linear"]["test_accuracy"] > 0.95
    assert list(report["linear"]["val_accuracy_by_l2"]) == [0.0, 1e-3]
