"""Colour ops against closed forms, numpy and tf.image's single-parameter implementations."""
import itertools

import numpy as np
import pytest
import tensorflow as tf

from tfssl.augment import ops

LUMA = np.array([0.2989, 0.587, 0.114], np.float32)  # ITU-R 601, as tf.image.rgb_to_grayscale


def _mid_images(rng, n=4, size=6):
    """Values in [0.3, 0.7] so moderate adjustments never clip."""
    return rng.uniform(0.3, 0.7, size=(n, size, size, 3)).astype(np.float32)


def test_adjust_brightness_adds_per_image_delta(rng):
    x = _mid_images(rng)
    delta = np.array([-0.2, 0.0, 0.1, 0.25], np.float32)
    y = ops.adjust_brightness(tf.constant(x), tf.constant(delta)).numpy()
    np.testing.assert_allclose(y, x + delta[:, None, None, None], atol=1e-6)


def test_random_brightness_shifts_each_image_by_its_own_delta(rng):
    x = _mid_images(rng, n=32)
    y = ops.random_brightness(tf.constant(x), tf.constant([1, 5]), 0.25).numpy()
    shift = (y - x).reshape(32, -1)
    # One constant shift per image, within [-max_delta, max_delta], different between images.
    np.testing.assert_allclose(shift, shift[:, :1] * np.ones_like(shift), atol=1e-6)
    assert np.abs(shift[:, 0]).max() <= 0.25 + 1e-6
    assert len(np.unique(np.round(shift[:, 0], 5))) == 32


def test_adjust_contrast_matches_numpy(rng):
    x = _mid_images(rng)
    factor = np.array([0.0, 0.5, 1.0, 1.7], np.float32)
    mean = x.mean(axis=(1, 2), keepdims=True)
    expected = mean + factor[:, None, None, None] * (x - mean)
    np.testing.assert_allclose(ops.adjust_contrast(tf.constant(x), tf.constant(factor)).numpy(), expected, atol=1e-6)
    # Same as tf.image.adjust_contrast with a scalar factor, image by image.
    for i in range(4):
        ref = tf.image.adjust_contrast(tf.constant(x[i]), float(factor[i])).numpy()
        np.testing.assert_allclose(expected[i], ref, atol=1e-5)


def test_saturation_zero_gives_luma_gray_and_one_is_identity(rng):
    x = _mid_images(rng, n=2)
    gray = (x * LUMA).sum(axis=-1, keepdims=True)
    y = ops.adjust_saturation(tf.constant(x), tf.constant([0.0, 1.0])).numpy()
    np.testing.assert_allclose(y[0], np.repeat(gray[0], 3, axis=-1), atol=1e-6)
    np.testing.assert_allclose(y[1], x[1], atol=1e-6)
    y2 = ops.adjust_saturation(tf.constant(x), tf.constant([2.0, 0.5])).numpy()
    np.testing.assert_allclose(y2, gray + np.array([2.0, 0.5])[:, None, None, None] * (x - gray), atol=1e-6)


def test_to_grayscale_uses_itu_601_weights(rng):
    x = rng.uniform(size=(3, 5, 5, 3)).astype(np.float32)
    y = ops.to_grayscale(tf.constant(x)).numpy()
    gray = (x * LUMA).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(y, np.repeat(gray, 3, axis=-1), atol=1e-6)
    np.testing.assert_allclose(y[..., :1], tf.image.rgb_to_grayscale(x).numpy(), atol=1e-6)


def test_adjust_hue_matches_tf_image_per_image(rng):
    x = rng.uniform(size=(5, 6, 6, 3)).astype(np.float32)
    delta = np.array([-0.5, -0.13, 0.0, 0.21, 0.5], np.float32)
    y = ops.adjust_hue(tf.constant(x), tf.constant(delta)).numpy()
    for i in range(5):
        np.testing.assert_allclose(y[i], tf.image.adjust_hue(x[i], float(delta[i])).numpy(), atol=1e-5)
    # Hue is cyclic: a full turn changes nothing.
    np.testing.assert_allclose(ops.adjust_hue(tf.constant(x), tf.ones([5])).numpy(), x, atol=1e-5)


def test_jitter_ranges_follow_simclr():
    r = ops.jitter_ranges(0.5)
    assert r["brightness"] == pytest.approx((-0.4, 0.4))
    assert r["contrast"] == pytest.approx((0.6, 1.4))
    assert r["saturation"] == pytest.approx((0.6, 1.4))
    assert r["hue"] == pytest.approx((-0.1, 0.1))
    assert ops.jitter_ranges(2.0)["contrast"] == pytest.approx((0.0, 2.6))  # factors never negative


def test_jitter_params_per_image_ranges_orders_and_rate():
    n = 4800
    p = {k: v.numpy() for k, v in ops.sample_jitter_params(tf.constant([3, 3]), n, 1.0, 0.8).items()}
    for name, (lo, hi) in ops.jitter_ranges(1.0).items():
        assert p[name].shape == (n,)
        assert p[name].min() >= lo and p[name].max() <= hi
        assert abs(p[name].mean() - (lo + hi) / 2) < 0.03 * (hi - lo)
    assert abs(p["apply"].mean() - 0.8) < 0.03
    # Orders are permutations, all 24 occur about equally often (expected 200 each).
    assert np.all(np.sort(p["order"], axis=1) == np.arange(4))
    counts = {perm: 0 for perm in itertools.permutations(range(4))}
    for row in p["order"]:
        counts[tuple(row)] += 1
    assert min(counts.values()) > 140 and max(counts.values()) < 260


