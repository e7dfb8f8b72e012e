"""Batched spatial augmentations: random resized crop and horizontal flip, one draw per image.

Reference: Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations"
(SimCLR, ICML 2020), appendix A: "random crop with resize" (area 0.08..1 of the image, aspect
ratio 3/4..4/3, as in Szegedy et al. 2015 "Going deeper with convolutions") and random flip.
"""
import math

import tensorflow as tf

from tfssl import rng
from tfssl.augment import _utils


def sample_crop_boxes(
    seed, batch, height, width, area_range=(0.08, 1.0), aspect_range=(3 / 4, 4 / 3), num_candidates=10
):
    """Draws one Inception-style crop box per image, vectorised over the batch.

    For each image `num_candidates` (area, aspect) pairs are drawn at once: area fraction
    uniform in `area_range`, aspect ratio (width / height, in pixels) log-uniform in
    `aspect_range`. The first candidate that fits inside the image is kept (the same rejection
    rule as sequential retries, without a data-dependent loop). Images with no fitting candidate
    fall back to the largest central crop whose aspect ratio is clipped into `aspect_range`.
    The offset is uniform over the positions where the box fits. Boxes are continuous (not
    snapped to pixels), which `crop_and_resize_boxes` interpolates.

    Args:
        seed: integer tensor of shape [2].
        batch: number of boxes B (Python int or scalar int tensor).
        height: image height in pixels (Python int or scalar tensor).
        width: image width in pixels (Python int or scalar tensor).
        area_range: (min, max) fraction of the image area, inside (0, 1].
        aspect_range: (min, max) aspect ratio width / height, min > 0.
        num_candidates: candidates drawn per image before the central fallback.

    Returns:
        float32 tensor [B, 4] of normalised boxes (y1, x1, y2, x2) inside [0, 1].

    Raises:
        ValueError: on invalid ranges or num_candidates.
    """
    area_lo, area_hi = _utils.check_range("crop_area", area_range, low=0.0, high=1.0, low_open=True)
    ratio_lo, ratio_hi = _utils.check_range("crop_aspect", aspect_range, low=0.0, low_open=True)
    num_candidates = _utils.check_positive_int("num_candidates", num_candidates)

    shape = [batch, num_candidates]
    area = rng.uniform(shape, _utils.fold_seed(seed, 0), area_lo, area_hi)
    log_ratio = rng.uniform(shape, _utils.fold_seed(seed, 1), math.log(ratio_lo), math.log(ratio_hi))
    ratio = tf.exp(log_ratio)
    # Image aspect W/H: a crop of area a*H*W and aspect r is sqrt(a*H*W*r) px wide, i.e. a
    # fraction sqrt(a*r/image_aspect) of the width (and sqrt(a*image_aspect/r) of the height).
    image_aspect = tf.cast(width, tf.float32) / tf.cast(height, tf.float32)
    crop_w = tf.sqrt(area * ratio / image_aspect)
    crop_h = tf.sqrt(area * image_aspect / ratio)

    fits = (crop_w <= 1.0) & (crop_h <= 1.0)
    # argmax returns the first maximum, i.e. the first candidate that fits.
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    any_fits = tf.reduce_any(fits, axis=1)
    crop_w = tf.gather(crop_w, first[:, None], batch_dims=1)[:, 0]
    crop_h = tf.gather(crop_h, first[:, None], batch_dims=1)[:, 0]

    # Fallback (as torchvision's RandomResizedCrop): whole image if its aspect is in range,
    # else the largest central box with the aspect clipped into range.
    clipped = tf.clip_by_value(image_aspect, ratio_lo, ratio_hi)
    fallback_w = tf.minimum(1.0, clipped / image_aspect)
    fallback_h = tf.minimum(1.0, image_aspect / clipped)
    crop_w = tf.where(any_fits, crop_w, fallback_w)
    crop_h = tf.where(any_fits, crop_h, fallback_h)

    offset_y = _utils.uniform_per_image(_utils.fold_seed(seed, 2), batch, 0.0, 1.0)
    offset_x = _utils.uniform_per_image(_utils.fold_seed(seed, 3), batch, 0.0, 1.0)
    centre = tf.fill(tf.shape(offset_y), 0.5)
    offset_y = tf.where(any_fits, offset_y, centre)
    offset_x = tf.where(any_fits, offset_x, centre)
    y1 = offset_y * (1.0 - crop_h)
    x1 = offset_x * (1.0 - crop_w)
    return tf.stack([y1, x1, y1 + crop_h, x1 + crop_w], axis=1)


