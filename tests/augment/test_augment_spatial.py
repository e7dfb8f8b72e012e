"""Random resized crop and flip against closed-form distributions and numpy."""
import math

import numpy as np
import pytest
import tensorflow as tf

from tfssl.augment import ops

N = 20000  # boxes per distribution check (one vectorised call, a few ms)


def _boxes(height, width, area=(0.08, 1.0), aspect=(3 / 4, 4 / 3), seed=(11, 12), n=N):
    boxes = ops.sample_crop_boxes(tf.constant(seed), n, height, width, area, aspect).numpy()
    h, w = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return boxes, h * w, (w * width) / (h * height)


def _accepted_area_cdf(grid, lo, hi, log_aspect_half_width):
    """CDF of the kept crop area on a square image: U(lo, hi) thinned by the chance that a
    log-uniform aspect r in [-L, L] fits (a <= r <= 1/a), i.e. min(1, -ln(a) / L)."""
    density = np.where((grid >= lo) & (grid <= hi), np.minimum(1.0, -np.log(grid) / log_aspect_half_width), 0.0)
    cdf = np.cumsum(density)
    return cdf / cdf[-1]


def test_crop_area_matches_closed_form_distribution():
    _, area, _ = _boxes(32, 32)
    grid = np.linspace(1e-4, 1.0, 200001)
    cdf = _accepted_area_cdf(grid, 0.08, 1.0, math.log(4 / 3))
    expected_mean = np.sum(np.diff(cdf, prepend=0.0) * grid)
    assert abs(area.mean() - expected_mean) < 0.01
    for q in (0.05, 0.25, 0.5, 0.75, 0.95):
        assert abs(np.quantile(area, q) - np.interp(q, cdf, grid)) < 0.015, q
    # By hand: mass below 3/4 is 0.67, above it int_{3/4}^1 -ln(a)/ln(4/3) da = 0.0342/0.2877 = 0.119,
    # so the median is 0.08 + 0.5 * (0.67 + 0.119) = 0.4745 (plain U(0.08, 1) would give 0.54).
    assert abs(np.quantile(area, 0.5) - 0.4745) < 0.015
    assert area.min() >= 0.08 - 1e-6 and area.max() <= 1.0 + 1e-6


def test_crop_area_is_exactly_uniform_when_every_candidate_fits():
    # Aspect fixed at 1 on a square image: every candidate fits, so area ~ U(0.2, 0.9) exactly.
    _, area, aspect = _boxes(16, 16, area=(0.2, 0.9), aspect=(1.0, 1.0))
    np.testing.assert_allclose(aspect, 1.0, rtol=1e-4)
    for q in (0.1, 0.3, 0.5, 0.7, 0.9):
        assert abs(np.quantile(area, q) - (0.2 + 0.7 * q)) < 0.012
    assert abs(area.mean() - 0.55) < 0.006


def test_crop_aspect_is_log_uniform_in_range_and_boxes_inside_image():
    height, width = 24, 40
    boxes, area, aspect = _boxes(height, width)
    assert boxes.min() >= -1e-6 and boxes.max() <= 1 + 1e-6
    assert aspect.min() >= 3 / 4 - 1e-4 and aspect.max() <= 4 / 3 + 1e-4
    # For areas <= 0.3 every aspect in range fits this 5:3 image, so log r is exactly uniform.
    log_r = np.log(aspect[area <= 0.3])
    lo, hi = math.log(3 / 4), math.log(4 / 3)
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert abs(np.quantile(log_r, q) - (lo + q * (hi - lo))) < 0.02
    # Offsets spread over the whole image (centres are not all in the middle).
    centre_x = (boxes[:, 1] + boxes[:, 3]) / 2
    assert centre_x.min() < 0.2 and centre_x.max() > 0.8


def test_crop_falls_back_to_central_box_when_nothing_fits():
    # Full-area square crops never fit a 10 x 20 image: fall back to the central 10 x 10 square.
    boxes, _, _ = _boxes(10, 20, area=(1.0, 1.0), aspect=(1.0, 1.0), n=4)
    np.testing.assert_allclose(boxes, np.tile([[0.0, 0.25, 1.0, 0.75]], (4, 1)), atol=1e-6)


