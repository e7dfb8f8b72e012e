"""View recipes: seed derivation (no two views of any two batches share a seed), multi-crop recipes of
several sizes, serialisation, conversion of pairs and bare recipes, and host = device augmentation."""
import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.augment import (
    CropGroup,
    SimCLRAugment,
    ViewPair,
    ViewRecipe,
    as_view_recipe,
    batch_seed,
    byol_views,
    deserialize_augment,
    serialize_augment,
    view_seed,
)

# ---- (a) seeds --------------------------------------------------------------------------------


def test_batch_and_view_seeds_follow_the_documented_formula():
    # batch_seed(seed, epoch, batch) = [seed * 1_000_003 + epoch, batch]; view_seed(s, v) = [s0, s1 * 256 + v].
    for seed, epoch, batch in ((0, 0, 0), (3, 2, 17), (7, 999, 123456)):
        got = batch_seed(seed, epoch, batch)
        assert got.dtype == tf.int64 and got.shape == (2,)
        np.testing.assert_array_equal(got.numpy(), [seed * 1_000_003 + epoch, batch])
        for view in (0, 1, 11, 255):
            np.testing.assert_array_equal(view_seed(got, view).numpy(),
                                          [seed * 1_000_003 + epoch, batch * 256 + view])
    # The batch index may be a tensor (tf.data's enumerate gives int64 scalars).
    np.testing.assert_array_equal(batch_seed(1, 2, tf.constant(5, tf.int64)).numpy(), [1_000_005, 5])


def test_no_two_views_of_any_two_batches_share_a_seed():
    seeds, epochs, batches, views = (0, 1, 2), 4, 200, 12
    all_pairs = []
    for seed, epoch in itertools.product(seeds, range(epochs)):
        # The library's own derivation for every view of one batch; run seed and epoch are Python constants
        # of the trace (batch_seed takes ints for them), the batch index a tensor as tf.data hands it.
        make = tf.function(lambda b, seed=seed, epoch=epoch: tf.stack(
            [view_seed(batch_seed(seed, epoch, b), v) for v in range(views)]))
        for batch in range(batches):
            all_pairs.append(make(tf.constant(batch, tf.int64)).numpy())
    pairs = np.concatenate(all_pairs)
    assert pairs.shape == (len(seeds) * epochs * batches * views, 2)
    assert len({tuple(p) for p in pairs.tolist()}) == len(pairs)
    # Positive control: the old derivation [epoch seed, batch * 2 + v] for 12 views collides.
    old = {(s * 1_000_003 + e, b * 2 + v) for s, e, b, v in
           itertools.product(seeds, range(epochs), range(batches), range(views))}
    assert len(old) < len(pairs)


# ---- (b) a multi-crop recipe --------------------------------------------------------------------

BATCH = 4


