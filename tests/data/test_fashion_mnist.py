"""IDX parsing and Fashion-MNIST splits, checked against an independent struct-based reader."""

import gzip
import os
import struct

import numpy as np
import pytest

from tfssl import data
from tfssl.data import fashion_mnist

DEBIAN = fashion_mnist.DEBIAN_DIR
needs_debian = pytest.mark.skipif(
    not all(os.path.isfile(os.path.join(DEBIAN, f + ".gz")) for f in fashion_mnist.FILES.values()),
    reason="Debian fashion-mnist package not installed")


def _write_idx(path, array, type_code=0x08, compress=True):
    """Hand-written IDX writer: magic, big-endian uint32 dims, big-endian data."""
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    with (gzip.open(path, "wb") if compress else open(path, "wb")) as f:
        f.write(payload)
    return payload


def _reference_read(path):
    """Independent reader (struct, no numpy header logic) for uint8 IDX gz files."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    zero, type_code, ndim = struct.unpack(">HBB", raw[:4])
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    assert zero == 0 and type_code == 0x08
    return np.frombuffer(raw[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)


def test_read_tiny_handwritten_idx(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 1], dtype=np.uint8)
    _write_idx(tmp_path / "img.gz", images)
    _write_idx(tmp_path / "lab", labels, compress=False)  # uncompressed files are accepted too
    out = fashion_mnist.read_idx(str(tmp_path / "img.gz"), expected_magic=0x803)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, images)
    np.testing.assert_array_equal(fashion_mnist.read_idx(str(tmp_path / "lab"), expected_magic=0x801), labels)


def test_read_multibyte_big_endian_idx(tmp_path):
    values = np.array([[1, -2, 300], [70000, 0, -1]], dtype=np.int32)
    _write_idx(tmp_path / "i32.gz", values, type_code=0x0C)
    out = fashion_mnist.read_idx(str(tmp_path / "i32.gz"))
    np.testing.assert_array_equal(out, values)
    assert out.dtype == np.int32


def test_idx_errors(tmp_path):
    images = np.zeros((3, 2, 2), dtype=np.uint8)
    payload = _write_idx(tmp_path / "ok.gz", images)
    cases = {
        "short.gz": (payload[:-1], "truncated"),
        "long.gz": (payload + b"\x00", "trailing"),
        "magic.gz": (b"\x01\x00" + payload[2:], "magic"),
        "code.gz": (payload[:2] + b"\x07" + payload[3:], "type code"),
        "header.gz": (payload[:6], "truncated IDX header"),
        "tiny.gz": (b"\x00", "too short"),
    }
    for name, (content, message) in cases.items():
        with gzip.open(tmp_path / name, "wb") as f:
            f.write(content)
        with pytest.raises(ValueError, match=message):
            fashion_mnist.read_idx(str(tmp_path / name))
    with pytest.raises(ValueError, match="expected 0x00000801"):
        fashion_mnist.read_idx(str(tmp_path / "ok.gz"), expected_magic=0x801)
    # A gzip stream cut in half (a partial download) is reported, not an EOFError.
    compressed = (tmp_path / "ok.gz").read_bytes()
    (tmp_path / "cut.gz").write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(ValueError, match="truncated gzip"):
        fashion_mnist.read_idx(str(tmp_path / "cut.gz"))


def test_data_dir_with_tiny_files_is_used(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (20, 28, 28)).astype(np.uint8),
        "train_labels": np.arange(20, dtype=np.uint8) % 10,
        "test_images": rng.integers(0, 256, (5, 28, 28)).astype(np.uint8),
        "test_labels": np.array([3, 1, 4, 1, 5], dtype=np.uint8),
    }
    for key, stem in fashion_mnist.FILES.items():
        _write_idx(tmp_path / (stem + ".gz"), arrays[key])
    split = data.load_split("fashion_mnist", "test", data_dir=str(tmp_path))
    images, labels, index = next(split.dataset.batch(100).as_numpy_iterator())
    np.testing.assert_array_equal(images[..., 0], arrays["test_images"])
    np.testing.assert_array_equal(labels, [3, 1, 4, 1, 5])
    np.testing.assert_array_equal(index, np.arange(5))
    assert split.num_examples == 5 and split.image_shape == (28, 28, 1)


def test_cached_arrays_are_read_only():
    (x_train, y_train), _ = fashion_mnist.load_arrays()
    assert fashion_mnist.load_arrays()[0][0] is x_train  # second call hits the cache
    with pytest.raises(ValueError):
        x_train[0, 0, 0] = 1


def _collect(split):
    images, labels, index = [], [], []
    for x, y, i in split.dataset.batch(20000).as_numpy_iterator():
        images.append(x)
        labels.append(y)
        index.append(i)
    return np.concatenate(images), np.concatenate(labels), np.concatenate(index)


def _rows(images, labels):
    return sorted(img.tobytes() + bytes([lab]) for img, lab in zip(images.reshape(len(images), -1), labels))


@needs_debian
def test_real_fashion_mnist_matches_reference_reader():
    ref_train = _reference_read(os.path.join(DEBIAN, "train-images-idx3-ubyte.gz"))
    ref_labels = _reference_read(os.path.join(DEBIAN, "train-labels-idx1-ubyte.gz"))
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_arrays()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64
    np.testing.assert_array_equal(x_train, ref_train)
    np.testing.assert_array_equal(y_train, ref_labels)
    np.testing.assert_array_equal(np.bincount(y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [1000] * 10)
    assert y_train[0] == 9 and y_test[0] == 9  # both splits start with an ankle boot


@needs_debian
def test_train_validation_carve():
    (x_train, y_train), _ = fashion_mnist.load_arrays()
    train = data.load_split("fashion_mnist", "train", val_fraction=0.1, seed=7)
    val = data.load_split("fashion_mnist", "validation", val_fraction=0.1, seed=7)
    assert (train.num_examples, val.num_examples) == (54000, 6000)
    assert train.num_classes == 10 and train.class_names[9] == "Ankle boot"
    tx, ty, ti = _collect(train)
    vx, vy, vi = _collect(val)
    assert len(tx) == 54000 and len(vx) == 6000
    np.testing.assert_array_equal(ti, np.arange(54000))
    np.testing.assert_array_equal(vi, np.arange(6000))
    # Together exactly the native train split as a multiset of (image, label) pairs; with sizes
    # 54000 + 6000 = 60000 this also means no native example is in both splits.
    assert _rows(np.concatenate([tx, vx]), np.concatenate([ty, vy])) == _rows(x_train, y_train)
    # Random, not a contiguous block: validation images come from all over the native split.
    first_position = {}
    for i, img in enumerate(x_train.reshape(60000, -1)):
        first_position.setdefault(img.tobytes(), i)
    val_positions = [first_position[img.tobytes()] for img in vx.reshape(6000, -1)]
    assert min(val_positions) < 1000 and max(val_positions) > 59000
    again = _collect(data.load_split("fashion_mnist", "validation", val_fraction=0.1, seed=7))
    np.testing.assert_array_equal(again[0], vx)
    other = _collect(data.load_split("fashion_mnist", "validation", val_fraction=0.1, seed=8))
    assert not np.array_equal(other[0], vx)


@needs_debian
def test_slices_and_resize():
    (x_train, _), (x_test, y_test) = fashion_mnist.load_arrays()
    head = data.load_split("fashion_mnist", "test[:10%]")
    x, y, i = _collect(head)
    assert head.num_examples == 1000 and len(x) == 1000
    np.testing.assert_array_equal(x[..., 0], x_test[:1000])
    np.testing.assert_array_equal(y, y_test[:1000])
    tail = _collect(data.load_split("fashion_mnist", "test[-10:]"))
    np.testing.assert_array_equal(tail[0][..., 0], x_test[-10:])
    np.testing.assert_array_equal(tail[2], np.arange(10))  # index is the position within the split
    full_train = _collect(data.load_split("fashion_mnist", "train", seed=1))[0]
    sliced = data.load_split("fashion_mnist", "train[:2000]", seed=1)
    assert sliced.num_examples == 2000
    np.testing.assert_array_equal(_collect(sliced)[0], full_train[:2000])
    assert data.load_split("fashion_mnist", "train[10%:20%]").num_examples == 5400
    big = data.load_split("fashion_mnist", "test[:4]", image_size=32)
    assert big.image_shape == (32, 32, 1)
    images = _collect(big)[0]
    assert images.shape == (4, 32, 32, 1) and images.dtype == np.uint8
    # Upsampling keeps the mean brightness up to rounding and interpolation at the borders.
    np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), x_test[:4].mean(axis=(1, 2)), atol=3.0)
