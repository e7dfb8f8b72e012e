"""Fashion-MNIST from local IDX files (Debian's ``fashion-mnist`` package) or Keras.

Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017, arXiv:1708.07747): 60000 train and 10000 test
grayscale 28x28 images of 10 clothing classes, stored in the IDX format of LeCun's MNIST:
a 4-byte magic ``0x00 0x00 <dtype code> <ndim>``, ``ndim`` big-endian uint32 dimensions, then the
data in row-major order. The files are gzip-compressed.

Look-up order: ``data_dir`` (if given and complete), the Debian directory
``/usr/share/datasets/fashion-mnist``, then ``keras.datasets.fashion_mnist.load_data()`` (downloads).
Parsed arrays are cached per source in-process and returned read-only.
"""

import functools
import gzip
import os
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from tfssl.data import splits as splits_lib

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
IMAGE_SHAPE = (28, 28, 1)
NUM_EXAMPLES = {"train": 60000, "test": 10000}

# IDX type codes -> big-endian numpy dtypes (the format stores multi-byte values big-endian).
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

Arrays = Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]


def _read_bytes(path: str) -> bytes:
    """Reads a file, gunzipping it when it starts with the gzip magic."""
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, gzip.BadGzipFile) as e:
        raise ValueError(f"{path}: corrupt or truncated gzip stream ({e}); re-download the file") from e


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parses an (uncompressed) IDX byte string.

    Args:
        data: the IDX bytes.
        source: name used in error messages.

    Returns:
        Array of the stored dtype (native byte order) and shape ``dims``.

    Raises:
        ValueError: bad magic, unknown type code, or a size that does not match the header.
    """
    if len(data) < 4:
        raise ValueError(f"{source}: {len(data)} bytes is too short for an IDX header (need >= 4)")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(f"{source}: bad IDX magic {data[:4].hex()}: first two bytes must be 0x0000")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{source}: unknown IDX type code 0x{type_code:02x}: expected one of "
                         f"{[hex(c) for c in _IDX_DTYPES]}")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(f"{source}: truncated IDX header: {ndim} dims need {header_size} bytes, got {len(data)}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = header_size + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(f"{source}: IDX file {state}: header {dims} needs {expected} bytes, got {len(data)}")
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str, expected_magic: Optional[int] = None) -> np.ndarray:
    """Reads an IDX file, gzip-compressed or not.

    Args:
        path: file path.
        expected_magic: if given, the 4-byte big-endian magic the file must have, e.g. 0x00000803
            for uint8 3-D images or 0x00000801 for uint8 1-D labels.

    Returns:
        The parsed array.

    Raises:
        ValueError: on a corrupt, truncated or unexpected file.
    """
    data = _read_bytes(path)
    if expected_magic is not None and len(data) >= 4:
        magic = int.from_bytes(data[:4], "big")
        if magic != expected_magic:
            raise ValueError(f"{path}: IDX magic 0x{magic:08x}, expected 0x{expected_magic:08x}")
    return parse_idx(data, source=path)


def _find_file(directory: str, stem: str) -> Optional[str]:
    for candidate in (stem + ".gz", stem):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    return None


def _complete_dir(directory: Optional[str]) -> Optional[str]:
    """Returns ``directory`` (absolute) if it holds all four IDX files, else None."""
    if not directory or not os.path.isdir(directory):
        return None
    if all(_find_file(directory, stem) for stem in FILES.values()):
        return os.path.abspath(directory)
    return None


def _check_pair(images: np.ndarray, labels: np.ndarray, what: str) -> None:
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE[:2]:
        raise ValueError(f"fashion_mnist {what} images have shape {images.shape}, expected [N, 28, 28]")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"fashion_mnist {what}: {labels.shape[0]} labels for {images.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise ValueError(f"fashion_mnist {what} labels outside 0..{len(CLASS_NAMES) - 1}")


@functools.lru_cache(maxsize=4)
def _load_from_dir(directory: str) -> Arrays:
    arrays = {}
    for key, stem in FILES.items():
        magic = 0x00000803 if key.endswith("images") else 0x00000801
        arrays[key] = read_idx(_find_file(directory, stem), expected_magic=magic)
    return _finish(arrays)


@functools.lru_cache(maxsize=1)
def _load_from_keras() -> Arrays:
    import keras  # Imported lazily: only this fallback needs it.

    (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    return _finish({"train_images": x_train, "train_labels": y_train,
                    "test_images": x_test, "test_labels": y_test})


def _finish(arrays: dict) -> Arrays:
    out = []
    for split in ("train", "test"):
        images = np.asarray(arrays[f"{split}_images"], dtype=np.uint8)
        labels = np.asarray(arrays[f"{split}_labels"]).astype(np.int64)
        _check_pair(images, labels, split)
        # The arrays are shared through the cache: make accidental in-place edits fail loudly.
        images.setflags(write=False)
        labels.setflags(write=False)
        out.append((images, labels))
    return out[0], out[1]


def load_arrays(data_dir: Optional[str] = None) -> Arrays:
    """Loads Fashion-MNIST as numpy arrays (cached in-process).

    Args:
        data_dir: optional directory holding the four IDX files (``.gz`` or uncompressed).

    Returns:
        ``((x_train, y_train), (x_test, y_test))``: uint8 [N, 28, 28] images and int64 [N] labels,
        read-only.
    """
    for directory in (data_dir, DEBIAN_DIR):
        found = _complete_dir(directory)
        if found:
            return _load_from_dir(found)
        if directory == data_dir and data_dir:
            logging.warning("fashion_mnist: %s lacks some of %s; trying other sources", data_dir,
                            sorted(FILES.values()))
    logging.info("fashion_mnist: no local IDX files; downloading through keras.datasets")
    return _load_from_keras()


def load_split(split: str, data_dir: Optional[str] = None, val_fraction: float = 0.1,
               seed: int = 0, name: str = "fashion_mnist") -> splits_lib.DataSplit:
    """Fashion-MNIST split as a ``DataSplit`` (28x28x1 uint8).

    "validation" is carved from the 60000 train images (seeded, see ``splits.carve_validation``).

    Args:
        split: split string, e.g. ``"train"``, ``"validation"``, ``"test[:10%]"``.
        data_dir: optional directory with the IDX files.
        val_fraction: fraction of train used as validation.
        seed: seed of the carve.
        name: dataset name recorded in the result.

    Returns:
        The ``DataSplit``; elements ``(image uint8 [28, 28, 1], label int64, index int64)``.
    """
    spec = splits_lib.parse_split(split)
    splits_lib.check_val_fraction(val_fraction)
    (x_train, y_train), (x_test, y_test) = load_arrays(data_dir)
    native = {"train": (x_train, y_train), "test": (x_test, y_test)}
    sizes = {key: len(value[1]) for key, value in native.items()}
    native_name, indices = splits_lib.select_indices(spec, sizes, val_fraction, seed)
    images, labels = native[native_name]
    images = images[indices][..., np.newaxis]
    labels = labels[indices]
    dataset = tf.data.Dataset.from_tensor_slices(
        (images, labels, np.arange(len(indices), dtype=np.int64)))
    return splits_lib.DataSplit(
        dataset=dataset, num_examples=len(indices), num_classes=len(CLASS_NAMES),
        image_shape=IMAGE_SHAPE, class_names=list(CLASS_NAMES), name=name, split=split)
