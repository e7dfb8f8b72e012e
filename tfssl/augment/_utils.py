"""Shared helpers for the batched augmentation ops: seeds, per-image draws, argument checks.

Every op in this package draws its random parameters statelessly (`tfssl.rng`, Philox) from a seed
tensor of shape [2], one parameter per image (never one per batch), so the same code runs, with the
same draws, eagerly, inside `tf.data.Dataset.map`, inside `tf.function`, compiled with XLA and inside
`MirroredStrategy.run`.
"""
import math
import numbers

import tensorflow as tf

from tfssl import rng


def as_seed(seed):
    """Converts a seed to an int64 tensor of shape [2].

    Args:
        seed: int32/int64 tensor (or sequence of two ints) of shape [2].

    Returns:
        int64 tensor of shape [2].

    Raises:
        ValueError: if the seed is not an integer tensor of static shape [2].
    """
    seed = tf.convert_to_tensor(seed)
    if not seed.dtype.is_integer:
        raise ValueError(f"seed must be an int32/int64 tensor of shape [2], got dtype {seed.dtype.name}")
    if seed.shape.rank is not None and seed.shape.as_list() != [2]:
        raise ValueError(f"seed must have shape [2], got {seed.shape}")
    return tf.cast(seed, tf.int64)


def fold_seed(seed, salt):
    """Derives an independent seed for one stage of a pipeline.

    Stages use fixed integer salts (not a split into N), so switching one stage off does not
    change the random draws of the others.

    Args:
        seed: integer tensor of shape [2].
        salt: Python int or integer scalar tensor identifying the stage.

    Returns:
        int64 tensor of shape [2].
    """
    return rng.fold_in(as_seed(seed), salt)


def compiling_with_xla():
    """Whether ops are being traced for an XLA compilation (tf.function(jit_compile=True), TPU replicas).

    Ops without an XLA kernel (tf.image.crop_and_resize, tf.dynamic_partition) switch to an equivalent
    formulation there; elsewhere they keep the faster TF kernels.
    """
    enclosing = getattr(tf.__internal__, "get_enclosing_xla_context", None)
    return enclosing is not None and enclosing() is not None


def batch_size(images):
    """Batch size of a [B, ...] tensor: a Python int when static, else a scalar int32 tensor.

    Keeping the static value when it exists keeps the static output shape inside tf.function.
    """
    static = images.shape[0]
    return static if static is not None else tf.shape(images)[0]


def image_hw(images):
    """(height, width) of a [B, H, W, C] tensor as Python ints when static, else int32 tensors."""
    dynamic = tf.shape(images)
    height = images.shape[1] if images.shape[1] is not None else dynamic[1]
    width = images.shape[2] if images.shape[2] is not None else dynamic[2]
    return height, width


def uniform_per_image(seed, batch, minval, maxval):
    """One float32 draw per image from U[minval, maxval); shape [B]."""
    return rng.uniform([batch], seed, minval, maxval)


def bernoulli_per_image(seed, batch, prob):
    """One boolean draw per image, True with probability `prob` (exactly never/always at 0/1)."""
    return rng.uniform([batch], seed) < prob


def where_per_image(mask, if_true, if_false):
    """Selects whole images: mask [B] bool, images [B, H, W, C]."""
    return tf.where(tf.reshape(mask, [-1, 1, 1, 1]), if_true, if_false)


def check_images(images, name="images", channels=None):
    """Converts to a tensor and checks it is a float batch [B, H, W, C].

    Args:
        images: tensor-like [B, H, W, C].
        name: argument name for error messages.
        channels: optional tuple of allowed channel counts (checked when static).

    Returns:
        The images as a float32 tensor (other float dtypes are cast, so ops always return float32).

    Raises:
        ValueError: on wrong rank, non-float dtype or disallowed channel count.
    """
    images = tf.convert_to_tensor(images)
    if images.shape.rank is not None and images.shape.rank != 4:
        raise ValueError(f"{name} must be a batch [B, H, W, C] of rank 4, got shape {images.shape}")
    if not images.dtype.is_floating:
        raise ValueError(
            f"{name} must be float in [0, 1], got {images.dtype.name}; convert with to_float_rgb first"
        )
    if channels is not None and images.shape.rank == 4:
        c = images.shape[-1]
        if c is not None and c not in channels:
            raise ValueError(f"{name} must have channels in {tuple(channels)}, got {c}")
    return tf.cast(images, tf.float32)


def _as_float(name, value):
    """float(value), or a one-line ValueError naming the argument."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def check_probability(name, value):
    """Raises ValueError unless 0 <= value <= 1."""
    if not 0.0 <= _as_float(name, value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    return float(value)


def check_non_negative(name, value):
    """Raises ValueError unless value >= 0 (and finite)."""
    if not (math.isfinite(_as_float(name, value)) and float(value) >= 0.0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


def check_positive_int(name, value):
    """Raises ValueError unless value is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_range(name, value, low=None, high=None, low_open=False):
    """Checks a (min, max) pair with min <= max inside optional bounds.

    Args:
        name: argument name for the message.
        value: a pair of numbers.
        low: smallest allowed min (exclusive when low_open).
        high: largest allowed max (inclusive).
        low_open: whether `low` itself is excluded.

    Returns:
        (float, float).

    Raises:
        ValueError: with a one-line message naming the valid range.
    """
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (min, max) of numbers, got {value!r}") from None
    lo_ok = low is None or (lo > low if low_open else lo >= low)
    hi_ok = high is None or hi <= high
    if not (lo_ok and hi_ok and lo <= hi and math.isfinite(lo) and math.isfinite(hi)):
        left = "(" if low_open or low is None else "["
        right = ")" if high is None else "]"
        bounds = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ValueError(f"{name} must be (min, max) with min <= max inside {bounds}, got {value!r}")
    return lo, hi
