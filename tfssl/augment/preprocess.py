"""Deterministic preprocessing shared by training views and evaluation."""
import tensorflow as tf

from tfssl.augment import _utils


def to_float_rgb(images):
    """Converts images to float32 RGB in [0, 1].

    Integer images are scaled by their dtype's maximum (uint8: / 255); float images are assumed to
    be in [0, 1] already and are only cast. One-channel images are tiled to three channels.

    Args:
        images: uint8 / integer / float tensor [B, H, W, C] (or a single image [H, W, C]), C in {1, 3}.

    Returns:
        float32 tensor [B, H, W, 3] (or [H, W, 3]).

    Raises:
        ValueError: if the rank is not 3 or 4, the dtype is not numeric, or C is not 1 or 3.
    """
    images = tf.convert_to_tensor(images)
    rank = images.shape.rank
    if rank is not None and rank not in (3, 4):
        raise ValueError(f"images must be [B, H, W, C] or [H, W, C], got shape {images.shape}")
    if not (images.dtype.is_integer or images.dtype.is_floating):
        raise ValueError(f"images must be an integer or float tensor, got {images.dtype.name}")
    channels = images.shape[-1] if rank is not None else None
    if channels is not None and channels not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {channels}")
    images = tf.image.convert_image_dtype(images, tf.float32)  # only a cast for float inputs
    if channels == 1:
        images = tf.concat([images] * 3, axis=-1)
    elif channels is None:
        # Unknown channel count at trace time: tile only when it turns out to be 1.
        images = tf.cond(
            tf.equal(tf.shape(images)[-1], 1),
            lambda: tf.concat([images] * 3, axis=-1),
            lambda: tf.identity(images),
        )
    return images


def center_resize(images, image_size):
    """Deterministic evaluation preprocessing: to_float_rgb, central square crop, resize.

    Square inputs are only resized (and returned unchanged when already image_size x image_size);
    non-square inputs are first cropped to their largest central square so the content is not
    stretched. Resizing is bilinear with antialiasing (so downscaling does not alias).

    Args:
        images: uint8 or float tensor [B, H, W, C] (or [H, W, C]), C in {1, 3}.
        image_size: output side length S > 0.

    Returns:
        float32 tensor [B, S, S, 3] (or [S, S, 3]) in [0, 1].

    Raises:
        ValueError: if image_size <= 0 or images are invalid for to_float_rgb.
    """
    image_size = _utils.check_positive_int("image_size", image_size)
    images = to_float_rgb(images)
    height, width = images.shape[-3], images.shape[-2]
    if height == image_size and width == image_size:
        return images
    dims = tf.shape(images)
    h, w = dims[-3], dims[-2]
    side = tf.minimum(h, w)
    images = tf.image.crop_to_bounding_box(images, (h - side) // 2, (w - side) // 2, side, side)
    images = tf.image.resize(images, [image_size, image_size], method="bilinear", antialias=True)
    return tf.clip_by_value(images, 0.0, 1.0)
