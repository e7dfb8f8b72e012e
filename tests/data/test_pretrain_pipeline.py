"""pretrain_dataset: element structure per method need (views, example index), and the index is the split's own."""
import numpy as np
import pytest

from tfssl.augment import SimCLRAugment
from tfssl.data import load_split
from tfssl.data.pipeline import pretrain_dataset


@pytest.fixture(scope="module")
def split():
    return load_split("fashion_mnist", "train[:40]")


def _by_index(split):
    """{index: image} straight from the split, the independent reference."""
    return {int(i): x.numpy() for x, _, i in split.dataset}


def test_device_batches_carry_the_index_of_each_image(split):
    reference = _by_index(split)
    seen = []
    for images, labels, index in pretrain_dataset(split, 8, epoch=1, with_index=True):
        assert images.shape == (8, 28, 28, 1) and labels.shape == (8,) and index.shape == (8,)
        for image, i in zip(images.numpy(), index.numpy()):
            np.testing.assert_array_equal(image, reference[int(i)])
        seen.extend(index.numpy().tolist())
    assert sorted(seen) == sorted(reference)  # 40 images, batch 8: every index exactly once


@pytest.mark.parametrize("num_views, with_index, width", [(2, False, 3), (1, True, 3), (2, True, 4), (1, False, 2)])
def test_host_batches_have_the_requested_views(split, num_views, with_index, width):
    augment = SimCLRAugment(16)
    element = next(iter(pretrain_dataset(split, 8, augment=augment, num_views=num_views, with_index=with_index)))
    assert len(element) == width
    for view in element[:num_views]:
        assert view.shape == (8, 16, 16, 3) and view.dtype.name == "float32"
    if num_views == 2:
        assert not np.allclose(element[0].numpy(), element[1].numpy())  # two different draws
    if with_index:
        assert element[-1].dtype.name == "int64" and len(set(element[-1].numpy().tolist())) == 8


def test_bad_view_count_is_a_clear_error(split):
    with pytest.raises(ValueError, match="num_views must be 1 or 2"):
        pretrain_dataset(split, 8, num_views=3)
