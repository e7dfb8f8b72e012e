"""Image folders -> tf.data, with unreadable files skipped and counted.

Layout (``root`` = ``data_dir``)::

    root/<class>/.../*.jpg       labelled: class ids follow the sorted first-level folder names
    root/*.png                   directly in the root: unlabelled (label -1)
    root/train/<class>/...       if first-level folders are named train / validation (or val) / test,
    root/val/<class>/...         they are the splits, each laid out as above
    root/test/<class>/...

Files are found recursively; extensions jpg, jpeg, png, bmp, gif are accepted in any case; hidden
files and folders (leading ".") are ignored. Without split folders the whole tree is "train" and
"validation" is carved from it (seeded); "test" is then unavailable.

Why files are validated up front: ``tf.io.decode_image`` raises on a corrupt file, and an error
inside a training pipeline would either crash it or, with ``Dataset.ignore_errors`` alone, silently
shorten the epoch so that ``num_examples`` and the example indices (memory-bank slots) no longer
match what is produced. Instead, the first load of a folder decodes every file once in a parallel
tf.data pass (``ignore_errors`` there, then the surviving indices are compared with the file list),
which finds truncated files too (a header check would not), records every image's native size and
channel count, and logs a warning naming the skipped files. The list of good files is cached
in-process (keyed by the paths, sizes and modification times), so later ``load_split`` calls on the
same folder only stat the files. The training pipeline then decodes only good files; it keeps an
``ignore_errors`` right after decoding as a last guard against files that change on disk after
validation (such files are dropped silently, so ``num_examples`` would then overcount).

Channels: RGBA -> RGB (alpha dropped), gray+alpha -> gray. If every image is grayscale the split
keeps 1 channel; if grayscale and colour images are mixed, all become RGB (gray tiled to 3), so
every split of one folder has the same channel count.
"""

import dataclasses
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from tfssl.data import splits as splits_lib

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# First-level folder names that mark a split layout, mapped to the split they hold.
SPLIT_FOLDERS = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}
_MAX_NAMES_IN_WARNING = 5


@dataclasses.dataclass(frozen=True)
class FolderTable:
    """Readable images of one native split.

    Attributes:
        paths: file paths, sorted by path relative to the split folder.
        labels: int64 [N] class ids (-1 for unlabelled images).
        sizes: int64 [N, 3] native (height, width, channels) of each image.
        skipped: paths of files in this split folder that could not be decoded.
    """

    paths: Tuple[str, ...]
    labels: np.ndarray
    sizes: np.ndarray
    skipped: Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class FolderIndex:
    """The validated content of an image folder.

    Attributes:
        root: absolute root folder.
        class_names: sorted class folder names, or None when there are no class folders.
        channels: channel count every image is converted to (1 or 3).
        tables: native split name -> ``FolderTable``.
    """

    root: str
    class_names: Optional[List[str]]
    channels: int
    tables: Dict[str, FolderTable]


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def is_image_file(name: str) -> bool:
    """True for a non-hidden file name with an accepted image extension (any case)."""
    return not _is_hidden(name) and name.lower().endswith(IMAGE_EXTENSIONS)


def _walk_images(directory: str) -> List[str]:
    """All image files under ``directory`` (recursive), sorted by relative path."""
    found = []
    for current, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not _is_hidden(d)]
        found.extend(os.path.join(current, f) for f in files if is_image_file(f))
    return sorted(found, key=lambda p: os.path.relpath(p, directory))


def _first_level(directory: str) -> Tuple[List[str], List[str]]:
    """Sorted (sub-folder names, image file paths) directly inside ``directory``."""
    dirs, files = [], []
    for entry in sorted(os.listdir(directory)):
        path = os.path.join(directory, entry)
        if _is_hidden(entry):
            continue
        if os.path.isdir(path):
            dirs.append(entry)
        elif is_image_file(entry):
            files.append(path)
    return dirs, files


