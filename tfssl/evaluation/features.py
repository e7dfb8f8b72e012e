"""Frozen-encoder feature extraction with an on-disk cache.

Linear and kNN evaluation (Wu et al. 2018; Chen et al. 2020, SimCLR) both consume the encoder's
pooled features for whole splits. Extracting them is the expensive part, so the result can be
cached as an .npz file that later evaluations reuse.
"""

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tfssl.augment import center_resize

_CACHE_KEYS = ("features", "labels", "num_examples", "feature_dim")


def _check_extract_args(image_size, batch_size):
    if int(image_size) != image_size or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size}.")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")


def _known_num_examples(dataset):
    """Number of examples of an unbatched dataset, or None when tf.data cannot tell statically."""
    cardinality = int(dataset.cardinality())
    if cardinality == tf.data.INFINITE_CARDINALITY:
        raise ValueError("dataset is infinite (e.g. .repeat()); pass a finite, unbatched split.")
    return None if cardinality == tf.data.UNKNOWN_CARDINALITY else cardinality


def _known_feature_dim(encoder):
    """Output width D of a Keras encoder, or None for arbitrary callables."""
    try:
        dim = encoder.output_shape[-1]
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    return int(dim) if dim is not None else None


def _split_element(element):
    """(image, label[, index]) -> (image, label); the index is not needed for evaluation."""
    if not isinstance(element, tuple) or len(element) not in (2, 3):
        raise ValueError(
            "dataset elements must be (image, label) or (image, label, index) tuples as in "
            f"DataSplit.dataset, got {element}."
        )
    return element[0], element[1]


def _preprocessed_batches(dataset, image_size, batch_size):
    """Batches, center-resizes (deterministic eval preprocessing) and prefetches `dataset`."""
    _split_element(dataset.element_spec)
    dataset = dataset.map(lambda *element: _split_element(element))
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(
        lambda images, labels: (center_resize(images, image_size), tf.cast(labels, tf.int64)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def _run_encoder(encoder, batches, num_examples, verbose):
    """Applies the encoder (inference mode) to every batch; returns float32 [N, D], int64 [N]."""
    # One traced graph for all batches (retraced at most once for the smaller last batch).
    forward = tf.function(lambda images: encoder(images, training=False), reduce_retracing=True)
    progbar = keras.utils.Progbar(num_examples, verbose=verbose if verbose in (1, 2) else 1,
                                  unit_name="example") if verbose else None
    features, labels, seen = [], [], 0
    for images, batch_labels in batches:
        outputs = forward(images)
        if not isinstance(outputs, tf.Tensor) or outputs.shape.rank != 2:
            raise ValueError(
                "encoder must return one pooled feature tensor [batch, D], got "
                f"{getattr(outputs, 'shape', type(outputs).__name__)}."
            )
        # Mixed-precision encoders may return float16/bfloat16; store float32 for the probes.
        features.append(tf.cast(outputs, tf.float32).numpy())
        labels.append(batch_labels.numpy())
        seen += features[-1].shape[0]
        if progbar is not None:
            progbar.update(seen)
    if not features:
        raise ValueError("dataset is empty; nothing to extract features from.")
    return np.concatenate(features, axis=0), np.concatenate(labels, axis=0).astype(np.int64)


def _save_cache(cache_path, features, labels):
    """Writes the cache atomically: a temporary file in the same directory, then a rename.

    The rename is atomic on POSIX, so an interrupted run or a concurrent reader never sees a
    partially written cache.
    """
    directory = os.path.dirname(os.path.abspath(cache_path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(handle, "wb") as f:
            np.savez(f, features=features, labels=labels,
                     num_examples=np.int64(features.shape[0]),
                     feature_dim=np.int64(features.shape[1]))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, cache_path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def _load_cache(cache_path, expected_num, expected_dim):
    """Loads and validates a cache; raises ValueError when it is malformed or does not fit."""
    with np.load(cache_path, allow_pickle=False) as data:
        missing = [key for key in _CACHE_KEYS if key not in data.files]
        if missing:
            raise ValueError(
                f"feature cache {cache_path} lacks {missing}; delete it to re-extract.")
        features, labels = data["features"], data["labels"]
        num, dim = int(data["num_examples"]), int(data["feature_dim"])
    if features.shape != (num, dim) or labels.shape != (num,):
        raise ValueError(
            f"feature cache {cache_path} is corrupt: it records N={num}, D={dim} but holds "
            f"features {features.shape} and labels {labels.shape}; delete it to re-extract."
        )
    for what, stored, expected in (("N", num, expected_num), ("D", dim, expected_dim)):
        if expected is not None and stored != expected:
            raise ValueError(
                f"feature cache {cache_path} has {what}={stored} but the current "
                f"{'dataset' if what == 'N' else 'encoder'} gives {what}={expected}; it belongs to "
                "another split or encoder: delete it or pass a different cache_path."
            )
    return features.astype(np.float32), labels.astype(np.int64)


def extract_features(encoder, dataset, image_size, batch_size=256, cache_path=None, verbose=1):
    """Pooled encoder features and labels for every example of a split, in dataset order.

    Args:
        encoder: keras.Model (or callable accepting `training=`) mapping float32
            [B, image_size, image_size, 3] in [0, 1] to features [B, D]; called with training=False.
        dataset: UNBATCHED tf.data.Dataset of (image uint8 [H, W, C], label int64, index int64)
            as `DataSplit.dataset` (the index is optional and ignored).
        image_size: side length the images are center-resized to (`tfssl.augment.center_resize`).
        batch_size: examples per encoder call.
        cache_path: optional .npz path. If it exists it is loaded (and checked against the
            dataset size and encoder width where those are known) instead of running the encoder;
            otherwise the result is written there atomically. The path is the cache key: the
            caller must make it unique per (checkpoint, split, image_size).
        verbose: 0 silent, 1 progress bar, 2 one line at the end (keras.utils.Progbar).

    Returns:
        (features float32 numpy [N, D], labels int64 numpy [N]).
    """
    _check_extract_args(image_size, batch_size)
    num_examples = _known_num_examples(dataset)
    if cache_path is not None and os.path.exists(cache_path):
        return _load_cache(cache_path, num_examples, _known_feature_dim(encoder))
    batches = _preprocessed_batches(dataset, int(image_size), int(batch_size))
    features, labels = _run_encoder(encoder, batches, num_examples, verbose)
    if cache_path is not None:
        _save_cache(cache_path, features, labels)
    return features, labels
