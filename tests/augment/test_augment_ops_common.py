"""Properties every random op shares: contract, tf.data / tf.function parity, seeding, per-image draws."""
import numpy as np
import pytest
from slowness import default_run
import tensorflow as tf

from tfssl.augment import BYOLAugment, SimCLRAugment, ops

SIZE = 12  # input side; crops resize to OUT
OUT = 10

# name -> (fn(images, seed), output side)
OPS = {
    "resized_crop": (lambda x, s: ops.random_resized_crop(x, s, OUT), OUT),
    "flip": (lambda x, s: ops.random_flip_left_right(x, s, 0.5), SIZE),
    "brightness": (lambda x, s: ops.random_brightness(x, s, 0.4), SIZE),
    "contrast": (lambda x, s: ops.random_contrast(x, s, 0.2, 1.8), SIZE),
    "saturation": (lambda x, s: ops.random_saturation(x, s, 0.2, 1.8), SIZE),
    "hue": (lambda x, s: ops.random_hue(x, s, 0.2), SIZE),
    "color_jitter": (lambda x, s: ops.random_color_jitter(x, s, 1.0, 1.0), SIZE),
    "grayscale": (lambda x, s: ops.random_grayscale(x, s, 0.5), SIZE),
    "blur": (lambda x, s: ops.random_gaussian_blur(x, s, 1.0, kernel_size=5), SIZE),
    "simclr": (SimCLRAugment(OUT, blur=True, blur_prob=0.5), OUT),
    "solarize": (lambda x, s: ops.random_solarize(x, s, 0.5), SIZE),
    "byol_view2": (BYOLAugment(OUT, blur=True, blur_prob=0.1, solarize_prob=0.2), OUT),
}
NAMES = sorted(OPS)


def _images(rng, n=6):
    return rng.uniform(0.0, 1.0, size=(n, SIZE, SIZE, 3)).astype(np.float32)


@pytest.mark.parametrize("name", NAMES)
def test_eager_contract(name, rng):
    fn, out = OPS[name]
    y = fn(tf.constant(_images(rng)), tf.constant([3, 4]))
    assert y.dtype == tf.float32
    assert y.shape == (6, out, out, 3)
    assert float(tf.reduce_min(y)) >= 0.0 and float(tf.reduce_max(y)) <= 1.0


# The whole recipes (compositions of the ops checked one by one here) run with -m slow.
@pytest.mark.parametrize("name", default_run(NAMES, [n for n in NAMES if n not in ("simclr", "byol_view2")]))
def test_dataset_and_tf_function_match_eager(name, rng, run_in_dataset):
    fn, out = OPS[name]
    x = _images(rng, 8)
    eager = fn(tf.constant(x), tf.constant([5, 6], tf.int64)).numpy()
    # Unknown batch dimension inside tf.data (one batch of 8) ...
    np.testing.assert_allclose(run_in_dataset(fn, x, [5, 6]), eager, atol=1e-5)
    # ... and a static batch size inside tf.function keeps the static output shape.
    traced = tf.function(fn).get_concrete_function(tf.TensorSpec([8, SIZE, SIZE, 3]), tf.TensorSpec([2], tf.int64))
    assert traced.output_shapes.as_list() == [8, out, out, 3]
    np.testing.assert_allclose(traced(tf.constant(x), tf.constant([5, 6], tf.int64)).numpy(), eager, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_output_different_seed_differs(name, rng):
    fn, _ = OPS[name]
    x = tf.constant(_images(rng, 16))
    a = fn(x, tf.constant([1, 2])).numpy()
    np.testing.assert_array_equal(a, fn(x, tf.constant([1, 2])).numpy())
    assert not np.allclose(a, fn(x, tf.constant([1, 3])).numpy(), atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_identical_images_get_different_parameters(name, rng):
    fn, _ = OPS[name]
    one = _images(rng, 1)
    y = fn(tf.constant(np.repeat(one, 16, axis=0)), tf.constant([7, 8])).numpy()
    distinct = {tuple(np.round(v.ravel(), 4)) for v in y}
    # Per-batch parameters would give 1 distinct output; a coin-flip op at least 2.
    assert len(distinct) >= 2
    if name not in ("flip", "grayscale", "solarize"):
        assert len(distinct) >= 12
