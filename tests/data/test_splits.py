"""Split grammar, slicing, carving, TFDS split translation and dataset-name checks."""

import numpy as np
import pytest

from tfssl import data
from tfssl.data import splits, tfds_source


@pytest.mark.parametrize("text, base, start, stop", [
    ("train", "train", None, None),
    ("test[:10%]", "test", None, (10, True)),
    ("validation[-500:]", "validation", (-500, False), None),
    ("train[100:2000]", "train", (100, False), (2000, False)),
    ("train[ 5% : -5% ]", "train", (5, True), (-5, True)),
    ("train[:]", "train", None, None),
])
def test_parse_split(text, base, start, stop):
    spec = splits.parse_split(text)
    assert (spec.base, spec.start, spec.stop) == (base, start, stop)


@pytest.mark.parametrize("text", [
    "tran", "val", "Train", "train[1:2", "train[a:b]", "train[1.5:]", "train[:150%]", "train[1:2:3]",
    "train[]", "", "train[:10%]x",
])
def test_parse_split_rejects_bad_strings(text):
    with pytest.raises(ValueError) as info:
        splits.parse_split(text)
    assert "\n" not in str(info.value)


def test_unknown_split_error_lists_choices():
    with pytest.raises(ValueError, match=r"\['train', 'validation', 'test'\]"):
        splits.parse_split("dev")


@pytest.mark.parametrize("text, n, expected", [
    ("train", 100, (0, 100)),
    ("train[:20]", 100, (0, 20)),
    ("train[-20:]", 100, (80, 100)),
    ("train[10%:20%]", 54000, (5400, 10800)),
    ("train[:10%]", 15, (0, 2)),          # 1.5 rounds half up
    ("train[:-10%]", 100, (0, 90)),
    ("train[:5000]", 100, (0, 100)),      # out-of-range ints clip, as in Python
    ("train[-5000:3]", 100, (0, 3)),
])
def test_resolve_slice_matches_python_slicing(text, n, expected):
    assert splits.resolve_slice(splits.parse_split(text), n) == expected


@pytest.mark.parametrize("text", ["train[50:10]", "train[100:]", "train[:0%]", "train[-0:0]"])
def test_empty_slice_is_an_error(text):
    with pytest.raises(ValueError, match="selects no example"):
        splits.resolve_slice(splits.parse_split(text), 100)


