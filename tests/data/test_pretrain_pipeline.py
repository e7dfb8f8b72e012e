"""pretrain_dataset: the batch dicts per method need (views, example index, batch seed), and the index is the
split's own."""
import numpy as np
import pytest
import tensorflow as tf

from tfssl.augment import CropGroup, SimCLRAugment, ViewRecipe, byol_views
from tfssl.data import load_split
from tfssl.data.pipeline import pretrain_dataset


@pytest.fixture(scope="module")
def split():
    return load_split("fashion_mnist", "train[:40]")


def _by_index(split):
    """{index: image} straight from the split, the independent reference."""
    return {int(i): x.numpy() for x, _, i in split.dataset}


def _numpy_batch_seed(seed, epoch, batch):
    """[seed * 1_000_003 + epoch, batch], written out here."""
    return [seed * 1_000_003 + epoch, batch]


def test_device_batches_carry_the_index_and_seed_of_each_batch(split):
    reference = _by_index(split)
    seen = []
    for b, batch in enumerate(pretrain_dataset(split, 8, epoch=1, seed=2, with_index=True)):
        assert set(batch) == {"images", "seed", "labels", "index"}
        images, labels, index, seeds = batch["images"], batch["labels"], batch["index"], batch["seed"]
        assert images.shape == (8, 28, 28, 1) and labels.shape == (8,) and index.shape == (8,)
        assert images.dtype == tf.uint8
        # One row per example, every row the batch's seed (so each replica's slice holds it too).
        assert seeds.shape == (8, 2) and seeds.dtype == tf.int64
        np.testing.assert_array_equal(seeds.numpy(), np.tile(_numpy_batch_seed(2, 1, b), (8, 1)))
        for image, i in zip(images.numpy(), index.numpy()):
            np.testing.assert_array_equal(image, reference[int(i)])
        seen.extend(index.numpy().tolist())
    assert sorted(seen) == sorted(reference)  # 40 images, batch 8: every index exactly once
    without_index = next(iter(pretrain_dataset(split, 8, epoch=1, seed=2)))
    assert set(without_index) == {"images", "seed", "labels"}


def _recipes():
    simclr = SimCLRAugment(16)
    return {
        "one view": (ViewRecipe([CropGroup(simclr, 1)]), [simclr]),
        "bare recipe": (simclr, [simclr, simclr]),  # a per-image recipe makes 2 views of it
        "view pair": (byol_views(16), list(byol_views(16).recipes)),
        "2 + 1 views of two sizes": (ViewRecipe([CropGroup(simclr, 2), CropGroup(SimCLRAugment(8))]),
                                     [simclr, simclr, SimCLRAugment(8)]),
    }


@pytest.mark.parametrize("with_index", [False, True])
def test_host_batches_carry_the_index_on_request(split, with_index):
    batch = next(iter(pretrain_dataset(split, 8, augment=SimCLRAugment(16), with_index=with_index)))
    assert set(batch) == ({"views", "labels", "index"} if with_index else {"views", "labels"})
    assert len(batch["views"]) == 2 and batch["labels"].shape == (8,)


@pytest.mark.parametrize("name", list(_recipes()))
def test_host_batches_have_the_requested_views(split, name):
    augment, per_view = _recipes()[name]
    reference = _by_index(split)
    batches = list(pretrain_dataset(split, 8, epoch=3, seed=1, augment=augment, with_index=True).take(2))
    for b, batch in enumerate(batches):
        assert set(batch) == {"views", "labels", "index"}
        views = batch["views"]
        assert isinstance(views, tuple) and len(views) == len(per_view)
        # The images of the batch, found by index (the independent reference), as float32 in [0, 1].
        images = np.stack([reference[int(i)] for i in batch["index"].numpy()]).astype(np.float32) / 255.0
        images = tf.constant(images)
        for v, (view, recipe) in enumerate(zip(views, per_view)):
            size = recipe.image_size
            assert view.shape == (8, size, size, 3) and view.dtype.name == "float32"
            # View v of batch b: the view's recipe with seed [seed * 1_000_003 + epoch, b * 256 + v].
            s0, s1 = _numpy_batch_seed(1, 3, b)
            want = recipe(images, tf.constant([s0, s1 * 256 + v], tf.int64)).numpy()
            np.testing.assert_allclose(view.numpy(), want, atol=1e-5, err_msg=f"batch {b} view {v}")
        same_size = [(i, j) for i in range(len(views)) for j in range(i + 1, len(views))
                     if views[i].shape == views[j].shape]
        for i, j in same_size:
            assert not np.allclose(views[i].numpy(), views[j].numpy()), (i, j)  # different draws
        assert batch["index"].dtype.name == "int64" and len(set(batch["index"].numpy().tolist())) == 8
    # The next batch draws new views of the first view's recipe.
    assert not np.allclose(batches[0]["views"][0].numpy(), batches[1]["views"][0].numpy())


def test_host_and_device_batches_hold_the_same_images_in_the_same_order(split):
    host = next(iter(pretrain_dataset(split, 8, epoch=2, seed=4, augment=SimCLRAugment(16), with_index=True)))
    device = next(iter(pretrain_dataset(split, 8, epoch=2, seed=4, with_index=True)))
    np.testing.assert_array_equal(host["index"].numpy(), device["index"].numpy())
    np.testing.assert_array_equal(host["labels"].numpy(), device["labels"].numpy())


def test_bad_view_recipes_are_a_clear_error(split):
    with pytest.raises(ValueError, match="view recipe"):
        pretrain_dataset(split, 8, augment="simclr")
    with pytest.raises(ValueError, match="count"):
        pretrain_dataset(split, 8, augment=ViewRecipe([CropGroup(SimCLRAugment(16), 0)]))
    with pytest.raises(ValueError, match="at most 256 views"):
        pretrain_dataset(split, 8, augment=ViewRecipe([CropGroup(SimCLRAugment(16), 257)]))
