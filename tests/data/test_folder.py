"""Image folders: labels from class folders, corrupt files skipped and counted, channels, sizes."""

import logging
import os
import struct

import numpy as np
import pytest
import tensorflow as tf

from tfssl import data
from tfssl.data import folder

# A 1x1 white GIF89a, written out byte by byte (TensorFlow has no GIF encoder).
WHITE_GIF = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00"
             b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")


def _bmp_bytes(rgb):
    """Hand-written 24-bit BMP: BGR rows, bottom-up, padded to 4 bytes."""
    h, w, _ = rgb.shape
    pad = b"\0" * ((4 - (3 * w) % 4) % 4)
    pixels = b"".join(rgb[y, :, ::-1].tobytes() + pad for y in range(h - 1, -1, -1))
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels


def _write(path, array):
    """Writes uint8 [H, W, C] ``array`` in the format given by the file extension."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".png":
        content = tf.io.encode_png(array).numpy()
    elif ext in (".jpg", ".jpeg"):
        content = tf.io.encode_jpeg(array, quality=100).numpy()
    elif ext == ".bmp":
        content = _bmp_bytes(array)
    else:
        raise AssertionError(ext)
    with open(path, "wb") as f:
        f.write(content)
    return content


def _const(value, shape=(6, 5, 3)):
    return np.full(shape, value, dtype=np.uint8)


def _collect(split):
    out = list(split.dataset.as_numpy_iterator())
    return [o[0] for o in out], np.array([o[1] for o in out]), np.array([o[2] for o in out])


def _identify(images):
    """Constant test images carry their id as pixel value (JPEG may shift it by a little)."""
    values = []
    for image in images:
        assert image.max() - image.min() <= 2, "test images are constant"
        values.append(int(round(float(image.mean()) / 10.0)) * 10)
    return values


@pytest.fixture
def class_tree(tmp_path):
    root = str(tmp_path / "tree")
    _write(f"{root}/dog/d1.png", _const(10))
    _write(f"{root}/dog/d2.JPG", _const(20))
    _write(f"{root}/dog/nested/deeper/d3.jpeg", _const(30))
    _write(f"{root}/cat/c1.png", _const(40))
    _write(f"{root}/cat/c2.bmp", _const(50))
    _write(f"{root}/bird/b1.PNG", _const(60))
    png = _write(f"{root}/bird/b2.png", np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    with open(f"{root}/bird/b2.png", "wb") as f:  # truncated: a valid header, half the data
        f.write(png[: len(png) // 2])
    with open(f"{root}/cat/corrupt.jpg", "wb") as f:
        f.write(np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes())
    with open(f"{root}/cat/notes.txt", "w") as f:
        f.write("not an image")
    _write(f"{root}/.hidden/h.png", _const(70))
    os.makedirs(f"{root}/empty_class")
    return root


def test_class_folders_labels_and_skipped_files(class_tree, caplog):
    expected = {10: 2, 20: 2, 30: 2, 40: 1, 50: 1, 60: 0}  # pixel id -> label (bird, cat, dog sorted)
    with caplog.at_level(logging.WARNING):
        train = data.load_split("image_folder", "train", data_dir=class_tree, val_fraction=0.5, seed=0)
    val = data.load_split("image_folder", "validation", data_dir=class_tree, val_fraction=0.5, seed=0)
    assert train.class_names == ["bird", "cat", "dog"] and train.num_classes == 3
    assert (train.num_examples, val.num_examples) == (3, 3)
    assert train.num_skipped == 2 and val.num_skipped == 2
    assert sorted(os.path.basename(p) for p in train.skipped_files) == ["b2.png", "corrupt.jpg"]
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "skipped 2 unreadable" in warning and "corrupt.jpg" in warning and "b2.png" in warning
    tx, ty, ti = _collect(train)
    vx, vy, vi = _collect(val)
    np.testing.assert_array_equal(ti, [0, 1, 2])
    np.testing.assert_array_equal(vi, [0, 1, 2])
    got = dict(zip(_identify(tx + vx), np.concatenate([ty, vy]).tolist()))
    assert got == expected and len(tx + vx) == 6  # every good file exactly once, right label
    assert all(x.shape == (6, 5, 3) and x.dtype == np.uint8 for x in tx + vx)
    assert train.image_shape == (6, 5, 3)


def test_folder_carve_is_seeded(class_tree):
    def ids(split, seed):
        return _identify(_collect(data.load_split("image_folder", split, data_dir=class_tree,
                                                  val_fraction=0.5, seed=seed))[0])
    assert ids("validation", 3) == ids("validation", 3)
    carves = {tuple(ids("validation", seed)) for seed in range(6)}
    assert len(carves) > 1
    for seed in range(3):
        assert not set(ids("validation", seed)) & set(ids("train", seed))
    assert ids("train[:1]", 3) == ids("train", 3)[:1]


def test_folder_without_split_folders_has_no_test(class_tree):
    with pytest.raises(ValueError, match=r"choose one of \['train', 'validation'\]"):
        data.load_split("image_folder", "test", data_dir=class_tree)


def test_validation_is_cached(class_tree, monkeypatch):
    calls = []
    original = folder.probe_images

    def counting(paths):
        calls.append(len(paths))
        return original(paths)

    monkeypatch.setattr(folder, "probe_images", counting)
    data.load_split("image_folder", "train", data_dir=class_tree, val_fraction=0.5)
    data.load_split("image_folder", "validation", data_dir=class_tree, val_fraction=0.5)
    assert calls == [8]  # one decode pass over all 8 image files
    _write(os.path.join(class_tree, "dog", "d4.png"), _const(80))
    split = data.load_split("image_folder", "train", data_dir=class_tree, val_fraction=0.5)
    assert calls == [8, 9]  # a changed folder is validated again
    assert split.num_examples + data.load_split(
        "image_folder", "validation", data_dir=class_tree, val_fraction=0.5).num_examples == 7


def test_unlabelled_root_and_gif(tmp_path):
    root = str(tmp_path)
    for i in range(3):
        _write(f"{root}/img{i}.png", _const(10 * (i + 1), (4, 4, 3)))
    with open(f"{root}/white.gif", "wb") as f:
        f.write(WHITE_GIF)
    full = data.load_split("image_folder", "train[:100%]", data_dir=root, val_fraction=0.25)
    val = data.load_split("image_folder", "validation", data_dir=root, val_fraction=0.25)
    assert full.num_classes is None and full.class_names is None
    images, labels, _ = _collect(full)
    vimages, vlabels, _ = _collect(val)
    assert np.all(labels == -1) and np.all(vlabels == -1)
    assert len(images) + len(vimages) == 4
    gif = [x for x in images + vimages if x.shape[:2] == (1, 1)]
    assert len(gif) == 1 and gif[0].shape == (1, 1, 3) and np.all(gif[0] == 255)


def test_grayscale_folder_keeps_one_channel(tmp_path):
    rng = np.random.default_rng(2)
    gray = rng.integers(0, 256, (5, 7, 1), dtype=np.uint8)
    gray_alpha = rng.integers(0, 256, (5, 7, 2), dtype=np.uint8)
    _write(f"{tmp_path}/test/a/g.png", gray)
    _write(f"{tmp_path}/test/b/ga.png", gray_alpha)
    split = data.load_split("image_folder", "test", data_dir=str(tmp_path))
    assert split.image_shape == (5, 7, 1)
    images, labels, _ = _collect(split)
    np.testing.assert_array_equal(labels, [0, 1])
    np.testing.assert_array_equal(images[0], gray)
    np.testing.assert_array_equal(images[1], gray_alpha[..., :1])  # alpha dropped


def test_mixed_channels_become_rgb(tmp_path):
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (4, 4, 1), dtype=np.uint8)
    rgba = rng.integers(0, 256, (4, 4, 4), dtype=np.uint8)
    rgb = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    _write(f"{tmp_path}/a/gray.png", gray)
    _write(f"{tmp_path}/b/rgba.png", rgba)
    _write(f"{tmp_path}/c/rgb.bmp", rgb)
    split = data.load_split("image_folder", "train[:100%]", data_dir=str(tmp_path), val_fraction=0.3)
    val = data.load_split("image_folder", "validation", data_dir=str(tmp_path), val_fraction=0.3)
    assert split.image_shape == (4, 4, 3)
    by_label = {}
    for part in (split, val):
        images, labels, _ = _collect(part)
        by_label.update(zip(labels.tolist(), images))
    np.testing.assert_array_equal(by_label[0], np.repeat(gray, 3, axis=-1))
    np.testing.assert_array_equal(by_label[1], rgba[..., :3])
    np.testing.assert_array_equal(by_label[2], rgb)


def test_mixed_sizes_with_image_size(tmp_path, caplog):
    pattern = np.random.default_rng(4).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    _write(f"{tmp_path}/test/x/big.png", _const(100, (20, 12, 3)))
    _write(f"{tmp_path}/test/x/small.png", _const(200, (3, 5, 3)))
    _write(f"{tmp_path}/test/y/exact.png", pattern)
    with caplog.at_level(logging.WARNING):
        native = data.load_split("image_folder", "test", data_dir=str(tmp_path))
    assert native.image_shape == (None, None, 3)
    assert any("differ in size" in r.getMessage() for r in caplog.records)
    resized = data.load_split("image_folder", "test", data_dir=str(tmp_path), image_size=8)
    assert resized.image_shape == (8, 8, 3)
    batch = next(resized.dataset.batch(3).as_numpy_iterator())  # batching works once resized
    images, labels = batch[0], batch[1]
    assert images.shape == (3, 8, 8, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, [0, 0, 1])
    assert np.all(images[0] == 100) and np.all(images[1] == 200)  # constant images stay constant
    np.testing.assert_array_equal(images[2], pattern)  # already 8x8: untouched
    rect = data.load_split("image_folder", "test[:1]", data_dir=str(tmp_path), image_size=(6, 4))
    assert rect.image_shape == (6, 4, 3) and _collect(rect)[0][0].shape == (6, 4, 3)


def test_split_folders(tmp_path, caplog):
    root = str(tmp_path)
    _write(f"{root}/train/a/1.png", _const(10, (4, 4, 3)))
    _write(f"{root}/train/a/2.png", _const(20, (4, 4, 3)))
    _write(f"{root}/train/b/3.png", _const(30, (4, 4, 3)))
    _write(f"{root}/val/a/4.png", _const(40, (4, 4, 3)))
    _write(f"{root}/val/b/5.png", _const(50, (4, 4, 3)))
    _write(f"{root}/test/c/6.png", _const(60, (4, 4, 3)))
    _write(f"{root}/stray.png", _const(70, (4, 4, 3)))
    with caplog.at_level(logging.WARNING):
        train = data.load_split("image_folder", "train", data_dir=root)
    assert any("stray.png" in r.getMessage() for r in caplog.records)
    val = data.load_split("image_folder", "validation", data_dir=root)
    test = data.load_split("image_folder", "test", data_dir=root)
    assert train.class_names == ["a", "b", "c"]
    tx, ty, _ = _collect(train)
    vx, vy, _ = _collect(val)
    sx, sy, _ = _collect(test)
    assert (_identify(tx), ty.tolist()) == ([10, 20, 30], [0, 0, 1])  # native train, not carved
    assert (_identify(vx), vy.tolist()) == ([40, 50], [0, 1])
    assert (_identify(sx), sy.tolist()) == ([60], [2])


def test_val_and_validation_folders_conflict(tmp_path):
    _write(f"{tmp_path}/val/a/1.png", _const(1, (2, 2, 3)))
    _write(f"{tmp_path}/validation/a/1.png", _const(1, (2, 2, 3)))
    with pytest.raises(ValueError, match="keep only one"):
        data.load_split("image_folder", "validation", data_dir=str(tmp_path))


def test_folder_of_only_corrupt_files(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="no readable"):
        data.load_split("image_folder", "train", data_dir=str(tmp_path))


def test_bad_split_names_for_folders(class_tree):
    for split in ("training", "train[::2]", "valid"):
        with pytest.raises(ValueError) as info:
            data.load_split("image_folder", split, data_dir=class_tree)
        assert "train" in str(info.value)
