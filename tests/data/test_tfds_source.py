"""The TFDS path end to end, offline, on a tiny builder generated into tmp_path."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfssl import data
from tfssl.data import tfds_source


class TfsslTinyImages(tfds.core.GeneratorBasedBuilder):
    """20 train + 10 test constant 4x4 RGB images; pixel value = example id, label = id % 3."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(4, 4, 3)),
            "label": tfds.features.ClassLabel(names=["a", "b", "c"]),
        }))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 20), "test": self._generate_examples(100, 10)}

    def _generate_examples(self, start, count):
        for i in range(start, start + count):
            yield i, {"image": np.full((4, 4, 3), i, np.uint8), "label": i % 3}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    tfds.disable_progress_bar()
    tfds_source.builder_names.cache_clear()  # the registry now includes TfsslTinyImages
    return str(tmp_path_factory.mktemp("tfds"))


def _ids_labels_index(split):
    items = list(split.dataset.as_numpy_iterator())
    return ([int(x[0, 0, 0]) for x, _, _ in items], [int(y) for _, y, _ in items],
            [int(i) for _, _, i in items])


def test_tfds_carve_and_labels(tiny_dir):
    assert data.check_dataset_name("tfssl_tiny_images") == "tfds:tfssl_tiny_images"
    train = data.load_split("tfssl_tiny_images", "train", data_dir=tiny_dir, val_fraction=0.25)
    val = data.load_split("tfds:tfssl_tiny_images", "validation", data_dir=tiny_dir, val_fraction=0.25)
    assert (train.num_examples, val.num_examples) == (15, 5)
    assert train.class_names == ["a", "b", "c"] and train.num_classes == 3
    assert train.image_shape == (4, 4, 3) and train.name == "tfssl_tiny_images"
    t_ids, t_labels, t_index = _ids_labels_index(train)
    v_ids, v_labels, v_index = _ids_labels_index(val)
    assert sorted(t_ids + v_ids) == list(range(20))  # disjoint and complete
    assert t_labels == [i % 3 for i in t_ids] and v_labels == [i % 3 for i in v_ids]
    assert t_index == list(range(15)) and v_index == list(range(5))
    half = data.load_split("tfssl_tiny_images", "validation[:40%]", data_dir=tiny_dir, val_fraction=0.25)
    assert _ids_labels_index(half)[0] == v_ids[:2]


def test_tfds_test_slice_and_resize(tiny_dir):
    test = data.load_split("tfssl_tiny_images", "test[-3:]", data_dir=tiny_dir, image_size=8)
    assert test.num_examples == 3 and test.image_shape == (8, 8, 3)
    items = list(test.dataset.as_numpy_iterator())
    full = _ids_labels_index(data.load_split("tfssl_tiny_images", "test", data_dir=tiny_dir))[0]
    assert sorted(full) == list(range(100, 110))
    assert [int(x[0, 0, 0]) for x, _, _ in items] == full[-3:]
    assert all(x.shape == (8, 8, 3) and x.dtype == np.uint8 and np.all(x == x[0, 0, 0]) for x, _, _ in items)