def _sample_coordinates(start, end, size, out_size):
    """Where `tf.image.crop_and_resize` samples along one axis, and which samples lie inside the image.

    For output index i of a crop of S > 1 samples: start * (size - 1) + i * (end - start) * (size - 1) / (S - 1);
    for S == 1 the centre 0.5 * (start + end) * (size - 1). The float32 operations are done in the same
    order as TensorFlow's CPU kernel, so the positions (and the interpolation weights) match it.

    Args:
        start: float32 [B] normalised box start (y1 or x1).
        end: float32 [B] normalised box end (y2 or x2).
        size: image side in pixels along this axis (Python int or int32 scalar tensor).
        out_size: S, a Python int.

    Returns:
        (low, high, lerp, inside): int32 [B, S] pixel indices floor / ceil of each position (clamped into
        the image), float32 [B, S] fractional part, bool [B, S] whether the position is inside [0, size - 1].
    """
    last = tf.cast(size - 1, tf.float32)
    start, end = start[:, None], end[:, None]
    if out_size > 1:
        scale = (end - start) * last / float(out_size - 1)
        position = start * last + tf.range(out_size, dtype=tf.float32)[None, :] * scale
    else:
        position = 0.5 * (start + end) * last
    inside = (position >= 0.0) & (position <= last)
    low_float = tf.floor(position)
    lerp = position - low_float
    top = tf.cast(size - 1, tf.int32)
    low = tf.clip_by_value(tf.cast(low_float, tf.int32), 0, top)
    high = tf.clip_by_value(tf.cast(tf.math.ceil(position), tf.int32), 0, top)
    return low, high, lerp, inside


def crop_and_resize_by_gathers(images, boxes, image_size):
    """`tf.image.crop_and_resize` of box b from image b, built from gathers so that XLA compiles it.

    The same numbers as `tf.image.crop_and_resize(images, boxes, range(B), [S, S], method="bilinear")`:
    its sample positions, its interpolation order and its extrapolation value 0 for positions outside the
    image. Eagerly the float32 operations are TF's, so the results are equal; compiled, XLA may fuse
    multiply-adds (a few ulps). Separable: each output column is first interpolated between its left and
    right input columns on every input row, then each output row between its top and bottom rows of that
    -- TF's `top + (bottom - top) * y_lerp` of the two horizontal lerps. Augmentation runs outside the
    gradient tape, so no gradient is needed (tf.gather would give one for the images; none flows to the
    boxes).

    Args:
        images: float tensor [B, H, W, C].
        boxes: float tensor [B, 4] of normalised (y1, x1, y2, x2); y2 < y1 (x2 < x1) flips the crop.
        image_size: output side length S (Python int).

    Returns:
        float32 tensor [B, S, S, C], not clipped.
    """
    images = _utils.check_images(images)
    image_size = _utils.check_positive_int("image_size", image_size)
    boxes = tf.cast(tf.convert_to_tensor(boxes), tf.float32)
    height, width = _utils.image_hw(images)
    top, bottom, y_lerp, y_inside = _sample_coordinates(boxes[:, 0], boxes[:, 2], height, image_size)
    left, right, x_lerp, x_inside = _sample_coordinates(boxes[:, 1], boxes[:, 3], width, image_size)
    # [B, H, W, C] -> [B, H, S, C]: horizontal lerp between the left and right columns, on every row.
    left_columns = tf.gather(images, left, axis=2, batch_dims=1)
    right_columns = tf.gather(images, right, axis=2, batch_dims=1)
    rows = left_columns + (right_columns - left_columns) * x_lerp[:, None, :, None]
    # [B, H, S, C] -> [B, S, S, C]: vertical lerp between the top and bottom rows.
    top_rows = tf.gather(rows, top, axis=1, batch_dims=1)
    bottom_rows = tf.gather(rows, bottom, axis=1, batch_dims=1)
    out = top_rows + (bottom_rows - top_rows) * y_lerp[:, :, None, None]
    inside = y_inside[:, :, None, None] & x_inside[:, None, :, None]
    return tf.where(inside, out, tf.zeros_like(out))


