"""Class-balanced, seeded labelled subsets (the "1% / 10% of labels" protocol of semi-supervised papers).

SimCLR (Chen et al. 2020a, sec. 6) and SimCLRv2 fine-tune on 1% / 10% of ImageNet labels drawn "in a
class-balanced way"; here every class contributes the same number of examples.
"""
import math

import numpy as np
import tensorflow as tf


def check_label_fraction(label_fraction):
    """Raises a one-line ValueError unless `label_fraction` is a number in (0, 1]."""
    if isinstance(label_fraction, bool) or not isinstance(label_fraction, (int, float, np.number)) \
            or not math.isfinite(label_fraction) or not 0 < label_fraction <= 1:
        raise ValueError(f"--label_fraction must be in (0, 1] (e.g. 0.01, 0.1 or 1.0), got {label_fraction!r}")
    return float(label_fraction)


def per_class_count(num_examples, num_classes, label_fraction):
    """Examples per class: `round(label_fraction * num_examples / num_classes)`, at least 1."""
    return max(1, int(math.floor(label_fraction * num_examples / num_classes + 0.5)))


def class_balanced_subset(labels, label_fraction, seed=0, num_classes=None):
    """Indices of a class-balanced random subset holding `label_fraction` of the labelled examples.

    Every class contributes `k = max(1, round(label_fraction * N / C))` examples (all of its examples
    if it has fewer); `label_fraction=1.0` takes every example. Each class's examples are ranked by
    a permutation that depends only on `(seed, class)`, and the subset takes a prefix of it, so the
    same seed always gives the same subset and a smaller fraction's subset is contained in a larger
    one's (the 1% labels are part of the 10% labels).

    Args:
      labels: int array `[N]` of class ids; negative labels (unlabelled) are never selected.
      label_fraction: float in (0, 1].
      seed: subset seed.
      num_classes: C (default: max label + 1).

    Returns:
      Sorted int64 array of selected positions into `labels`.

    Raises:
      ValueError: bad fraction, no labelled examples, or a class absent from `labels`.
    """
    label_fraction = check_label_fraction(label_fraction)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    labelled = labels >= 0
    if not labelled.any():
        raise ValueError("the split has no labelled examples: fine-tuning needs labels")
    num_classes = int(num_classes or labels.max() + 1)
    counts = np.bincount(labels[labelled], minlength=num_classes)
    missing = np.flatnonzero(counts == 0)
    if missing.size:
        raise ValueError(f"classes {missing.tolist()} have no examples in this split; use a larger split")
    if label_fraction == 1.0:
        return np.flatnonzero(labelled).astype(np.int64)
    k = per_class_count(int(labelled.sum()), num_classes, label_fraction)
    chosen = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        order = np.random.default_rng([int(seed), c]).permutation(members.size)
        chosen.append(members[order[:k]])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def split_labels(split, batch_size=4096):
    """Labels of a `DataSplit`, ordered by its `index` field, as an int64 numpy array `[N]`."""
    ds = split.dataset.map(lambda image, label, index: (label, index)).batch(batch_size)
    labels = np.full(split.num_examples, -1, np.int64)
    for label, index in ds.as_numpy_iterator():
        labels[index] = label
    return labels


def subset_dataset(split, indices):
    """The examples of `split` whose `index` is in `indices` (same element structure, unbatched)."""
    mask = np.zeros(split.num_examples, bool)
    mask[np.asarray(indices, np.int64)] = True
    mask = tf.constant(mask)
    return split.dataset.filter(lambda image, label, index: tf.gather(mask, index))