def test_carve_is_a_disjoint_seeded_partition():
    train, val = splits.carve_validation(1000, 0.1, seed=3)
    assert len(val) == 100 and len(train) == 900
    assert not set(train) & set(val)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(1000))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    again_train, again_val = splits.carve_validation(1000, 0.1, seed=3)
    np.testing.assert_array_equal(val, again_val)
    np.testing.assert_array_equal(train, again_train)
    other_val = splits.carve_validation(1000, 0.1, seed=4)[1]
    assert set(other_val) != set(val)
    # Not simply the first or last block: the carve is a random subset.
    assert val.min() < 500 < val.max()


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, "0.1", None])
def test_bad_val_fraction(fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        splits.carve_validation(100, fraction, seed=0)


def test_carve_too_small():
    with pytest.raises(ValueError, match="cannot carve"):
        splits.carve_validation(1, 0.5, seed=0)


def test_select_indices_without_native_validation():
    sizes = {"train": 200, "test": 50}
    native, train = splits.select_indices(splits.parse_split("train"), sizes, 0.25, 0)
    assert native == "train" and len(train) == 150
    native, val = splits.select_indices(splits.parse_split("validation"), sizes, 0.25, 0)
    assert native == "train" and len(val) == 50
    assert not set(train) & set(val)
    native, sliced = splits.select_indices(splits.parse_split("train[:10%]"), sizes, 0.25, 0)
    np.testing.assert_array_equal(sliced, train[:15])
    native, test = splits.select_indices(splits.parse_split("test[-5:]"), sizes, 0.25, 0)
    assert native == "test"
    np.testing.assert_array_equal(test, np.arange(45, 50))


def test_select_indices_with_native_validation_does_not_carve():
    sizes = {"train": 30, "validation": 7}
    assert len(splits.select_indices(splits.parse_split("train"), sizes, 0.5, 0)[1]) == 30
    native, val = splits.select_indices(splits.parse_split("validation"), sizes, 0.5, 0)
    assert native == "validation"
    np.testing.assert_array_equal(val, np.arange(7))
    with pytest.raises(ValueError, match=r"choose one of \['train', 'validation'\]"):
        splits.select_indices(splits.parse_split("test"), sizes, 0.5, 0)


@pytest.mark.parametrize("text, expected", [
    ("train", ("train[0:54000]", 54000)),
    ("validation", ("train[54000:60000]", 6000)),
    ("validation[:50%]", ("train[54000:57000]", 3000)),
    ("validation[-10:]", ("train[59990:60000]", 10)),
    ("train[:10%]", ("train[0:5400]", 5400)),
    ("test", ("test", 10000)),
    ("test[:10%]", ("test[0:1000]", 1000)),
])
def test_tfds_split_translation_carves_the_end_of_train(text, expected):
    sizes = {"train": 60000, "test": 10000}
    assert tfds_source.tfds_split(splits.parse_split(text), sizes, 0.1) == expected


def test_tfds_split_translation_native_validation_and_missing_test():
    sizes = {"train": 100, "validation": 10}
    spec = splits.parse_split
    assert tfds_source.tfds_split(spec("train"), sizes, 0.1) == ("train", 100)
    assert tfds_source.tfds_split(spec("validation[2:4]"), sizes, 0.1) == ("validation[2:4]", 2)
    with pytest.raises(ValueError, match="not available"):
        tfds_source.tfds_split(spec("test"), sizes, 0.1)


@pytest.mark.parametrize("name, canonical", [
    ("fashion_mnist", "fashion_mnist"),
    ("image_folder", "image_folder"),
    ("cifar10", "tfds:cifar10"),
    ("tfds:cifar10", "tfds:cifar10"),
    ("tfds:fashion_mnist", "tfds:fashion_mnist"),
    ("imagenet2012_subset/10pct", "tfds:imagenet2012_subset/10pct"),
    ("mnist:3.0.1", "tfds:mnist:3.0.1"),
])
def test_check_dataset_name_accepts(name, canonical):
    assert data.check_dataset_name(name) == canonical


@pytest.mark.parametrize("name", ["fashion-mnist", "tfds:", "not_a_dataset_xyz", "", None, "tfds:nope"])
def test_check_dataset_name_rejects_with_choices(name):
    with pytest.raises(ValueError) as info:
        data.check_dataset_name(name)
    message = str(info.value)
    assert "fashion_mnist" in message and "image_folder" in message and "TFDS builder" in message
    assert "\n" not in message


def test_tfds_registry_is_available_offline():
    names = tfds_source.builder_names()
    assert {"mnist", "cifar10", "fashion_mnist", "imagenet2012"} <= set(names)


def test_load_split_validates_arguments_before_loading(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load_split("nope_dataset", "train")
    with pytest.raises(ValueError, match="unknown split"):
        data.load_split("cifar10", "training")  # fails before any TFDS download
    with pytest.raises(ValueError, match="needs data_dir"):
        data.load_split("image_folder", "train")
    with pytest.raises(ValueError, match="image_size"):
        data.load_split("fashion_mnist", "test", image_size=0)
    with pytest.raises(ValueError, match="image_size"):
        data.load_split("fashion_mnist", "test", image_size=(8, 8, 3))
    with pytest.raises(ValueError, match="val_fraction"):
        data.load_split("fashion_mnist", "validation", val_fraction=1.0)
    with pytest.raises(ValueError, match="existing folder"):
        data.load_split("image_folder", "train", data_dir=str(tmp_path / "missing"))
