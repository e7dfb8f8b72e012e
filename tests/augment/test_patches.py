"""Patch grids (CPC v2): geometry, numpy slicing, per-patch parameters and seeds, host == device."""
import numpy as np
import pytest
import tensorflow as tf

from tfssl import rng
from tfssl.augment.patches import (
    NUM_DRAWS,
    PatchGridAugment,
    apply_patch_augment,
    draw_patch_uniforms,
    flatten_patches,
    image_seeds,
    patch_geometry,
    patch_grid,
    patch_params,
    unflatten_patches,
)
from tfssl.augment.recipes import CropGroup, batch_seed, view_seed

SEED = tf.constant([3, 5], tf.int64)


def _numpy_grid(images, patch, stride, grid):
    """Explicit slicing: out[b, i, j] = images[b, i*s : i*s+P, j*s : j*s+P]."""
    b, _, _, c = images.shape
    out = np.zeros((b, grid, grid, patch, patch, c), images.dtype)
    for i in range(grid):
        for j in range(grid):
            out[:, i, j] = images[:, i * stride: i * stride + patch, j * stride: j * stride + patch]
    return out


@pytest.mark.parametrize("size,grid,overlap,want", [
    (32, 7, 0.5, (8, 4)), (256, 7, 0.5, (64, 32)), (24, 7, 0.5, (6, 3)), (28, 7, 0.0, (4, 4)),
    (28, 4, 0.0, (7, 7)), (20, 3, 0.25, (8, 6)),
])
def test_patch_geometry_tiles_exactly(size, grid, overlap, want):
    patch, stride = patch_geometry(size, grid, overlap)
    assert (patch, stride) == want
    assert (grid - 1) * stride + patch == size
    assert stride == pytest.approx(patch * (1 - overlap))


def test_sizes_without_an_exact_grid_name_the_sizes_that_have_one():
    with pytest.raises(ValueError, match=r"28 px .* multiples of 8 \(e\.g\. 24 or 32\)"):
        patch_geometry(28, 7, 0.5)
    with pytest.raises(ValueError, match="e.g. 8\\)"):
        patch_geometry(5, 7, 0.5)
    for bad in (1.0, -0.1, "half"):
        with pytest.raises(ValueError, match="overlap"):
            patch_geometry(32, 7, bad)
    with pytest.raises(ValueError, match="static square side"):
        patch_grid(np.zeros((1, 32, 24, 3), np.float32))


@pytest.mark.parametrize("size,grid,overlap,channels,dtype", [
    (32, 7, 0.5, 3, np.float32), (24, 3, 0.5, 1, np.uint8), (28, 4, 0.0, 2, np.float32),
])
def test_patch_grid_equals_numpy_slicing(size, grid, overlap, channels, dtype):
    images = (np.random.default_rng(size).random((2, size, size, channels)) * 255).astype(dtype)
    patch, stride = patch_geometry(size, grid, overlap)
    out = patch_grid(images, grid, overlap)
    assert out.shape == (2, grid, grid, patch, patch, channels) and out.dtype == dtype
    np.testing.assert_array_equal(out.numpy(), _numpy_grid(images, patch, stride, grid))
    flat = flatten_patches(out)
    assert flat.shape == (2 * grid * grid, patch, patch, channels)
    np.testing.assert_array_equal(flat.numpy()[grid + 1], images[0, stride: stride + patch, stride: stride + patch])
    np.testing.assert_array_equal(unflatten_patches(flat, grid).numpy(), out.numpy())


def test_unflatten_pooled_features_to_a_grid():
    feats = np.arange(2 * 9 * 4, dtype=np.float32).reshape(18, 4)
    z = unflatten_patches(feats, 3).numpy()
    assert z.shape == (2, 3, 3, 4)
    np.testing.assert_array_equal(z[1, 2, 0], feats[9 + 6])


def test_image_seeds_are_fold_in_of_the_batch_seed_and_distinct():
    seeds = image_seeds(SEED, 5).numpy()
    for b in range(5):
        np.testing.assert_array_equal(seeds[b], rng.fold_in(SEED, b).numpy())
    assert len({tuple(s) for s in seeds}) == 5
    other = image_seeds(tf.constant([3, 6], tf.int64), 5).numpy()
    assert not {tuple(s) for s in seeds} & {tuple(s) for s in other}


