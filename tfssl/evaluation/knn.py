"""Weighted k-nearest-neighbour classification of frozen features.

Reference: Wu, Xiong, Yu & Lin, "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination", CVPR 2018, Sec. 3.4: features are L2-normalised, similarity is the cosine
s_i = <f_i, f>, and each of the k nearest training examples votes for its own class with weight
exp(s_i / T). The predicted class is the one with the largest summed vote.
"""

import warnings

import numpy as np
import tensorflow as tf


def _as_2d_float32(features, name):
    """Returns `features` as a float32 numpy array [N, D], raising ValueError otherwise."""
    array = np.asarray(features, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, D], got shape {array.shape}.")
    return array


def _as_labels(labels, num_examples, num_classes, name):
    """Returns `labels` as int64 [N] in [0, num_classes), raising ValueError otherwise."""
    array = np.asarray(labels)
    if array.ndim != 1 or array.shape[0] != num_examples:
        raise ValueError(
            f"{name} must be a 1-D array with one label per feature row ({num_examples}), "
            f"got shape {array.shape}."
        )
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class ids, got dtype {array.dtype}.")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes}) (num_classes={num_classes}), "
            f"got range [{array.min()}, {array.max()}]; unlabelled (-1) examples cannot be used."
        )
    return array


def _check_knn_args(num_classes, k, temperature, batch_size):
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes}.")
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k}.")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (e.g. 0.1), got {temperature}.")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")


def _effective_k(k, num_train):
    """Clips k to the training-set size with a warning (a smaller bank is common in quick runs)."""
    if k > num_train:
        warnings.warn(
            f"k={k} is larger than the {num_train} training examples; using k={num_train}.",
            stacklevel=3,
        )
        return num_train
    return int(k)


@tf.function(reduce_retracing=True)
def _vote_batch(bank, bank_labels, queries, k, temperature, num_classes):
    """Summed class votes for one batch of queries.

    Args:
        bank: float32 [N, D] L2-normalised training features.
        bank_labels: int64 [N] training labels.
        queries: float32 [B, D] L2-normalised query features.
        k: int32 scalar, number of neighbours (<= N).
        temperature: float32 scalar T.
        num_classes: int32 scalar C.

    Returns:
        float32 [B, C] votes sum_{i in topk} exp((s_i - s_max) / T) * [y_i == c].
    """
    similarity = tf.matmul(queries, bank, transpose_b=True)  # [B, N] cosine similarities
    top_sim, top_idx = tf.math.top_k(similarity, k=k)  # [B, k], sorted descending
    top_labels = tf.gather(bank_labels, top_idx)  # [B, k]
    # Subtracting each row's largest similarity scales every vote in the row by the same
    # constant, so the argmax is unchanged while exp() cannot overflow at small temperatures.
    weights = tf.exp((top_sim - top_sim[:, :1]) / temperature)
    # Scatter votes into a flat [B*C] vector: memory O(B*C) rather than a [B, k, C] one-hot.
    rows = tf.range(tf.shape(queries)[0], dtype=tf.int64)[:, None]
    segment = rows * tf.cast(num_classes, tf.int64) + top_labels
    flat = tf.math.unsorted_segment_sum(
        tf.reshape(weights, [-1]),
        tf.reshape(segment, [-1]),
        num_segments=tf.shape(queries, out_type=tf.int64)[0] * tf.cast(num_classes, tf.int64),
    )
    return tf.reshape(flat, [-1, num_classes])


def knn_votes(train_features, train_labels, query_features, num_classes, k=200, temperature=0.1,
              batch_size=1024):
    """Weighted kNN class votes (Wu et al. 2018) for each query.

    Queries are processed in batches of `batch_size`, so the similarity matrix held at once is
    [batch_size, N] (e.g. 1024 x 60000 floats = 245 MB) instead of [M, N].

    Args:
        train_features: float [N, D] memory-bank features (normalised here).
        train_labels: int [N] class ids in [0, num_classes).
        query_features: float [M, D] features to classify (normalised here).
        num_classes: number of classes C.
        k: number of neighbours; clipped to N with a warning when larger.
        temperature: T in exp(sim / T), > 0.
        batch_size: queries per batch.

    Returns:
        float32 numpy array [M, C] of summed votes. Each row is scaled by a positive constant
        (exp(-max_sim / T)) for numerical stability, so only within-row comparisons are meaningful.
    """
    _check_knn_args(num_classes, k, temperature, batch_size)
    bank = _as_2d_float32(train_features, "train_features")
    queries = _as_2d_float32(query_features, "query_features")
    labels = _as_labels(train_labels, bank.shape[0], num_classes, "train_labels")
    if bank.shape[0] == 0:
        raise ValueError("train_features must contain at least one example.")
    if queries.shape[1] != bank.shape[1]:
        raise ValueError(
            f"query_features have dimension {queries.shape[1]} but train_features have "
            f"{bank.shape[1]}; both must come from the same encoder."
        )
    k = _effective_k(k, bank.shape[0])
    bank_t = tf.math.l2_normalize(tf.constant(bank), axis=1)
    labels_t = tf.constant(labels)
    k_t = tf.constant(k, tf.int32)
    temp_t = tf.constant(temperature, tf.float32)
    classes_t = tf.constant(num_classes, tf.int32)
    votes = [np.zeros((0, num_classes), np.float32)]
    for start in range(0, queries.shape[0], batch_size):
        batch = tf.math.l2_normalize(tf.constant(queries[start:start + batch_size]), axis=1)
        votes.append(_vote_batch(bank_t, labels_t, batch, k_t, temp_t, classes_t).numpy())
    return np.concatenate(votes, axis=0)


def knn_predict(train_features, train_labels, query_features, num_classes, k=200, temperature=0.1,
                batch_size=1024):
    """Weighted kNN prediction (Wu et al. 2018, Sec. 3.4).

    Args:
        train_features: float [N, D] memory-bank features.
        train_labels: int [N] class ids in [0, num_classes).
        query_features: float [M, D] features to classify.
        num_classes: number of classes C.
        k: number of neighbours (default 200 as in the paper); clipped to N with a warning.
        temperature: T in exp(sim / T) (default 0.1 as in the paper).
        batch_size: queries per batch (bounds memory to batch_size x N similarities).

    Returns:
        int64 numpy array [M]: the class with the largest summed vote (lowest id on exact ties).
    """
    votes = knn_votes(train_features, train_labels, query_features, num_classes, k=k,
                      temperature=temperature, batch_size=batch_size)
    return np.argmax(votes, axis=1).astype(np.int64)


def knn_accuracy(train_features, train_labels, query_features, query_labels, num_classes, k=200,
                 temperature=0.1, batch_size=1024):
    """Top-1 accuracy of `knn_predict` on labelled queries.

    Args:
        train_features, train_labels, query_features, num_classes, k, temperature, batch_size:
            as in `knn_predict`.
        query_labels: int [M] true classes of the queries.

    Returns:
        Python float in [0, 1].
    """
    query_features = _as_2d_float32(query_features, "query_features")
    truth = _as_labels(query_labels, query_features.shape[0], num_classes, "query_labels")
    if truth.size == 0:
        raise ValueError("query_features must contain at least one example to measure accuracy.")
    predicted = knn_predict(train_features, train_labels, query_features, num_classes, k=k,
                            temperature=temperature, batch_size=batch_size)
    return float(np.mean(predicted == truth))
