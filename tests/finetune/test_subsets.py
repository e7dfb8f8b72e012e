"""Label-fraction subsets: class-balanced, seeded, nested, disjoint from validation; clear errors."""
import hashlib

import numpy as np
import pytest

from tfssl.finetune import check_label_fraction, class_balanced_subset, split_labels, subset_dataset


def unbalanced_labels():
    # 3 classes of very different sizes, shuffled.
    labels = np.repeat([0, 1, 2], [500, 120, 40])
    return np.random.default_rng(0).permutation(labels)


@pytest.mark.parametrize("fraction, expected", [(0.01, [2, 2, 2]), (0.1, [22, 22, 22]), (0.3, [66, 66, 40])])
def test_equal_share_per_class_capped_by_class_size(fraction, expected):
    labels = unbalanced_labels()  # 660 examples, 3 classes: round(fraction * 660 / 3) each, at most the class
    idx = class_balanced_subset(labels, fraction, seed=1)
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=3), expected)
    assert np.all(np.diff(idx) > 0), "sorted, no repeats"


def test_at_least_one_per_class_and_full_fraction_takes_everything():
    labels = unbalanced_labels()
    counts = np.bincount(labels[class_balanced_subset(labels, 1e-6, seed=0)], minlength=3)
    np.testing.assert_array_equal(counts, [1, 1, 1])
    np.testing.assert_array_equal(class_balanced_subset(labels, 1.0), np.arange(len(labels)))


def test_seeded_reproducible_and_nested():
    labels = unbalanced_labels()
    a = class_balanced_subset(labels, 0.1, seed=4)
    np.testing.assert_array_equal(a, class_balanced_subset(labels, 0.1, seed=4))
    assert not np.array_equal(a, class_balanced_subset(labels, 0.1, seed=5))
    small = class_balanced_subset(labels, 0.01, seed=4)
    assert set(small) <= set(a), "the 1% labels must be part of the 10% labels (same seed)"


def test_unlabelled_examples_are_never_selected():
    labels = np.array([0, 1, -1, 0, 1, -1, 0, 1])
    idx = class_balanced_subset(labels, 1.0)
    assert -1 not in labels[idx] and len(idx) == 6
    assert not np.isin(np.flatnonzero(labels < 0), class_balanced_subset(labels, 0.5)).any()


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, float("nan"), float("inf"), "0.1", None, True])
def test_bad_fractions_are_one_line_errors(bad):
    with pytest.raises(ValueError, match=r"^--label_fraction must be in \(0, 1\]") as info:
        check_label_fraction(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="label_fraction"):
        class_balanced_subset(np.arange(10) % 2, bad)


def test_missing_class_and_no_labels_are_errors():
    with pytest.raises(ValueError, match=r"classes \[2\] have no examples"):
        class_balanced_subset(np.array([0, 1, 0, 1]), 0.5, num_classes=3)
    with pytest.raises(ValueError, match="no labelled examples"):
        class_balanced_subset(np.array([-1, -1]), 0.5)


def test_fashion_mnist_subset_is_balanced_and_disjoint_from_validation():
    from tfssl.finetune import FineTuneConfig

    config = FineTuneConfig()
    train = config.load_split("train[:5000]")
    val = config.load_split("validation")
    labels = split_labels(train)
    idx = class_balanced_subset(labels, 0.1, seed=0, num_classes=10)
    assert len(idx) == 500
    picked = list(subset_dataset(train, idx).as_numpy_iterator())
    # The subset really is those examples: their labels and indices, in order.
    np.testing.assert_array_equal([i for _, _, i in picked], idx)
    np.testing.assert_array_equal(np.bincount([y for _, y, _ in picked], minlength=10), [50] * 10)
    digest = lambda image: hashlib.sha1(image.tobytes()).hexdigest()  # noqa: E731
    val_images = {digest(x) for x, _, _ in val.dataset.as_numpy_iterator()}
    assert len(val_images) > 5000
    assert not any(digest(x) in val_images for x, _, _ in picked)