def _numpy_jitter(image, brightness, contrast, saturation, hue, order):
    """Sequential reference for one image; hue via tf.image.adjust_hue (scalar, independent code)."""
    x = image
    for op in order:
        if op == 0:
            x = x + brightness
        elif op == 1:
            m = x.mean(axis=(0, 1), keepdims=True)
            x = m + contrast * (x - m)
        elif op == 2:
            g = (x * LUMA).sum(axis=-1, keepdims=True)
            x = g + saturation * (x - g)
        else:
            x = tf.image.adjust_hue(x, hue).numpy()
        x = np.clip(x, 0.0, 1.0)
    return x


def test_apply_color_jitter_follows_each_images_own_order(rng):
    # 24 copies of one image, each with all 24 op orders and strong, clipping parameters:
    # the outputs must match the sequential numpy reference image by image.
    perms = np.array(list(itertools.permutations(range(4))), np.int32)
    n = len(perms)
    x = np.repeat(rng.uniform(size=(1, 5, 5, 3)).astype(np.float32), n, axis=0)
    params = {
        "brightness": np.full(n, 0.3, np.float32),
        "contrast": np.full(n, 1.8, np.float32),
        "saturation": np.full(n, 0.3, np.float32),
        "hue": np.full(n, 0.2, np.float32),
        "order": perms,
        "apply": np.ones(n, bool),
    }
    y = ops.apply_color_jitter(tf.constant(x), {k: tf.constant(v) for k, v in params.items()}).numpy()
    for i in range(n):
        expected = _numpy_jitter(x[i], 0.3, 1.8, 0.3, 0.2, perms[i])
        np.testing.assert_allclose(y[i], expected, atol=2e-5, err_msg=str(perms[i]))
    # The order matters here, so a per-batch order would have produced one output only.
    assert len({tuple(np.round(v.ravel(), 4)) for v in y}) > 12
    # apply=False leaves images untouched.
    params["apply"] = np.arange(n) % 2 == 0
    y2 = ops.apply_color_jitter(tf.constant(x), {k: tf.constant(v) for k, v in params.items()}).numpy()
    np.testing.assert_array_equal(y2[1::2], x[1::2])
    np.testing.assert_allclose(y2[::2], y[::2], atol=1e-6)


def test_jitter_strength_zero_and_probability_edges(rng):
    x = tf.constant(rng.uniform(size=(8, 6, 6, 3)).astype(np.float32))
    seed = tf.constant([1, 1])
    np.testing.assert_allclose(ops.random_color_jitter(x, seed, 0.0, 1.0).numpy(), x.numpy(), atol=1e-5)
    np.testing.assert_array_equal(ops.random_color_jitter(x, seed, 1.0, 0.0).numpy(), x.numpy())
    changed = np.abs(ops.random_color_jitter(x, seed, 1.0, 1.0).numpy() - x.numpy()).max(axis=(1, 2, 3))
    assert np.all(changed > 1e-3)


@pytest.mark.parametrize("prob,expected", [(0.0, 0), (1.0, 16)])
def test_grayscale_probability_edges(prob, expected, rng):
    x = rng.uniform(size=(16, 4, 4, 3)).astype(np.float32)
    y = ops.random_grayscale(tf.constant(x), tf.constant([0, 2]), prob).numpy()
    is_gray = np.all(np.isclose(y[..., 0], y[..., 1]) & np.isclose(y[..., 1], y[..., 2]), axis=(1, 2))
    assert is_gray.sum() == expected


def test_grayscale_rate(rng):
    x = rng.uniform(size=(2000, 2, 2, 3)).astype(np.float32)
    y = ops.random_grayscale(tf.constant(x), tf.constant([6, 2]), 0.2).numpy()
    rate = np.all(np.isclose(y[..., 0], y[..., 2]), axis=(1, 2)).mean()
    assert abs(rate - 0.2) < 0.03


@pytest.mark.parametrize(
    "call",
    [
        lambda x: ops.random_color_jitter(x, [0, 0], -0.5),
        lambda x: ops.random_color_jitter(x, [0, 0], 1.0, 1.5),
        lambda x: ops.random_grayscale(x, [0, 0], -0.1),
        lambda x: ops.random_brightness(x, [0, 0], -1.0),
        lambda x: ops.random_contrast(x, [0, 0], 1.5, 0.5),
        lambda x: ops.random_hue(x, [0, 0], 0.7),
        lambda x: ops.random_grayscale(tf.zeros([1, 4, 4, 1]), [0, 0]),
        lambda x: ops.random_brightness(tf.zeros([1, 4, 4, 3], tf.uint8), [0, 0], 0.1),
    ],
)
def test_invalid_arguments_raise_one_line_value_error(call):
    with pytest.raises(ValueError) as err:
        call(tf.zeros([2, 4, 4, 3]))
    assert "\n" not in str(err.value)
