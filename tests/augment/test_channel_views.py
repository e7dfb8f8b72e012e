"""CMC's channel-split views against a numpy transcription of the CIE formulas, published Lab values and a numpy
Sobel; eagerly, inside tf.data, under a mixed policy and through serialisation."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.augment import ChannelViews, lab_views, luminance_gradient_views, rgb_to_lab
from tfssl.augment.channel_views import GRADIENT_STD, LAB_MEAN, LAB_STD


def numpy_lab(rgb, linearise=True):
    """CIE 1976 L*a*b* of sRGB in [0, 1] (IEC 61966-2-1 transfer curve and matrix, D65 white), float64."""
    rgb = np.asarray(rgb, np.float64)
    if linearise:
        rgb = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]])
    xyz = rgb @ m.T / np.array([0.950456, 1.0, 1.088754])
    eps = (6 / 29) ** 3
    f = np.where(xyz > eps, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def numpy_sobel(image):
    """(d/dx, d/dy) Sobel responses of `[H, W]` with reflect padding (edge pixel not repeated), float64."""
    p = np.pad(image.astype(np.float64), 1, mode="reflect")
    h, w = image.shape
    window = lambda dy, dx: p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]  # noqa: E731
    gx = (window(-1, 1) + 2 * window(0, 1) + window(1, 1)) - (window(-1, -1) + 2 * window(0, -1) + window(1, -1))
    gy = (window(1, -1) + 2 * window(1, 0) + window(1, 1)) - (window(-1, -1) + 2 * window(-1, 0) + window(-1, 1))
    return gx, gy


def test_known_colours():
    # White, black, and the sRGB primaries' published Lab values (e.g. Lindbloom's calculator, D65).
    rgb = [[1, 1, 1], [0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    want = [[100, 0, 0], [0, 0, 0], [53.24, 80.09, 67.20], [87.73, -86.18, 83.18], [32.30, 79.19, -107.86]]
    got = rgb_to_lab(tf.constant(rgb, tf.float32)).numpy()
    np.testing.assert_allclose(got[:2], want[:2], atol=1e-3)
    np.testing.assert_allclose(got, want, atol=0.02)


def test_random_colours_match_the_cie_formulas():
    rng = np.random.default_rng(0)
    rgb = rng.uniform(size=(2, 5, 7, 3))
    rgb[0, 0, :3] = [0.01, 0.03, 0.04]  # the linear segments of the transfer curve and of f
    got = rgb_to_lab(tf.constant(rgb, tf.float32)).numpy()
    np.testing.assert_allclose(got, numpy_lab(rgb), atol=2e-3)
    # Positive control: skipping the transfer curve is far off, so the comparison above can fail.
    assert np.abs(numpy_lab(rgb, linearise=False) - got).max() > 5


def test_lab_views_are_normalised_l_and_ab():
    rng = np.random.default_rng(1)
    rgb = rng.uniform(size=(3, 6, 6, 3)).astype(np.float32)
    l, ab = lab_views(tf.constant(rgb))
    want = (numpy_lab(rgb) - np.array(LAB_MEAN)) / np.array(LAB_STD)
    assert l.shape == (3, 6, 6, 1) and ab.shape == (3, 6, 6, 2)
    np.testing.assert_allclose(l.numpy()[..., 0], want[..., 0], atol=1e-4)
    np.testing.assert_allclose(ab.numpy(), want[..., 1:], atol=1e-4)
    # CMC's constants: the centre and half-range of the Lab gamut (mean 50, 6.0, -6.7; std 50, 92.2, 101.2).
    np.testing.assert_allclose(LAB_MEAN, [50, 6.025, -6.6895], atol=1e-3)
    np.testing.assert_allclose(LAB_STD, [50, 92.208, 101.1675], atol=1e-3)


def test_luminance_gradient_views_against_numpy_sobel():
    rng = np.random.default_rng(2)
    gray = rng.uniform(size=(2, 9, 8, 1)).astype(np.float32)
    images = np.repeat(gray, 3, axis=-1)
    l, grad = luminance_gradient_views(tf.constant(images))
    lightness = numpy_lab(images)[..., 0]
    np.testing.assert_allclose(l.numpy()[..., 0], (lightness - 50) / 50, atol=1e-4)
    for b in range(2):
        gx, gy = numpy_sobel(lightness[b] / 100)
        np.testing.assert_allclose(grad.numpy()[b, ..., 0], gx / GRADIENT_STD, atol=1e-4)
        np.testing.assert_allclose(grad.numpy()[b, ..., 1], gy / GRADIENT_STD, atol=1e-4)
    # Grayscale images have no colour: the Lab split would give an empty ab view.
    np.testing.assert_allclose(lab_views(tf.constant(images))[1].numpy(), np.broadcast_to(
        -np.array(LAB_MEAN[1:]) / np.array(LAB_STD[1:]), (2, 9, 8, 2)), atol=1e-4)


def test_the_two_grayscale_views_carry_different_information():
    ramp = np.tile(np.linspace(0.2, 0.6, 8, dtype=np.float32)[None, :, None], (8, 1, 3))[None]
    l, grad = luminance_gradient_views(tf.constant(ramp))
    # A left-to-right ramp: d/dx > 0 inside, d/dy = 0 everywhere.
    assert np.all(grad.numpy()[0, :, 1:-1, 0] > 0.05) and np.abs(grad.numpy()[..., 1]).max() < 1e-5
    # Uniform images of two intensities: L tells them apart, the gradient cannot (both zero).
    flat = np.stack([np.full((8, 8, 3), 0.3), np.full((8, 8, 3), 0.7)]).astype(np.float32)
    l, grad = luminance_gradient_views(tf.constant(flat))
    assert abs(float(l[0, 0, 0, 0] - l[1, 0, 0, 0])) > 0.5 and np.abs(grad.numpy()).max() < 1e-5


@pytest.mark.parametrize("views", ["lab", "luminance_gradient"])
def test_layer_eagerly_in_tf_data_and_round_trip(views):
    rng = np.random.default_rng(3)
    images = rng.uniform(size=(4, 8, 8, 3)).astype(np.float32)
    layer = ChannelViews(views)
    first, second = layer(tf.constant(images))
    want = (lab_views if views == "lab" else luminance_gradient_views)(tf.constant(images))
    np.testing.assert_allclose(first.numpy(), want[0].numpy())
    np.testing.assert_allclose(second.numpy(), want[1].numpy())
    mapped = next(iter(tf.data.Dataset.from_tensor_slices(images).batch(4).map(lambda x: tuple(layer(x)))))
    np.testing.assert_allclose(mapped[1].numpy(), second.numpy(), atol=1e-6)
    copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(copy, ChannelViews) and copy.views == views
    np.testing.assert_allclose(copy(tf.constant(images))[0].numpy(), first.numpy())


def test_float32_under_a_mixed_policy():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        layer = ChannelViews("lab")
    finally:
        keras.config.set_dtype_policy(previous)
    images = tf.constant(np.random.default_rng(4).uniform(size=(2, 4, 4, 3)), tf.float32)
    l, ab = layer(images)
    assert l.dtype == tf.float32 and ab.dtype == tf.float32
    np.testing.assert_allclose(ab.numpy(), lab_views(images)[1].numpy(), atol=1e-6)


def test_unknown_views_is_a_one_line_error():
    with pytest.raises(ValueError, match="unknown CMC views 'ycbcr'; choose one of lab, luminance_gradient"):
        ChannelViews("ycbcr")
