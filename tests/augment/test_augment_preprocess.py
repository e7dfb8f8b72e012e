"""to_float_rgb and center_resize: deterministic preprocessing."""
import numpy as np
import pytest
import tensorflow as tf

from tfssl.augment import center_resize, to_float_rgb


def test_to_float_rgb_scales_uint8_and_tiles_gray(rng):
    x = rng.integers(0, 256, size=(2, 4, 5, 1), dtype=np.uint8)
    y = to_float_rgb(tf.constant(x))
    assert y.dtype == tf.float32 and y.shape == (2, 4, 5, 3)
    np.testing.assert_allclose(y.numpy(), np.repeat(x / 255.0, 3, axis=-1), atol=1e-6)


def test_to_float_rgb_keeps_float_rgb_and_single_images(rng):
    x = rng.uniform(size=(4, 5, 3))
    np.testing.assert_allclose(to_float_rgb(tf.constant(x)).numpy(), x.astype(np.float32))


def test_to_float_rgb_unknown_channels_in_tf_function(rng):
    fn = tf.function(to_float_rgb, input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8)])
    x = rng.integers(0, 256, size=(1, 3, 3, 1), dtype=np.uint8)
    np.testing.assert_allclose(fn(x).numpy(), np.repeat(x / 255.0, 3, axis=-1), atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 4, 4, 2), (4, 4), (1, 1, 4, 4, 3)])
def test_to_float_rgb_rejects_bad_shapes(shape):
    with pytest.raises(ValueError):
        to_float_rgb(tf.zeros(shape))


def test_center_resize_identity_at_target_size(rng):
    x = rng.uniform(size=(2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(center_resize(tf.constant(x), 8).numpy(), x)
    # The same through tf.data with unknown spatial size.
    ds = tf.data.Dataset.from_generator(lambda: iter([x]), output_signature=tf.TensorSpec([None, None, None, 3]))
    out = next(iter(ds.map(lambda b: center_resize(b, 8)))).numpy()
    np.testing.assert_allclose(out, x, atol=1e-6)


def test_center_resize_crops_central_square_then_resizes():
    # 8 x 16 image: outer quarters 0, central square 255 -> resized to 4 x 4 all ones.
    x = np.zeros((1, 8, 16, 1), np.uint8)
    x[:, :, 4:12] = 255
    y = center_resize(tf.constant(x), 4)
    assert y.shape == (1, 4, 4, 3) and y.dtype == tf.float32
    np.testing.assert_allclose(y.numpy(), 1.0, atol=1e-6)
    # Single image, linear ramp downsampled by 2 keeps the mean (antialiased averaging).
    ramp = np.tile(np.linspace(0, 1, 8, dtype=np.float32)[None, :, None], (8, 1, 3))
    small = center_resize(tf.constant(ramp), 4).numpy()
    assert small.shape == (4, 4, 3)
    assert small.mean() == pytest.approx(0.5, abs=1e-5)


def test_center_resize_rejects_bad_size():
    with pytest.raises(ValueError, match="image_size"):
        center_resize(tf.zeros([1, 4, 4, 3]), 0)