def split_folders(root: str) -> Dict[str, str]:
    """Native split name -> folder; ``{"train": root}`` when the root has no split folders.

    Raises:
        ValueError: if both ``val`` and ``validation`` folders exist.
    """
    dirs, loose = _first_level(root)
    found = {}
    for name in dirs:
        split = SPLIT_FOLDERS.get(name.lower())
        if split is None:
            continue
        if split in found:
            raise ValueError(f"{root} has two folders for split {split!r} ({os.path.basename(found[split])!r} "
                             f"and {name!r}): keep only one")
        found[split] = os.path.join(root, name)
    if not found:
        return {"train": root}
    ignored = [d for d in dirs if d.lower() not in SPLIT_FOLDERS] + [os.path.basename(f) for f in loose]
    if ignored:
        logging.warning("image_folder %s: split folders %s found, so these root entries are ignored: %s",
                        root, sorted(found), ignored[:_MAX_NAMES_IN_WARNING])
    return found


def scan_folder(root: str) -> Tuple[Optional[List[str]], Dict[str, Tuple[List[str], np.ndarray]]]:
    """Lists image files and their labels without decoding anything.

    Args:
        root: dataset root folder.

    Returns:
        ``(class_names, {native split: (paths, labels int64 [N])})``; class_names is None when no
        first-level folder holds images. Class ids are shared by all splits (sorted union of names).
    """
    folders = split_folders(root)
    per_split_classes = {}
    class_names = set()
    for split, folder in folders.items():
        dirs, loose = _first_level(folder)
        classes = {d: _walk_images(os.path.join(folder, d)) for d in dirs}
        classes = {d: files for d, files in classes.items() if files}
        per_split_classes[split] = (classes, loose)
        class_names.update(classes)
    names = sorted(class_names)
    label_of = {name: i for i, name in enumerate(names)}
    listing = {}
    for split, (classes, loose) in per_split_classes.items():
        paths, labels = list(loose), [-1] * len(loose)
        for name, files in sorted(classes.items()):
            paths.extend(files)
            labels.extend([label_of[name]] * len(files))
        listing[split] = (paths, np.asarray(labels, dtype=np.int64))
    return (names or None), listing


def _decode_native(path: tf.Tensor) -> tf.Tensor:
    # channels=0 keeps the file's own channel count; conversion happens in _to_channels.
    return tf.io.decode_image(tf.io.read_file(path), channels=0, expand_animations=False)