def test_each_patch_reads_its_own_part_of_its_image_stream():
    seeds = image_seeds(SEED, 3)
    u = draw_patch_uniforms(seeds, 49).numpy()
    assert u.shape == (3, 49, NUM_DRAWS)
    for b in range(3):
        np.testing.assert_array_equal(u[b], rng.uniform([49, NUM_DRAWS], seeds[b]).numpy())
    # No two patches (of one image or of the batch) share a draw: all 3 * 49 rows, and all values, distinct.
    rows = u.reshape(-1, NUM_DRAWS)
    assert len({tuple(r) for r in rows}) == len(rows)
    assert len(np.unique(u)) == u.size
    # One image's draws do not depend on the batch it is drawn with.
    np.testing.assert_array_equal(draw_patch_uniforms(seeds[1:2], 49).numpy()[0], u[1])


def test_per_patch_parameters_differ_within_an_image():
    params = PatchGridAugment(32, grid=7, grayscale_prob=0.5).sample_params(image_seeds(SEED, 2))
    boxes = params["boxes"].numpy().reshape(2, 49, 4)
    for b in range(2):
        assert len({tuple(box) for box in boxes[b]}) == 49  # 49 different jitter offsets
        np.testing.assert_allclose(boxes[b, :, 2] - boxes[b, :, 0], 0.875, atol=1e-6)
        assert boxes[b].min() >= 0.0 and boxes[b].max() <= 1.0 + 1e-6
        for name in ("flip", "gray"):
            values = params[name].numpy().reshape(2, 49)[b]
            assert 0 < values.sum() < 49, name
        assert set(params["channel"].numpy().reshape(2, 49)[b]) == {0, 1, 2}
    assert params["drop"].numpy().all()  # color_drop_prob 1: every patch


def _numpy_augment(patches, params):
    """Reference of the per-patch ops after the jitter crop: flip, keep one channel, luma gray."""
    out = patches.copy()
    for n in range(len(out)):
        if params["flip"][n]:
            out[n] = out[n, :, ::-1]
        if params["drop"][n]:
            kept = out[n, ..., params["channel"][n]].copy()
            out[n] = 0.0
            out[n, ..., params["channel"][n]] = kept
        if params["gray"][n]:
            out[n] = (out[n] @ np.array([0.2989, 0.5870, 0.1140], np.float32))[..., None]
    return np.clip(out, 0.0, 1.0)


@pytest.mark.parametrize("jitter_crop", [1.0, 0.75])
def test_augmented_patches_match_a_per_patch_reference(jitter_crop):
    aug = PatchGridAugment(16, grid=3, jitter_crop=jitter_crop, color_drop_prob=0.5, grayscale_prob=0.3)
    images = np.random.default_rng(0).random((2, 16, 16, 3)).astype(np.float32)
    seeds = image_seeds(SEED, 2)
    out = aug.augment_batch(images, seeds).numpy()
    assert out.shape == (2, 3, 3, 8, 8, 3)
    params = {k: v.numpy() for k, v in aug.sample_params(seeds).items()}
    patches = _numpy_grid(images, 8, 4, 3).reshape(-1, 8, 8, 3)
    if jitter_crop < 1.0:  # each patch cropped alone by TF's op: the batched crop must equal it
        patches = np.concatenate([tf.image.crop_and_resize(p[None], params["boxes"][n:n + 1], [0], [8, 8]).numpy()
                                  for n, p in enumerate(patches)])
    np.testing.assert_allclose(out.reshape(-1, 8, 8, 3), _numpy_augment(patches, params), atol=1e-6)


def test_everything_off_gives_the_plain_grid_and_1_channel_is_tiled():
    aug = PatchGridAugment(24, grid=7, jitter_crop=1.0, flip=False, color_drop_prob=0.0)
    images = np.random.default_rng(1).random((2, 24, 24, 1)).astype(np.float32)
    out = aug(images, SEED).numpy()
    np.testing.assert_array_equal(out, np.repeat(_numpy_grid(images, 6, 3, 7), 3, axis=-1))


