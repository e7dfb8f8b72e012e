"""Gaussian blur against numpy kernels and closed-form properties."""
import numpy as np
import pytest
import tensorflow as tf

from tfssl.augment import ops


def _numpy_kernel_2d(sigma, size):
    taps = np.arange(size) - size // 2
    g = np.exp(-(taps**2) / (2.0 * sigma**2))
    g /= g.sum()
    return np.outer(g, g)


@pytest.mark.parametrize("image_size,expected", [(224, 23), (96, 9), (64, 7), (32, 3), (16, 1)])
def test_kernel_size_is_about_ten_percent(image_size, expected):
    assert ops.blur_kernel_size(image_size) == expected


def test_constant_image_is_unchanged():
    x = tf.fill([3, 10, 12, 3], 0.37)
    y = ops.gaussian_blur(x, tf.constant([0.1, 1.0, 2.0]), 7).numpy()
    np.testing.assert_allclose(y, 0.37, atol=1e-6)


def test_impulse_response_matches_numpy_gaussian_per_image_and_channel():
    size, kernel = 15, 7
    sigmas = np.array([0.5, 1.0, 2.0], np.float32)
    x = np.zeros((3, size, size, 2), np.float32)
    x[:, 7, 7, 0] = 1.0  # impulse in channel 0 ...
    x[:, 6, 8, 1] = 0.5  # ... and a shifted, scaled one in channel 1
    y = ops.gaussian_blur(tf.constant(x), tf.constant(sigmas), kernel).numpy()
    r = kernel // 2
    for b, sigma in enumerate(sigmas):
        k = _numpy_kernel_2d(float(sigma), kernel)
        assert y[b, ..., 0].sum() == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(y[b, 7 - r : 7 + r + 1, 7 - r : 7 + r + 1, 0], k, atol=1e-6)
        np.testing.assert_allclose(y[b, 6 - r : 6 + r + 1, 8 - r : 8 + r + 1, 1], 0.5 * k, atol=1e-6)
    # Larger sigma -> lower peak: each image really used its own sigma.
    assert y[0, 7, 7, 0] > y[1, 7, 7, 0] > y[2, 7, 7, 0]


def test_unknown_batch_size_inside_tf_function():
    fn = tf.function(
        lambda x, s: ops.gaussian_blur(x, s, 5),
        input_signature=[tf.TensorSpec([None, 9, 9, 3]), tf.TensorSpec([None])],
    )
    x = np.zeros((2, 9, 9, 3), np.float32)
    x[:, 4, 4, :] = 1.0
    y = fn(tf.constant(x), tf.constant([0.7, 1.5])).numpy()
    np.testing.assert_allclose(y[1, 2:7, 2:7, 2], _numpy_kernel_2d(1.5, 5), atol=1e-6)


def test_random_blur_probability_edges_and_sigma_range():
    x = np.zeros((6, 11, 11, 3), np.float32)
    x[:, 5, 5, :] = 1.0
    seed = tf.constant([3, 1])
    np.testing.assert_array_equal(ops.random_gaussian_blur(tf.constant(x), seed, 0.0, kernel_size=7).numpy(), x)
    y = ops.random_gaussian_blur(tf.constant(x), seed, 1.0, sigma_range=(0.5, 2.0), kernel_size=7).numpy()
    peaks = y[:, 5, 5, 0]
    # The peak is a monotone function of sigma: bounded by the kernels at the range ends.
    assert np.all(peaks <= _numpy_kernel_2d(0.5, 7)[3, 3] + 1e-6)
    assert np.all(peaks >= _numpy_kernel_2d(2.0, 7)[3, 3] - 1e-6)
    assert len(np.unique(np.round(peaks, 6))) == 6


@pytest.mark.parametrize(
    "call",
    [
        lambda: ops.gaussian_blur(tf.zeros([1, 8, 8, 3]), tf.ones([1]), 4),
        lambda: ops.gaussian_blur(tf.zeros([1, 4, 4, 3]), tf.ones([1]), 9),
        lambda: ops.random_gaussian_blur(tf.zeros([1, 8, 8, 3]), [0, 0], 1.2),
        lambda: ops.random_gaussian_blur(tf.zeros([1, 8, 8, 3]), [0, 0], sigma_range=(0.0, 1.0)),
    ],
)
def test_invalid_arguments_raise_one_line_value_error(call):
    with pytest.raises(ValueError) as err:
        call()
    assert "\n" not in str(err.value)
