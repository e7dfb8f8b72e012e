"""SimCLRAugment: contract, configuration, edge cases, host (tf.data) vs device (MirroredStrategy)."""
import numpy as np
import pytest
import tensorflow as tf

from tfssl.augment import SimCLRAugment


def _is_gray(views):
    return np.all(np.isclose(views[..., 0], views[..., 1]) & np.isclose(views[..., 1], views[..., 2]), axis=(1, 2))


def test_one_channel_and_uint8_inputs(rng):
    aug = SimCLRAugment(12)
    gray = rng.uniform(size=(4, 16, 16, 1)).astype(np.float32)
    y = aug(tf.constant(gray), tf.constant([0, 1], tf.int32))
    assert y.shape == (4, 12, 12, 3) and y.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(y)) and float(tf.reduce_max(y)) <= 1.0
    # Colour ops on a tiled gray image (brightness, contrast, saturation, hue) keep it gray.
    assert _is_gray(y.numpy()).all()
    y8 = aug(tf.constant((gray * 255).astype(np.uint8)), tf.constant([0, 1]))
    np.testing.assert_allclose(y8.numpy(), y.numpy(), atol=0.01)


def test_get_config_round_trip_and_blur_auto():
    aug = SimCLRAugment(64, color_jitter_strength=0.5, crop_area=(0.2, 1.0), blur_prob=0.1)
    config = aug.get_config()
    assert config == {
        "image_size": 64,
        "color_jitter_strength": 0.5,
        "blur": None,
        "crop_area": (0.2, 1.0),
        "crop_aspect": pytest.approx((3 / 4, 4 / 3)),
        "flip": True,
        "jitter_prob": 0.8,
        "grayscale_prob": 0.2,
        "blur_prob": 0.1,
    }
    assert SimCLRAugment.from_config(config).get_config() == config
    assert aug.blur_enabled and not SimCLRAugment(32).blur_enabled
    assert SimCLRAugment(32, blur=True).blur_enabled and not SimCLRAugment(96, blur=False).blur_enabled


def test_all_stages_off_is_identity(rng):
    x = rng.uniform(size=(3, 10, 10, 3)).astype(np.float32)
    aug = SimCLRAugment(
        10, color_jitter_strength=0.0, blur=False, crop_area=(1, 1), crop_aspect=(1, 1), flip=False, grayscale_prob=0.0
    )
    np.testing.assert_allclose(aug(tf.constant(x), tf.constant([5, 5])).numpy(), x, atol=1e-6)


def test_probability_one_edges(rng):
    x = tf.constant(rng.uniform(size=(8, 40, 40, 3)).astype(np.float32))
    views = SimCLRAugment(40, grayscale_prob=1.0, jitter_prob=1.0, blur=True, blur_prob=1.0)(x, tf.constant([1, 2]))
    assert _is_gray(views.numpy()).all()
    # jitter 0 / grayscale 0 / blur 0: crops and flips only, colours stay (not all gray).
    plain = SimCLRAugment(40, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)(x, tf.constant([1, 2]))
    assert not _is_gray(plain.numpy()).any()


def test_stage_draws_do_not_depend_on_other_stages(rng):
    # Switching jitter off must not change which crop each image gets (fixed per-stage salts).
    x = tf.constant(rng.uniform(size=(4, 12, 12, 3)).astype(np.float32))
    base = dict(blur=False, flip=False, grayscale_prob=0.0)
    crop_only = SimCLRAugment(8, color_jitter_strength=0.0, **base)(x, tf.constant([9, 9]))
    crop_only_2 = SimCLRAugment(8, color_jitter_strength=0.0, jitter_prob=0.0, **base)(x, tf.constant([9, 9]))
    np.testing.assert_allclose(crop_only.numpy(), crop_only_2.numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"image_size": 0},
        {"image_size": -4},
        {"image_size": 2.5},
        {"color_jitter_strength": -0.1},
        {"crop_area": (0.0, 1.0)},
        {"crop_area": (0.08, 1.5)},
        {"crop_area": (0.9, 0.5)},
        {"crop_aspect": (-1.0, 2.0)},
        {"jitter_prob": 1.2},
        {"grayscale_prob": -0.2},
        {"blur_prob": 2.0},
        {"blur": "yes"},
    ],
)
def test_invalid_arguments_raise_one_line_value_error(kwargs):
    args = {"image_size": 32, **kwargs}
    with pytest.raises(ValueError) as err:
        SimCLRAugment(**args)
    assert "\n" not in str(err.value) and len(str(err.value)) < 200