def test_same_seed_same_output_other_seed_other_output():
    aug = PatchGridAugment(32)
    images = np.random.default_rng(2).random((3, 28, 28, 1)).astype(np.float32)  # resized to 32
    a, b = aug(images, SEED).numpy(), aug(images, SEED).numpy()
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, 7, 7, 8, 8, 3)
    c = aug(images, SEED + 1).numpy()
    assert np.abs(a - c).max() > 0.1
    # Patches of one image differ from each other (own parameters), as do the same patch in two images
    # of identical content.
    same = np.repeat(images[:1], 2, axis=0)
    d = aug(same, SEED).numpy()
    assert np.abs(d[0] - d[1]).max() > 0.1


def test_host_per_image_in_tf_data_equals_device_batch():
    aug = PatchGridAugment(32)
    images = (np.random.default_rng(3).random((5, 32, 32, 3)) * 255).astype(np.uint8)
    seed = view_seed(batch_seed(7, 2, 11), 1)
    seeds = image_seeds(seed, 5)
    device = tf.function(aug.__call__)(images, seed).numpy()
    # Host: tf.data maps one image at a time with its own seed.
    ds = tf.data.Dataset.from_tensor_slices((images, seeds)).map(aug.augment_image)
    host = np.stack([x.numpy() for x in ds])
    np.testing.assert_array_equal(host, device)
    # Eagerly, one image.
    np.testing.assert_array_equal(aug.augment_image(images[3], seeds[3]).numpy(), device[3])


def test_xla_gives_the_eager_patches():
    aug = PatchGridAugment(16, grid=3, grayscale_prob=0.5)
    images = np.random.default_rng(4).random((3, 16, 16, 3)).astype(np.float32)
    eager = aug(images, SEED).numpy()
    compiled = tf.function(aug.__call__, jit_compile=True)(images, SEED).numpy()
    np.testing.assert_allclose(compiled, eager, atol=1e-5)


def test_replicas_draw_different_patches(two_replica_strategy):
    aug = PatchGridAugment(16, grid=3)
    images = np.repeat(np.random.default_rng(5).random((1, 16, 16, 3)).astype(np.float32), 2, axis=0)
    out = two_replica_strategy.run(tf.function(lambda: aug(tf.constant(images[:1]), SEED)))
    first, second = (t.numpy() for t in two_replica_strategy.experimental_local_results(out))
    assert np.abs(first - second).max() > 0.1


def test_config_round_trip_bad_arguments_and_crop_group():
    aug = PatchGridAugment(32, grid=7, overlap=0.5, jitter_crop=0.75, flip=False, color_drop_prob=0.3)
    clone = PatchGridAugment.from_config(aug.get_config())
    assert clone.get_config() == aug.get_config()
    assert (clone.patch_size, clone.stride, clone.num_patches) == (8, 4, 49)
    assert CropGroup(aug, 1).size == 32  # usable as a view recipe's group (image_size = the cut side)
    with pytest.raises(ValueError, match="multiples of 8"):
        PatchGridAugment(28)
    for kwargs, word in [({"jitter_crop": 0.0}, "jitter_crop"), ({"jitter_crop": 1.5}, "jitter_crop"),
                         ({"flip": 1}, "flip"), ({"color_drop_prob": 2}, "color_drop_prob"),
                         ({"grid": 0}, "grid")]:
        with pytest.raises(ValueError, match=word):
            PatchGridAugment(32, **kwargs)
    with pytest.raises(ValueError, match=r"\[B, 2\]"):
        aug.augment_batch(np.zeros((2, 32, 32, 3), np.float32), SEED)
    with pytest.raises(ValueError, match="one image"):
        aug.augment_image(np.zeros((1, 32, 32, 3), np.float32), SEED)


def test_patch_params_uses_fixed_columns():
    u = tf.constant([[0.9, 0.1, 0.99, 0.2, 0.5, 0.0]], tf.float32)
    params = patch_params(u, jitter_crop=0.5, flip=True, color_drop_prob=0.5, grayscale_prob=0.1)
    np.testing.assert_allclose(params["boxes"].numpy(), [[0.25, 0.0, 0.75, 0.5]])
    assert not params["flip"].numpy()[0] and params["drop"].numpy()[0] and not params["gray"].numpy()[0]
    assert params["channel"].numpy()[0] == 2
    out = apply_patch_augment(tf.ones([1, 4, 4, 3]), params, jitter=False).numpy()
    np.testing.assert_array_equal(out[..., :2], 0.0)
    np.testing.assert_array_equal(out[..., 2], 1.0)