def probe_images(paths: List[str]) -> Tuple[np.ndarray, np.ndarray]:
    """Decodes every file once to find the readable ones.

    Runs as a parallel tf.data pass; a file whose read or decode raises is dropped by
    ``ignore_errors`` and so is missing from the output.

    Args:
        paths: image file paths.

    Returns:
        ``(ok, sizes)``: bool [N] readable flags and int64 [N, 3] (height, width, channels), zero
        for unreadable files.
    """
    n = len(paths)
    ok = np.zeros([n], dtype=bool)
    sizes = np.zeros([n, 3], dtype=np.int64)
    if n == 0:
        return ok, sizes
    dataset = tf.data.Dataset.from_tensor_slices((tf.constant(paths), tf.range(n, dtype=tf.int64)))
    dataset = dataset.map(
        lambda path, i: (i, tf.shape(_decode_native(path), out_type=tf.int64)),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    dataset = dataset.ignore_errors().batch(1024)
    for indices, shapes in dataset.as_numpy_iterator():
        ok[indices] = True
        sizes[indices] = shapes
    return ok, sizes


def _signature(listing: Dict[str, Tuple[List[str], np.ndarray]]) -> tuple:
    items = []
    for split in sorted(listing):
        for path in listing[split][0]:
            stat = os.stat(path)
            items.append((path, stat.st_size, stat.st_mtime_ns))
    return tuple(items)


_CACHE: Dict[tuple, FolderIndex] = {}


def index_folder(root: str) -> FolderIndex:
    """Scans and validates an image folder (cached in-process).

    Args:
        root: dataset root folder.

    Returns:
        The ``FolderIndex``. Logs a warning with the number and some names of unreadable files.

    Raises:
        ValueError: if ``root`` is not a folder or holds no readable image.
    """
    if not root or not os.path.isdir(root):
        raise ValueError(f"image_folder needs data_dir to be an existing folder of images, got {root!r}")
    root = os.path.abspath(root)
    class_names, listing = scan_folder(root)
    key = (root, _signature(listing))
    if key in _CACHE:
        return _CACHE[key]
    tables, all_skipped, total = {}, [], 0
    for split, (paths, labels) in listing.items():
        ok, sizes = probe_images(paths)
        skipped = tuple(p for p, good in zip(paths, ok) if not good)
        tables[split] = FolderTable(paths=tuple(p for p, good in zip(paths, ok) if good),
                                    labels=labels[ok], sizes=sizes[ok], skipped=skipped)
        all_skipped.extend(skipped)
        total += len(paths)
    if all_skipped:
        logging.warning("image_folder %s: skipped %d unreadable image file(s) of %d, e.g. %s", root,
                        len(all_skipped), total, [os.path.relpath(p, root) for p in all_skipped[:_MAX_NAMES_IN_WARNING]])
    channel_counts = np.concatenate([t.sizes[:, 2] for t in tables.values()])
    if channel_counts.size == 0:
        raise ValueError(f"image_folder {root}: no readable {'/'.join(IMAGE_EXTENSIONS)} images found")
    # Gray (1) and gray+alpha (2) stay single-channel only if no colour image is present.
    channels = 1 if np.all(channel_counts <= 2) else 3
    index = FolderIndex(root=root, class_names=class_names, channels=channels, tables=tables)
    _CACHE[key] = index
    return index


def to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """Converts a decoded uint8 [H, W, c] image (c in 1..4) to ``channels`` (1 or 3).

    Alpha is dropped (RGBA -> RGB, gray+alpha -> gray); gray -> RGB tiles the channel and
    RGB -> gray uses ``tf.image.rgb_to_grayscale``.
    """
    has_colour = tf.shape(image)[-1] >= 3
    if channels == 3:
        image = tf.cond(has_colour, lambda: image[..., :3], lambda: tf.tile(image[..., :1], [1, 1, 3]))
    else:
        image = tf.cond(has_colour, lambda: tf.image.rgb_to_grayscale(image[..., :3]), lambda: image[..., :1])
    return tf.ensure_shape(image, [None, None, channels])


def _image_shape(sizes: np.ndarray, channels: int) -> Tuple[Optional[int], Optional[int], int]:
    heights, widths = np.unique(sizes[:, 0]), np.unique(sizes[:, 1])
    if len(heights) == 1 and len(widths) == 1:
        return int(heights[0]), int(widths[0]), channels
    return None, None, channels


def load_split(split: str, data_dir: str, val_fraction: float = 0.1, seed: int = 0,
               name: str = "image_folder") -> splits_lib.DataSplit:
    """An image-folder split as a ``DataSplit`` (images at native size; resize is done by the caller).

    Args:
        split: split string, e.g. ``"train"``, ``"validation[:50%]"``.
        data_dir: dataset root folder.
        val_fraction: fraction of train carved out as validation when there is no validation folder.
        seed: seed of the carve.
        name: dataset name recorded in the result.

    Returns:
        The ``DataSplit``; ``image_shape`` has None height/width when image sizes differ.
    """
    spec = splits_lib.parse_split(split)
    splits_lib.check_val_fraction(val_fraction)
    index = index_folder(data_dir)
    sizes = {s: len(t.paths) for s, t in index.tables.items()}
    native, indices = splits_lib.select_indices(spec, sizes, val_fraction, seed)
    table = index.tables[native]
    paths = np.asarray(table.paths, dtype=object)[indices].astype(str)
    labels = table.labels[indices]
    channels = index.channels

    dataset = tf.data.Dataset.from_tensor_slices((paths, labels, np.arange(len(indices), dtype=np.int64)))
    dataset = dataset.map(lambda path, label, position: (_decode_native(path), label, position),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # The guard covers only reading and decoding (files changed since validation); the channel
    # conversion comes after it so that a bug there raises instead of silently emptying the split.
    dataset = dataset.ignore_errors().map(
        lambda image, label, position: (to_channels(image, channels), label, position),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    image_shape = _image_shape(table.sizes[indices], channels)
    return splits_lib.DataSplit(
        dataset=dataset, num_examples=len(indices),
        num_classes=len(index.class_names) if index.class_names else None,
        image_shape=image_shape, class_names=list(index.class_names) if index.class_names else None,
        name=name, split=split, num_skipped=len(table.skipped), skipped_files=table.skipped)
