"""Every augmentation op compiles with XLA (jit_compile) and gives the eager numbers; the RNG behind them."""
import numpy as np
import pytest
import tensorflow as tf

from tfssl import rng
from tfssl.augment import SimCLRAugment, ops

SIZE = 16


def _philox_unit_floats(seed, count):
    """Philox-4x32-10 (Salmon et al. 2011) in NumPy, as TF keys it for a stateless seed of [2] int64.

    TF's stateless ops first hash the seed into a key and counter (StatelessRandomGetKeyCounter, not
    reproduced here); we take those from TF and generate the stream and the floats ourselves: each
    32-bit output u becomes the float with exponent of [1, 2) and u's low 23 bits as mantissa, minus 1.
    """
    key, counter, _ = tf.raw_ops.StatelessRandomGetKeyCounterAlg(seed=seed)
    key = int(key.numpy()[0]) & (2**64 - 1)
    counter = [int(c) & (2**64 - 1) for c in counter.numpy()]
    k = [key & 0xFFFFFFFF, key >> 32]
    c = [counter[0] & 0xFFFFFFFF, counter[0] >> 32, counter[1] & 0xFFFFFFFF, counter[1] >> 32]
    words = []
    while len(words) < count:
        x, kk = list(c), list(k)
        for _ in range(10):
            p0, p1 = 0xD2511F53 * x[0], 0xCD9E8D57 * x[2]
            x = [(p1 >> 32) ^ x[1] ^ kk[0], p1 & 0xFFFFFFFF, (p0 >> 32) ^ x[3] ^ kk[1], p0 & 0xFFFFFFFF]
            kk = [(kk[0] + 0x9E3779B9) & 0xFFFFFFFF, (kk[1] + 0xBB67AE85) & 0xFFFFFFFF]
        words += x
        # 128-bit counter increment.
        value = sum(part << (32 * i) for i, part in enumerate(c)) + 1
        c = [(value >> (32 * i)) & 0xFFFFFFFF for i in range(4)]
    bits = np.array(words[:count], np.uint32)
    return ((bits & np.uint32(0x7FFFFF)) | np.uint32(127 << 23)).view(np.float32) - np.float32(1.0)


def test_uniform_is_philox_with_tf_float_conversion():
    seed = tf.constant([7, 11], tf.int64)
    want = _philox_unit_floats(seed, 10)
    np.testing.assert_array_equal(rng.uniform([10], seed).numpy(), want)
    scaled = rng.uniform([2, 5], seed, -0.4, 1.6).numpy()
    np.testing.assert_allclose(scaled, want.reshape(2, 5) * 2.0 - 0.4, rtol=0, atol=3e-7)


@pytest.mark.parametrize("shape", [[5], [3, 7], [8, 4]])
def test_uniform_is_the_same_eagerly_in_graphs_and_under_xla(shape):
    seed = tf.constant([3, 4], tf.int64)
    eager = rng.uniform(shape, seed, 0.25, 2.0).numpy()
    # Exactly the numbers tf.random.stateless_uniform draws on CPU, so earlier seeds keep their draws...
    np.testing.assert_array_equal(eager, tf.random.stateless_uniform(shape, seed, 0.25, 2.0).numpy())
    np.testing.assert_array_equal(tf.function(lambda s: rng.uniform(shape, s, 0.25, 2.0))(seed).numpy(), eager)
    # ... and under XLA, where tf.random.stateless_uniform itself draws other numbers (the positive control).
    compiled = tf.function(lambda s: rng.uniform(shape, s, 0.25, 2.0), jit_compile=True)(seed).numpy()
    np.testing.assert_allclose(compiled, eager, rtol=0, atol=2.4e-7)  # unit * range + min may fuse to an FMA
    stock = tf.function(lambda s: tf.random.stateless_uniform(shape, s, 0.25, 2.0), jit_compile=True)(seed)
    assert np.abs(stock.numpy() - eager).max() > 0.01
    # Seeds derived in the graph, as the augmentation stages derive theirs (with "auto_select" these differ).
    def chained(s):
        return rng.uniform(shape, rng.fold_in(rng.fold_in(s, 5), 1))

    np.testing.assert_allclose(tf.function(chained, jit_compile=True)(seed).numpy(), chained(seed).numpy(),
                               rtol=0, atol=1e-7)
    fold = tf.function(lambda s: rng.fold_in(s, 5), jit_compile=True)(seed).numpy()
    np.testing.assert_array_equal(fold, rng.fold_in(seed, 5).numpy())