def _images(seed=0, size=24):
    rng = np.random.default_rng(seed)
    # Smooth images (blocks of 4 px plus noise), so crops and flips change them visibly.
    coarse = rng.uniform(0, 1, size=(BATCH, size // 4, size // 4, 3))
    images = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2) + rng.normal(0, 0.05, size=(BATCH, size, size, 3))
    return tf.constant(np.clip(images, 0, 1).astype(np.float32))


def _multi_crop():
    """2 global views of 16 px and 4 local views of 8 px, SwAV style."""
    return ViewRecipe([CropGroup(SimCLRAugment(16, crop_area=(0.4, 1.0)), 2),
                       CropGroup(SimCLRAugment(8, crop_area=(0.1, 0.4)), 4)])


def test_multi_crop_recipe_views_shapes_and_determinism():
    recipe = _multi_crop()
    assert recipe.num_views == 6 and recipe.sizes == [16, 16, 8, 8, 8, 8] and recipe.image_size == 16
    assert recipe.same_size_runs() == [(0, 2), (2, 6)]
    images, seed = _images(), batch_seed(3, 1, 7)
    views = recipe(images, seed)
    assert isinstance(views, tuple) and len(views) == 6
    for view, size in zip(views, recipe.sizes):
        assert view.shape == (BATCH, size, size, 3) and view.dtype == tf.float32
        assert float(tf.reduce_min(view)) >= 0.0 and float(tf.reduce_max(view)) <= 1.0
    # Views of the same size all differ from each other (a distinct seed each).
    for i, j in itertools.combinations(range(6), 2):
        if recipe.sizes[i] == recipe.sizes[j]:
            assert np.max(np.abs(views[i].numpy() - views[j].numpy())) > 1e-2, (i, j)
    # View v is its group's recipe with view_seed(seed, v), view indices counted across groups.
    for v, view in enumerate(views):
        want = recipe.recipe_of(v)(images, view_seed(seed, v))
        np.testing.assert_array_equal(view.numpy(), want.numpy(), err_msg=f"view {v}")
    assert recipe.recipe_of(1) is recipe.groups[0].recipe and recipe.recipe_of(2) is recipe.groups[1].recipe
    with pytest.raises(ValueError, match="out of range"):
        recipe.recipe_of(6)
    # The same images and seed give identical views again; another batch seed gives other views.
    again = recipe(images, seed)
    for a, b in zip(views, again):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    other = recipe(images, batch_seed(3, 1, 8))
    assert all(np.max(np.abs(a.numpy() - b.numpy())) > 1e-2 for a, b in zip(views, other))


def test_recipe_arguments_are_checked():
    with pytest.raises(ValueError, match="at least one"):
        ViewRecipe([])
    with pytest.raises(ValueError, match="count"):
        CropGroup(SimCLRAugment(8), 0)
    with pytest.raises(ValueError, match="count"):
        CropGroup(SimCLRAugment(8), True)
    with pytest.raises(ValueError, match="view recipe"):
        CropGroup(lambda images, seed: images)  # no image_size
    with pytest.raises(ValueError, match="at most 256"):
        ViewRecipe([CropGroup(SimCLRAugment(8), 257)])


# ---- (c) serialisation --------------------------------------------------------------------------


def test_config_round_trip_gives_identical_views():
    recipe = ViewRecipe([CropGroup(SimCLRAugment(16, color_jitter_strength=0.5, crop_area=(0.3, 1.0)), 2),
                         CropGroup(byol_views(8).view(1), 3)])
    serialized = serialize_augment(recipe)
    assert serialized["class_name"] == "ViewRecipe"
    restored = deserialize_augment(serialized)
    assert isinstance(restored, ViewRecipe) and restored is not recipe
    assert restored.get_config() == recipe.get_config()
    assert [g.count for g in restored.groups] == [2, 3]
    assert [type(g.recipe) for g in restored.groups] == [type(g.recipe) for g in recipe.groups]
    assert restored.groups[1].recipe.solarize_prob == 0.2
    # Also through JSON, as a .keras file or flags.json stores it.
    import json

    from_json = deserialize_augment(json.loads(json.dumps(serialized)))
    images, seed = _images(1), batch_seed(0, 2, 9)
    want = recipe(images, seed)
    for copy in (restored, from_json):
        got = copy(images, seed)
        assert len(got) == 5
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


# ---- (d) as_view_recipe ---------------------------------------------------------------------------


def test_as_view_recipe_of_a_pair_a_bare_recipe_none_and_a_recipe():
    pair = byol_views(16, color_jitter_strength=0.5)
    from_pair = as_view_recipe(pair)
    assert isinstance(from_pair, ViewRecipe) and from_pair.num_views == 2
    assert [g.count for g in from_pair.groups] == [1, 1]
    assert from_pair.groups[0].recipe is pair.view(0) and from_pair.groups[1].recipe is pair.view(1)
    images, seed = _images(2), batch_seed(1, 0, 3)
    for v, view in enumerate(from_pair(images, seed)):
        np.testing.assert_array_equal(view.numpy(), pair.view(v)(images, view_seed(seed, v)).numpy())

    bare = SimCLRAugment(8)
    for num_views in (1, 2, 5):
        recipe = as_view_recipe(bare, num_views)
        assert isinstance(recipe, ViewRecipe) and recipe.num_views == num_views
        assert len(recipe.groups) == 1 and recipe.groups[0].recipe is bare and recipe.groups[0].count == num_views
        views = recipe(images, seed)
        assert len(views) == num_views and all(v.shape == (BATCH, 8, 8, 3) for v in views)
    assert as_view_recipe(bare).num_views == 2  # the default: two views
    assert as_view_recipe(None) is None
    recipe = _multi_crop()
    assert as_view_recipe(recipe) is recipe and as_view_recipe(recipe, 3) is recipe
    assert isinstance(pair, ViewPair)  # (the input stays what it was)


# ---- (e) host augmentation = device augmentation ----------------------------------------------------

SIZE, NUM_CLASSES = 8, 10


def _simclr(augment):
    from tfssl.encoders import build_encoder
    from tfssl.heads import ProjectionHead
    from tfssl.methods import SimCLR

    keras.utils.set_random_seed(0)
    encoder = build_encoder("resnet18", SIZE, width_multiplier=0.125)
    projector = ProjectionHead(num_layers=2, output_dim=8, name="projector")
    model = SimCLR(encoder, projector=projector, temperature=0.5, augment=augment, num_classes=NUM_CLASSES)
    model.build_heads()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.9))
    return model


def test_host_and_device_augmentation_train_the_same_step():
    from tfssl.data import load_split
    from tfssl.data.pipeline import pretrain_dataset

    split = load_split("fashion_mnist", "train[:32]")
    recipe = as_view_recipe(SimCLRAugment(SIZE, color_jitter_strength=0.5, crop_area=(0.3, 1.0)))
    host_batches = iter(pretrain_dataset(split, 8, epoch=1, seed=5, augment=recipe))
    device_batches = iter(pretrain_dataset(split, 8, epoch=1, seed=5, augment=None))
    host_batch, device_batch = next(host_batches), next(device_batches)
    assert set(host_batch) == {"views", "labels"} and set(device_batch) == {"images", "seed", "labels"}
    np.testing.assert_array_equal(host_batch["labels"].numpy(), device_batch["labels"].numpy())

    host = _simclr(augment=None)
    device = _simclr(augment=recipe)
    device.set_weights(host.get_weights())
    initial = host.get_weights()
    # The device path makes exactly the host's views from the batch's seed row.
    for a, b in zip(host_batch["views"], device.views(device_batch)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-6)

    host_logs = host.train_step(host_batch)
    device_logs = device.train_step(device_batch)
    for name in ("loss", "contrast_acc", "contrast_entropy", "probe_loss"):
        np.testing.assert_allclose(float(device_logs[name]), float(host_logs[name]), rtol=1e-6, atol=1e-6,
                                   err_msg=name)
    moved = 0
    for variable, w0, a, b in zip(host.weights, initial, host.get_weights(), device.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6, err_msg=variable.path)
        moved += np.max(np.abs(a - w0)) > 1e-4
    assert moved > len(initial) // 2, moved  # the step did something

    # Positive control: the next batch's seed (other views of the same images) gives another loss.
    control = _simclr(augment=recipe)
    control.set_weights(initial)
    shifted = dict(device_batch, seed=device_batch["seed"] + tf.constant([0, 1], tf.int64))
    control_logs = control.train_step(shifted)
    assert abs(float(control_logs["loss"]) - float(host_logs["loss"])) > 1e-3
