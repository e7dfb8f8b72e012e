"""Stateless random draws that are the same numbers with and without XLA, on every device.

`tf.random.stateless_uniform` is not: compiled with XLA (`jit_compile=True`, TPUs) its float32 draws
differ from the TF kernel's for the same seed, because the two turn the generator's 32 random bits
into a float differently (the TF CPU / GPU kernels keep the low 23 bits as the mantissa, XLA the high
ones), and "auto_select" derives other keys under XLA (seen on CPU for seeds made in the graph by
stateless_fold_in, even for integer draws) and may pick another generator elsewhere (ThreeFry on TPUs).
A train step compiled with `--jit_compile` would then make other views, other MoCo BN shuffles and
other jitter orders than the same step without it. Here the bits come from Philox, named explicitly,
through the integer kernels (which XLA and TF compute alike), and are turned into floats in TF's own way, so
the values are also exactly those of `tf.random.stateless_uniform(..., alg="auto_select")` on CPU and GPU:
seeds of earlier runs keep their draws. (Naming Philox costs tracing time: TF then scrambles the seed
with a few dozen Python-built ops per draw, about 2 s per augmentation view on 2 busy cores.)
"""
import tensorflow as tf

ALG = "philox"

_MANTISSA_MASK = 0x7FFFFF  # the 23 low bits become the mantissa
_ONE_EXPONENT = 127 << 23  # exponent of [1, 2)


def fold_in(seed, data):
    """A new int64 seed [2] from `seed` [2] and the integer `data` (`stateless_fold_in` with Philox)."""
    return tf.random.experimental.stateless_fold_in(seed, tf.cast(data, tf.int64), alg=ALG)


def uniform(shape, seed, minval=0.0, maxval=1.0):
    """float32 draws from U[minval, maxval), the same eagerly, in graphs and under XLA.

    Args:
        shape: output shape (list of ints or int32 tensor).
        seed: integer tensor of shape [2].
        minval: lower bound (float or float32 tensor broadcastable to `shape`).
        maxval: upper bound.

    Returns:
        float32 tensor of `shape`: `unit * (maxval - minval) + minval` with `unit` in [0, 1), computed
        as tf.random.stateless_uniform does.
    """
    bits = tf.random.stateless_uniform(shape, seed, minval=None, maxval=None, dtype=tf.uint32, alg=ALG)
    mantissa = tf.bitwise.bitwise_and(bits, tf.constant(_MANTISSA_MASK, tf.uint32))
    unit = tf.bitcast(tf.bitwise.bitwise_or(mantissa, tf.constant(_ONE_EXPONENT, tf.uint32)), tf.float32) - 1.0
    minval = tf.convert_to_tensor(minval, tf.float32)
    maxval = tf.convert_to_tensor(maxval, tf.float32)
    return unit * (maxval - minval) + minval