def test_full_box_crop_is_identity(rng):
    x = rng.uniform(size=(3, 9, 9, 3)).astype(np.float32)
    y = ops.random_resized_crop(tf.constant(x), tf.constant([1, 1]), 9, area_range=(1.0, 1.0), aspect_range=(1, 1))
    np.testing.assert_allclose(y.numpy(), x, atol=1e-6)


def test_crop_boxes_differ_per_image_and_crop_uses_them(rng):
    x = np.repeat(rng.uniform(size=(1, 16, 16, 3)).astype(np.float32), 8, axis=0)
    seed = tf.constant([2, 9])
    boxes = ops.sample_crop_boxes(seed, 8, 16, 16)
    assert len({tuple(np.round(b, 5)) for b in boxes.numpy()}) == 8
    y = ops.random_resized_crop(tf.constant(x), seed, 6).numpy()
    assert len({tuple(np.round(v.ravel(), 5)) for v in y}) == 8
    # random_resized_crop is exactly sample_crop_boxes + crop_and_resize_boxes.
    np.testing.assert_allclose(y, ops.crop_and_resize_boxes(tf.constant(x), boxes, 6).numpy(), atol=1e-6)


def test_crop_and_resize_boxes_samples_the_box(rng):
    # crop_and_resize maps normalised y to y * (H - 1): a box over pixels 2..5 of an 8x8 image,
    # resized to 4x4, samples exactly pixels 2..5; the full box keeps the corner pixels.
    x = rng.uniform(size=(2, 8, 8, 1)).astype(np.float32)
    boxes = tf.constant([[2 / 7, 2 / 7, 5 / 7, 5 / 7], [0.0, 0.0, 1.0, 1.0]], tf.float32)
    y = ops.crop_and_resize_boxes(tf.constant(x), boxes, 4).numpy()
    np.testing.assert_allclose(y[0], x[0, 2:6, 2:6], atol=1e-5)
    corners = np.ix_([0, -1], [0, -1])
    np.testing.assert_allclose(y[1][corners], x[1][corners], atol=1e-5)


def test_flip_matches_numpy_per_image(rng):
    x = rng.uniform(size=(4, 5, 6, 3)).astype(np.float32)
    mask = np.array([True, False, True, False])
    y = ops.flip_left_right(tf.constant(x), tf.constant(mask)).numpy()
    np.testing.assert_array_equal(y[mask], x[mask][:, :, ::-1])
    np.testing.assert_array_equal(y[~mask], x[~mask])


@pytest.mark.parametrize("prob,expected", [(0.0, 0), (1.0, 64)])
def test_flip_probability_edges(prob, expected, rng):
    x = rng.uniform(size=(64, 4, 4, 3)).astype(np.float32)
    y = ops.random_flip_left_right(tf.constant(x), tf.constant([0, 1]), prob).numpy()
    flipped = np.all(np.isclose(y, x[:, :, ::-1]), axis=(1, 2, 3))
    assert flipped.sum() == expected


def test_flip_rate_is_one_half(rng):
    x = rng.uniform(size=(2000, 2, 3, 1)).astype(np.float32)
    y = ops.random_flip_left_right(tf.constant(x), tf.constant([4, 4])).numpy()
    rate = np.all(y == x[:, :, ::-1], axis=(1, 2, 3)).mean()
    assert abs(rate - 0.5) < 0.05


@pytest.mark.parametrize(
    "kwargs",
    [
        {"area_range": (0.0, 1.0)},
        {"area_range": (0.5, 1.2)},
        {"area_range": (0.9, 0.1)},
        {"aspect_range": (0.0, 1.0)},
        {"aspect_range": (2.0, 1.0)},
        {"num_candidates": 0},
    ],
)
def test_crop_invalid_arguments_raise_one_line_value_error(kwargs):
    with pytest.raises(ValueError) as err:
        ops.sample_crop_boxes(tf.constant([0, 0]), 2, 8, 8, **kwargs)
    assert "\n" not in str(err.value)


def test_crop_invalid_image_size_raises():
    with pytest.raises(ValueError, match="image_size"):
        ops.random_resized_crop(tf.zeros([1, 4, 4, 3]), tf.constant([0, 0]), 0)
