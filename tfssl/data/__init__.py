"""Data sources -> unbatched tf.data of ``(image uint8 [H, W, C], label int64, index int64)``.

Sources: ``"fashion_mnist"`` (local Debian IDX files, else Keras download), ``"image_folder"``
(a folder tree, see ``tfssl.data.folder``) and any TFDS builder name (optionally ``"tfds:"``-prefixed;
``"tfds:fashion_mnist"`` forces the TFDS copy). Split grammar and validation carving are in
``tfssl.data.splits``.

Example::

    split = load_split("fashion_mnist", "train[:10%]", image_size=32)
    dataset = split.dataset.shuffle(10_000).batch(256)
"""

import dataclasses
import numbers
from typing import Optional, Sequence, Tuple, Union

import tensorflow as tf
from absl import logging

from tfssl.data import fashion_mnist, folder, splits, tfds_source
from tfssl.data.splits import SPLITS, DataSplit, parse_split

DATASETS = ("fashion_mnist", "image_folder")
"""Built-in source names; additionally any TFDS builder name (optionally prefixed "tfds:")."""

__all__ = ["DATASETS", "SPLITS", "DataSplit", "check_dataset_name", "load_split", "parse_split",
           "resize_uint8"]


def check_dataset_name(name: str) -> str:
    """Validates a dataset name.

    Args:
        name: ``"fashion_mnist"``, ``"image_folder"`` or a TFDS builder name (``"cifar10"``,
            ``"tfds:cifar10"``, ``"imagenet2012_subset/10pct"``).

    Returns:
        The canonical name: the built-in name itself, or ``"tfds:<name>"`` for TFDS.

    Raises:
        ValueError: for an unknown name, listing the choices.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset name must be a non-empty string, got {name!r}: choose one of "
                         f"{list(DATASETS)} or any TFDS builder name")
    if name in DATASETS:
        return name
    if tfds_source.is_tfds_name(name):
        return tfds_source.PREFIX + tfds_source.strip_prefix(name)
    raise ValueError(f"unknown dataset {name!r}: choose one of {list(DATASETS)} or any TFDS builder name "
                     "(e.g. 'cifar10' or 'tfds:cifar10'; see tfds.list_builders())")


def _check_image_size(image_size) -> Optional[Tuple[int, int]]:
    if image_size is None:
        return None

    def is_size(v):
        return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0

    if is_size(image_size):
        image_size = (image_size, image_size)
    if isinstance(image_size, Sequence) and len(image_size) == 2 and all(is_size(v) for v in image_size):
        return int(image_size[0]), int(image_size[1])
    raise ValueError(f"image_size must be None, a positive int or a (height, width) pair, got {image_size!r}")


def resize_uint8(image: tf.Tensor, size: Tuple[int, int]) -> tf.Tensor:
    """Resizes a uint8 [H, W, C] image to ``size`` = (height, width), keeping uint8.

    Bilinear with antialiasing (so downscaling does not alias), then rounded and clipped back to
    [0, 255]. Images already of that size are returned unchanged.
    """
    def resize():
        resized = tf.image.resize(image, size, method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

    same = tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.constant(size, tf.int32)))
    out = tf.cond(same, lambda: image, resize)
    return tf.ensure_shape(out, [size[0], size[1], image.shape[-1]])


def _apply_image_size(split: DataSplit, size: Optional[Tuple[int, int]]) -> DataSplit:
    if size is None:
        if split.image_shape[0] is None:
            logging.warning("%s %r: images differ in size; pass image_size to batch them",
                            split.name, split.split)
        return split
    if tuple(split.image_shape[:2]) == size:
        return split
    dataset = split.dataset.map(lambda image, label, index: (resize_uint8(image, size), label, index),
                                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataclasses.replace(split, dataset=dataset, image_shape=(size[0], size[1], split.image_shape[2]))


def load_split(name: str, split: str, data_dir: Optional[str] = None,
               image_size: Union[None, int, Tuple[int, int]] = None, val_fraction: float = 0.1,
               seed: int = 0) -> DataSplit:
    """Loads one split of a dataset as an unbatched tf.data pipeline.

    Args:
        name: see ``check_dataset_name``.
        split: ``"train" | "validation" | "test"`` with an optional slice, e.g. ``"train[:2000]"``,
            ``"test[:10%]"`` (grammar in ``tfssl.data.splits``).
        data_dir: folder of the IDX files (fashion_mnist, optional), the image root (image_folder,
            required) or the TFDS data directory (optional).
        image_size: None (native size), an int (square) or (height, width): images are resized to
            it, still uint8.
        val_fraction: fraction of train carved out as "validation" when there is no native one.
        seed: seed of that carve (local sources; TFDS uses the last fraction of train).

    Returns:
        A ``DataSplit``; ``dataset`` yields ``(image uint8 [H, W, C], label int64 (-1 unlabelled),
        index int64 in [0, num_examples))``.

    Raises:
        ValueError: unknown dataset or split, malformed slice, bad image_size or val_fraction.
    """
    canonical = check_dataset_name(name)
    parse_split(split)  # Fail on a bad split before any (possibly slow) loading.
    splits.check_val_fraction(val_fraction)
    size = _check_image_size(image_size)
    if canonical == "fashion_mnist":
        result = fashion_mnist.load_split(split, data_dir, val_fraction, seed, name=name)
    elif canonical == "image_folder":
        if data_dir is None:
            raise ValueError("image_folder needs data_dir: the root folder of the images")
        result = folder.load_split(split, data_dir, val_fraction, seed, name=name)
    else:
        result = tfds_source.load_split(canonical, split, data_dir, val_fraction)
        result = dataclasses.replace(result, name=name)
    return _apply_image_size(result, size)