def crop_and_resize_boxes(images, boxes, image_size):
    """Crops box b from image b and resizes it to image_size x image_size (bilinear, one batched op).

    `tf.image.crop_and_resize`, except inside an XLA compilation (`jit_compile=True`, TPUs), where that
    op has no kernel and `crop_and_resize_by_gathers` computes the same numbers instead. TF's kernel is
    kept elsewhere because it is faster than the gathers without XLA (B=256, 32 -> 32 px on 2 CPU cores:
    7 ms against 20 ms; under XLA the gathers take 2.6 ms).

    Args:
        images: float tensor [B, H, W, C].
        boxes: float32 tensor [B, 4] of normalised (y1, x1, y2, x2); samples outside the image are 0.
        image_size: output side length S.

    Returns:
        float32 tensor [B, S, S, C] in [0, 1] (bilinear interpolation).
    """
    images = _utils.check_images(images)
    image_size = _utils.check_positive_int("image_size", image_size)
    boxes = tf.cast(tf.convert_to_tensor(boxes), tf.float32)
    if _utils.compiling_with_xla():
        out = crop_and_resize_by_gathers(images, boxes, image_size)
    else:
        box_indices = tf.range(tf.shape(boxes)[0], dtype=tf.int32)
        out = tf.image.crop_and_resize(images, boxes, box_indices, [image_size, image_size], method="bilinear")
    # Bilinear weights are convex, but keep the [0, 1] contract exact against float round-off.
    out = tf.clip_by_value(out, 0.0, 1.0)
    out.set_shape([images.shape[0], image_size, image_size, images.shape[-1]])
    return out


def random_resized_crop(
    images, seed, image_size, area_range=(0.08, 1.0), aspect_range=(3 / 4, 4 / 3), num_candidates=10
):
    """Random resized crop with per-image boxes (SimCLR appendix A.1).

    Args:
        images: float tensor [B, H, W, C] in [0, 1].
        seed: integer tensor of shape [2].
        image_size: output side length S > 0.
        area_range: (min, max) crop area fraction, inside (0, 1].
        aspect_range: (min, max) crop aspect ratio width / height, log-uniform.
        num_candidates: vectorised retries per image before the central fallback.

    Returns:
        float32 tensor [B, S, S, C] in [0, 1].
    """
    images = _utils.check_images(images)
    image_size = _utils.check_positive_int("image_size", image_size)
    height, width = _utils.image_hw(images)
    boxes = sample_crop_boxes(
        seed, _utils.batch_size(images), height, width, area_range, aspect_range, num_candidates
    )
    return crop_and_resize_boxes(images, boxes, image_size)


def flip_left_right(images, mask):
    """Mirrors the images whose mask entry is True. images [B, H, W, C], mask bool [B]."""
    images = _utils.check_images(images)
    return _utils.where_per_image(mask, tf.reverse(images, axis=[2]), images)


def random_flip_left_right(images, seed, prob=0.5):
    """Horizontal flip of each image independently with probability `prob`.

    Args:
        images: float tensor [B, H, W, C].
        seed: integer tensor of shape [2].
        prob: flip probability in [0, 1].

    Returns:
        Tensor like `images`.
    """
    prob = _utils.check_probability("prob", prob)
    images = _utils.check_images(images)
    mask = _utils.bernoulli_per_image(_utils.as_seed(seed), _utils.batch_size(images), prob)
    return flip_left_right(images, mask)