def _images(batch=8, size=SIZE, seed=0):
    return tf.constant(np.random.default_rng(seed).uniform(size=(batch, size, size, 3)).astype(np.float32))


OPS = {
    "crop": lambda x, s: ops.random_resized_crop(x, s, 12),
    "flip": lambda x, s: ops.random_flip_left_right(x, s),
    "brightness": lambda x, s: ops.random_brightness(x, s, 0.4),
    "contrast": lambda x, s: ops.random_contrast(x, s, 0.4, 1.6),
    "saturation": lambda x, s: ops.random_saturation(x, s, 0.4, 1.6),
    "hue": lambda x, s: ops.random_hue(x, s, 0.2),
    "color_jitter": lambda x, s: ops.random_color_jitter(x, s, 1.0, 0.8),
    "grayscale": lambda x, s: ops.random_grayscale(x, s, 0.5),
    "blur": lambda x, s: ops.random_gaussian_blur(x, s, 0.5, kernel_size=5),
    "solarize": lambda x, s: ops.random_solarize(x, s, 0.5),
    # A whole view, from uint8 images (BYOL's views are covered by tests/methods/test_xla_step.py).
    "simclr_view": lambda x, s: SimCLRAugment(SIZE, blur=True)(tf.cast(x * 255.0, tf.uint8), s),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_compiles_with_xla_and_matches_eager(name):
    op, images, seed = OPS[name], _images(), tf.constant([5, 6])
    eager = op(images, seed).numpy()
    compiled = tf.function(op, jit_compile=True)(images, seed).numpy()
    assert compiled.shape == eager.shape
    # Same random parameters (rng), same formulas; XLA fuses and reorders float32 arithmetic, which moves
    # values in [0, 1] by a few ulps (largest seen: 2.5e-6 for a full view, crop then blur). Another crop
    # box or jitter order would differ by > 1e-2.
    np.testing.assert_allclose(compiled, eager, rtol=0, atol=2e-5)
    assert eager.std() > 0.01


def test_color_jitter_select_form_matches_grouped_form_and_each_images_order():
    images, seed = _images(16), tf.constant([1, 9])
    params = ops.sample_jitter_params(seed, 16, 1.0, 0.75)
    grouped = ops.apply_color_jitter(images, params).numpy()
    selected = ops.apply_color_jitter_by_select(images, params).numpy()
    np.testing.assert_array_equal(selected, grouped)
    apply = params["apply"].numpy()
    assert 0 < apply.sum() < 16
    np.testing.assert_array_equal(selected[~apply], images.numpy()[~apply])
    # By hand, image by image, in its own order (clipping after each op).
    adjusts = dict(brightness=ops.adjust_brightness, contrast=ops.adjust_contrast,
                   saturation=ops.adjust_saturation, hue=ops.adjust_hue)
    for b in np.flatnonzero(apply)[:4]:
        x = images[b:b + 1]
        for index in params["order"].numpy()[b]:
            name = ops.JITTER_OPS[index]
            x = tf.clip_by_value(adjusts[name](x, params[name][b:b + 1]), 0.0, 1.0)
        np.testing.assert_allclose(selected[b], x.numpy()[0], atol=1e-6)
    # A different order changes the result (so the check above can fail).
    swapped = dict(params, order=tf.reverse(params["order"], axis=[1]))
    assert np.abs(ops.apply_color_jitter_by_select(images, swapped).numpy() - selected).max() > 1e-2
    graph = tf.function(lambda x: ops.apply_color_jitter(x, params), jit_compile=True).get_concrete_function(
        images).graph
    assert "DynamicPartition" not in {op.type for op in graph.get_operations()}
