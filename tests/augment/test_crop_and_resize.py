"""The crop against a NumPy bilinear crop-and-resize and TF's op, eagerly and compiled with XLA.

`crop_and_resize_by_gathers` is the XLA-compilable formulation that `crop_and_resize_boxes` switches to
inside an XLA compilation (elsewhere it calls tf.image.crop_and_resize).
"""
import numpy as np
import pytest
import tensorflow as tf

from tfssl.augment import ops

# (batch, height, width, output side): square same size, non-square down- and upscale, a tall image, S = 1.
SHAPES = [(8, 16, 16, 16), (5, 13, 21, 7), (4, 9, 9, 30), (6, 20, 11, 9), (3, 10, 12, 1)]


def _positions(start, end, size, out_size):
    """Sample positions along one axis, by the formula of tf.image.crop_and_resize's documentation.

    Computed in float32 in the documented order, so that a position which lands a rounding error past
    the last pixel (e.g. the end of a box reaching 1.0) is classed outside exactly as TF classes it.
    """
    start, end, last = np.float32(start), np.float32(end), np.float32(size - 1)
    if out_size == 1:
        return np.array([np.float32(0.5) * (start + end) * last], np.float32)
    scale = np.float32((end - start) * last) / np.float32(out_size - 1)
    return np.array([start * last + np.float32(i) * scale for i in range(out_size)], np.float32)


def numpy_crop_and_resize(images, boxes, out_size):
    """Bilinear crop of box b from image b, pixel by pixel in float64; 0 where a sample leaves the image."""
    batch, height, width, channels = images.shape
    out = np.zeros((batch, out_size, out_size, channels))
    for b in range(batch):
        y1, x1, y2, x2 = boxes[b]
        for i, y in enumerate(_positions(y1, y2, height, out_size).astype(np.float64)):
            for j, x in enumerate(_positions(x1, x2, width, out_size).astype(np.float64)):
                if not (0 <= y <= height - 1 and 0 <= x <= width - 1):
                    continue  # extrapolation value 0
                y0, x0 = int(np.floor(y)), int(np.floor(x))
                y_1, x_1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
                dy, dx = y - y0, x - x0
                out[b, i, j] = ((1 - dy) * (1 - dx) * images[b, y0, x0] + (1 - dy) * dx * images[b, y0, x_1]
                                + dy * (1 - dx) * images[b, y_1, x0] + dy * dx * images[b, y_1, x_1])
    return out


def _random_boxes(rng, batch, outside=False):
    """(y1, x1, y2, x2) with sides of 5-90%: inside [0, 1], or (outside) starting anywhere in [-0.3, 0.7]
    and so reaching up to 0.6 past the image, with box 0 flipped (y2 < y1, x2 < x1: TF samples it upside
    down and mirrored)."""
    size = rng.uniform(0.05, 0.9, size=(batch, 2))
    start = rng.uniform(-0.3, 0.7, size=(batch, 2)) if outside else rng.uniform(0.0, 1.0 - size)
    boxes = np.concatenate([start, start + size], axis=1)
    if outside:
        boxes[0] = [0.9, 0.8, 0.2, 0.1]
    return boxes.astype(np.float32)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("outside", [False, True])
def test_matches_numpy_bilinear_crop(shape, outside):
    batch, height, width, out_size = shape
    rng = np.random.default_rng(sum(shape) + outside)
    images = rng.uniform(size=(batch, height, width, 3)).astype(np.float32)
    boxes = _random_boxes(rng, batch, outside)
    got = ops.crop_and_resize_by_gathers(tf.constant(images), tf.constant(boxes), out_size).numpy()
    want = numpy_crop_and_resize(images, boxes, out_size)
    assert got.shape == want.shape == (batch, out_size, out_size, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    if outside:
        assert (want == 0).mean() > 0.05  # the extrapolated region is really exercised


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_tf_crop_and_resize_eagerly_and_compiled_with_xla(shape):
    batch, height, width, out_size = shape
    rng = np.random.default_rng(100 + sum(shape))
    # A few values outside [0, 1] so that the output clipping is exercised as well.
    images = rng.uniform(-0.2, 1.2, size=(batch, height, width, 2)).astype(np.float32)
    boxes = np.concatenate([_random_boxes(rng, batch), _random_boxes(rng, batch, outside=True)])
    images = np.concatenate([images, images])
    want = tf.image.crop_and_resize(images, boxes, tf.range(2 * batch), [out_size] * 2, method="bilinear",
                                    extrapolation_value=0.0).numpy()
    gathers = ops.crop_and_resize_by_gathers(tf.constant(images), tf.constant(boxes), out_size)
    # Eagerly the same float32 operations in the same order as TF's kernel: equal to rounding.
    np.testing.assert_allclose(gathers.numpy(), want, atol=1e-6, rtol=0)
    want = np.clip(want, 0.0, 1.0)
    np.testing.assert_array_equal(ops.crop_and_resize_boxes(images, boxes, out_size).numpy(), want)
    compiled = tf.function(lambda x, b: ops.crop_and_resize_boxes(x, b, out_size), jit_compile=True)
    xla = compiled(tf.constant(images), tf.constant(boxes))
    # XLA may fuse multiply-adds and reorder the lerps: a few float32 ulps of values in [0, 1].
    np.testing.assert_allclose(xla.numpy(), want, atol=1e-5, rtol=0)
    assert xla.shape == (2 * batch, out_size, out_size, 2)


def test_sampled_crop_boxes_give_tf_crop_and_resize_exactly(rng):
    # The boxes random_resized_crop draws (whose far edge can round to just past 1.0).
    images = rng.uniform(size=(64, 16, 24, 3)).astype(np.float32)
    boxes = ops.sample_crop_boxes(tf.constant([3, 4]), 64, 16, 24)
    want = tf.image.crop_and_resize(images, boxes, tf.range(64), [12, 12]).numpy()
    got = ops.crop_and_resize_by_gathers(tf.constant(images), boxes, 12).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def test_unknown_image_and_batch_size_inside_tf_function(rng):
    images = rng.uniform(size=(3, 11, 7, 3)).astype(np.float32)
    boxes = _random_boxes(rng, 3)
    spec = [tf.TensorSpec([None, None, None, 3], tf.float32), tf.TensorSpec([None, 4], tf.float32)]
    for crop in (ops.crop_and_resize_by_gathers, ops.crop_and_resize_boxes):
        traced = tf.function(lambda x, b: crop(x, b, 5), input_signature=spec)
        assert traced.get_concrete_function().structured_outputs.shape.as_list() == [None, 5, 5, 3]
        np.testing.assert_allclose(traced(images, boxes).numpy(), numpy_crop_and_resize(images, boxes, 5), atol=1e-5)


def test_crop_switches_to_gathers_only_inside_xla():
    from tfssl.augment import _utils

    assert not _utils.compiling_with_xla()
    assert not tf.function(lambda: tf.constant(_utils.compiling_with_xla()))().numpy()
    assert tf.function(lambda: tf.constant(_utils.compiling_with_xla()), jit_compile=True)().numpy()
    images, boxes = tf.zeros([2, 8, 8, 3]), tf.constant([[0.0, 0.0, 1.0, 1.0]] * 2)
    graph = tf.function(lambda x, b: ops.crop_and_resize_boxes(x, b, 4)).get_concrete_function(images, boxes).graph
    assert "CropAndResize" in {op.type for op in graph.get_operations()}
    graph = tf.function(lambda x, b: ops.crop_and_resize_boxes(x, b, 4),
                        jit_compile=True).get_concrete_function(images, boxes).graph
    assert "CropAndResize" not in {op.type for op in graph.get_operations()}