def test_bad_seed_shape_raises():
    with pytest.raises(ValueError, match="seed"):
        SimCLRAugment(8)(tf.zeros([1, 8, 8, 3]), tf.constant([1, 2, 3]))


def _summary(views):
    """Statistics of a set of views: pixel mean/std, per-channel mean, gray fraction."""
    return {
        "mean": views.mean(),
        "std": views.std(),
        "channel_means": views.mean(axis=(0, 1, 2)),
        "image_mean_std": views.mean(axis=(1, 2, 3)).std(),
        "gray": _is_gray(views).mean(),
    }


@pytest.mark.slow  # statistical; host and device now give identical views (tests/augment/test_view_recipes.py)
def test_host_and_device_paths_agree_in_distribution(rng, two_replica_strategy):
    strategy = two_replica_strategy
    aug = SimCLRAugment(40, blur=True)  # 40 px: blur kernel 5 is exercised
    pool = rng.uniform(size=(32, 40, 40, 3)).astype(np.float32)
    pool[..., 0] *= 0.6  # a colour cast that jitter/grayscale visibly change
    rounds, batch = 8, 16

    # Host: tf.data map on batches, a new seed per batch from the batch counter.
    ds = tf.data.Dataset.from_tensor_slices(pool).repeat(rounds).batch(batch).enumerate()
    host = np.concatenate([v.numpy() for v in ds.map(lambda i, x: aug(x, tf.stack([i, tf.constant(0, tf.int64)])))])

    # Device: inside a tf.function under MirroredStrategy.run (8 images per replica, unknown batch).
    global_batches = tf.data.Dataset.from_tensor_slices(pool).repeat(rounds).batch(batch)
    dist = strategy.experimental_distribute_dataset(global_batches)

    @tf.function
    def step(x, seed):
        return strategy.run(aug, args=(x, seed))

    device = []
    for i, x in enumerate(dist):
        out = step(x, tf.constant([i, 1], tf.int64))
        device.extend(t.numpy() for t in strategy.experimental_local_results(out))
    device = np.concatenate(device)

    assert host.shape == device.shape == (rounds * 32, 40, 40, 3)
    assert device.min() >= 0.0 and device.max() <= 1.0
    h, d = _summary(host), _summary(device)
    assert abs(h["mean"] - d["mean"]) < 0.02
    assert abs(h["std"] - d["std"]) < 0.02
    np.testing.assert_allclose(h["channel_means"], d["channel_means"], atol=0.03)
    assert abs(h["image_mean_std"] - d["image_mean_std"]) < 0.03
    # Grayscale p=0.2 on both paths (256 images each: standard error 0.025).
    assert abs(h["gray"] - 0.2) < 0.1 and abs(d["gray"] - 0.2) < 0.1
    # The augmentation did something: far from the un-augmented pool statistics.
    assert abs(h["channel_means"][0] - pool[..., 0].mean()) > 0.02 or abs(h["std"] - pool.std()) > 0.02


def test_replicas_with_the_same_seed_draw_different_parameters(rng, two_replica_strategy):
    strategy = two_replica_strategy
    aug = SimCLRAugment(8)
    same = np.repeat(rng.uniform(size=(1, 8, 8, 3)).astype(np.float32), 4, axis=0)
    values = strategy.experimental_distribute_values_from_function(lambda ctx: tf.constant(same))

    @tf.function
    def step(x):
        return strategy.run(aug, args=(x, tf.constant([3, 3])))

    first, second = (t.numpy() for t in strategy.experimental_local_results(step(values)))
    assert not np.allclose(first, second, atol=1e-4)
