"""Any TensorFlow Datasets (TFDS) image-classification builder as a ``DataSplit``.

Names may carry a ``"tfds:"`` prefix and a config/version (``"tfds:cifar10"``,
``"imagenet2012_subset/10pct"``). Examples are read from the features ``"image"`` and (if present)
``"label"``; files are read in their stored order (``shuffle_files=False``) so the example indices
are stable.

Datasets without a native validation split: "validation" is the LAST ``val_fraction`` of the
native train split and "train" the rest, expressed as TFDS absolute slices. Unlike the local sources
this carve is not a seeded permutation, because TFDS already stores train examples in a shuffled
order fixed at generation time, and a contiguous slice lets TFDS skip whole shards when reading.
"""

import functools
from typing import Dict, List, Optional, Tuple

import tensorflow as tf
from absl import logging

from tfssl.data import splits as splits_lib

PREFIX = "tfds:"


def strip_prefix(name: str) -> str:
    """``"tfds:cifar10"`` -> ``"cifar10"``; other names unchanged."""
    return name[len(PREFIX):] if name.startswith(PREFIX) else name


@functools.lru_cache(maxsize=1)
def builder_names() -> Tuple[str, ...]:
    """Registered TFDS builder names (offline: reads the local registry, no community index)."""
    import tensorflow_datasets as tfds  # Imported lazily: importing TFDS takes about a second.

    return tuple(tfds.list_builders(with_community_datasets=False))


def is_tfds_name(name: str) -> bool:
    """True if ``name`` (prefix, config and version allowed) names a registered TFDS builder."""
    base = strip_prefix(name).split("/")[0].split(":")[0]
    return bool(base) and base in builder_names()


def tfds_split(spec: splits_lib.SplitSpec, split_sizes: Dict[str, int],
               val_fraction: float) -> Tuple[str, int]:
    """Translates a parsed split into a TFDS split string with absolute bounds.

    Args:
        spec: the parsed split.
        split_sizes: ``{native TFDS split name: num_examples}`` from ``builder.info.splits``.
        val_fraction: fraction of train at its end used as validation when there is no native one.

    Returns:
        ``(tfds_split_string, num_examples)``, e.g. ``("train[54000:60000]", 6000)``.

    Raises:
        ValueError: if the split is unavailable or the slice selects nothing.
    """
    if spec.base in split_sizes:
        native, offset, size = spec.base, 0, split_sizes[spec.base]
        if spec.base == "train" and "validation" not in split_sizes:
            size -= splits_lib.num_validation(size, val_fraction)
    elif spec.base == "validation" and "train" in split_sizes:
        n_val = splits_lib.num_validation(split_sizes["train"], val_fraction)
        native, offset, size = "train", split_sizes["train"] - n_val, n_val
    else:
        raise ValueError(f"split {spec.base!r} is not available here: choose one of "
                         f"{splits_lib.available_splits(split_sizes)}")
    start, stop = splits_lib.resolve_slice(spec, size)
    if offset == 0 and start == 0 and stop == split_sizes[native]:
        return native, stop
    return f"{native}[{offset + start}:{offset + stop}]", stop - start


def _label_info(features) -> Tuple[Optional[int], Optional[List[str]]]:
    label = features["label"] if "label" in features else None
    num_classes = getattr(label, "num_classes", None)
    if num_classes is None:
        return None, None
    return int(num_classes), list(label.names)


def load_split(name: str, split: str, data_dir: Optional[str] = None, val_fraction: float = 0.1,
               download: bool = True) -> splits_lib.DataSplit:
    """A TFDS split as a ``DataSplit`` (downloads and prepares the dataset if needed).

    Args:
        name: TFDS builder name, optionally ``"tfds:"``-prefixed, with optional config/version.
        split: split string, e.g. ``"train[:10%]"``.
        data_dir: TFDS data directory (TFDS default when None).
        val_fraction: fraction of train used as validation when there is no native one.
        download: call ``download_and_prepare`` first (a no-op once prepared).

    Returns:
        The ``DataSplit``; elements ``(image uint8 [H, W, C], label int64 (-1 if no label),
        index int64)``.
    """
    import tensorflow_datasets as tfds

    spec = splits_lib.parse_split(split)
    splits_lib.check_val_fraction(val_fraction)
    builder = tfds.builder(strip_prefix(name), data_dir=data_dir)
    if download:
        builder.download_and_prepare()
    features = builder.info.features
    if "image" not in features:
        raise ValueError(f"TFDS dataset {name!r} has no 'image' feature (has {list(features.keys())}): "
                         "only image datasets are supported")
    sizes = {key: int(info.num_examples) for key, info in builder.info.splits.items()}
    tfds_split_str, num_examples = tfds_split(spec, sizes, val_fraction)
    logging.info("TFDS %s: split %r read as %r (%d examples)", name, split, tfds_split_str, num_examples)
    num_classes, class_names = _label_info(features)
    has_label = num_classes is not None

    def to_triple(position, example):
        label = tf.cast(example["label"], tf.int64) if has_label else tf.constant(-1, tf.int64)
        return example["image"], label, position

    dataset = builder.as_dataset(split=tfds_split_str, shuffle_files=False).enumerate().map(
        to_triple, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    image_shape = tuple(features["image"].shape)
    return splits_lib.DataSplit(
        dataset=dataset, num_examples=num_examples, num_classes=num_classes,
        image_shape=image_shape, class_names=class_names, name=name, split=split)
