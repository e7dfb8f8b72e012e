"""Batched colour augmentations with per-image parameters.

Reference: Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations"
(SimCLR, ICML 2020), appendix A: colour jitter of strength s (brightness 0.8s, contrast 0.8s,
saturation 0.8s, hue 0.2s) applied with probability 0.8 in a random order, then random
grayscale with probability 0.2.

The `adjust_*` functions are deterministic and take one parameter per image ([B] tensors); the
`random_*` functions draw those parameters statelessly from a seed and call them.
"""
import tensorflow as tf

from tfssl import rng
from tfssl.augment import _utils

# ITU-R BT.601 luma weights, the ones tf.image.rgb_to_grayscale uses.
LUMA_WEIGHTS = (0.2989, 0.5870, 0.1140)

# Order in which random_color_jitter indexes its four ops (a per-image permutation of these).
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")


def _per_image(values):
    """Reshapes a [B] parameter to [B, 1, 1, 1] so it broadcasts over one image."""
    return tf.reshape(tf.cast(values, tf.float32), [-1, 1, 1, 1])


def luma(images):
    """ITU-R 601 luma of RGB images: [B, H, W, 3] -> [B, H, W, 1]."""
    images = _utils.check_images(images, channels=(3,))
    return tf.reduce_sum(images * tf.constant(LUMA_WEIGHTS, images.dtype), axis=-1, keepdims=True)


def adjust_brightness(images, delta):
    """Adds delta[b] to every pixel of image b (as tf.image.adjust_brightness, per image).

    Args:
        images: float tensor [B, H, W, C].
        delta: float tensor [B].

    Returns:
        Tensor like `images` (not clipped).
    """
    images = _utils.check_images(images)
    return images + _per_image(delta)


def adjust_contrast(images, factor):
    """Scales each channel's deviation from its per-image mean by factor[b] (tf.image.adjust_contrast).

    Args:
        images: float tensor [B, H, W, C].
        factor: float tensor [B], >= 0.

    Returns:
        Tensor like `images` (not clipped).
    """
    images = _utils.check_images(images)
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    return mean + _per_image(factor) * (images - mean)


def adjust_saturation(images, factor):
    """Blends each RGB image with its luma gray: gray + factor[b] * (image - gray).

    factor 0 gives the ITU-R 601 gray image, 1 the input, > 1 more saturated colours. (This is
    the blend form of saturation, as in torchvision; tf.image.adjust_saturation instead scales S
    in HSV, whose zero-saturation gray is max(R, G, B) rather than luma.)

    Args:
        images: float tensor [B, H, W, 3].
        factor: float tensor [B], >= 0.

    Returns:
        Tensor like `images` (not clipped).
    """
    gray = luma(images)
    return gray + _per_image(factor) * (images - gray)


def adjust_hue(images, delta):
    """Rotates the hue of image b by delta[b] turns (as tf.image.adjust_hue, per image).

    Args:
        images: float tensor [B, H, W, 3] in [0, 1].
        delta: float tensor [B]; hue is cyclic, so any real value is valid.

    Returns:
        Tensor like `images`.
    """
    images = _utils.check_images(images, channels=(3,))
    hsv = tf.image.rgb_to_hsv(images)
    hue = hsv[..., :1] + _per_image(delta)
    hue = hue - tf.floor(hue)  # wrap into [0, 1)
    return tf.image.hsv_to_rgb(tf.concat([hue, hsv[..., 1:]], axis=-1))


def to_grayscale(images):
    """ITU-R 601 gray version of RGB images, tiled back to 3 channels: [B, H, W, 3]."""
    return tf.tile(luma(images), [1, 1, 1, 3])


# The op of each name in JITTER_OPS, in that order.
_ADJUSTS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def jitter_ranges(strength):
    """SimCLR jitter parameter ranges for strength s.

    Args:
        strength: colour jitter strength s >= 0.

    Returns:
        dict op name -> (low, high) of the per-image parameter: brightness delta in
        [-0.8s, 0.8s], contrast and saturation factors in [max(0, 1-0.8s), 1+0.8s],
        hue delta in [-min(0.2s, 0.5), min(0.2s, 0.5)] turns.
    """
    s = _utils.check_non_negative("color_jitter_strength", strength)
    hue = min(0.2 * s, 0.5)  # half a turn already reaches every hue
    return {
        "brightness": (-0.8 * s, 0.8 * s),
        "contrast": (max(0.0, 1.0 - 0.8 * s), 1.0 + 0.8 * s),
        "saturation": (max(0.0, 1.0 - 0.8 * s), 1.0 + 0.8 * s),
        "hue": (-hue, hue),
    }


def _random_adjust(adjust, images, seed, low, high):
    images = _utils.check_images(images)
    params = _utils.uniform_per_image(_utils.as_seed(seed), _utils.batch_size(images), low, high)
    return tf.clip_by_value(adjust(images, params), 0.0, 1.0)


def random_brightness(images, seed, max_delta):
    """Adds a per-image delta ~ U[-max_delta, max_delta], then clips to [0, 1]."""
    max_delta = _utils.check_non_negative("max_delta", max_delta)
    return _random_adjust(adjust_brightness, images, seed, -max_delta, max_delta)


def random_contrast(images, seed, lower, upper):
    """Per-image contrast factor ~ U[lower, upper] (0 <= lower <= upper), then clips to [0, 1]."""
    lower, upper = _utils.check_range("contrast range", (lower, upper), low=0.0)
    return _random_adjust(adjust_contrast, images, seed, lower, upper)


def random_saturation(images, seed, lower, upper):
    """Per-image saturation factor ~ U[lower, upper] (0 <= lower <= upper), then clips to [0, 1]."""
    lower, upper = _utils.check_range("saturation range", (lower, upper), low=0.0)
    return _random_adjust(adjust_saturation, images, seed, lower, upper)


def random_hue(images, seed, max_delta):
    """Per-image hue rotation ~ U[-max_delta, max_delta] turns (0 <= max_delta <= 0.5)."""
    max_delta = _utils.check_non_negative("max_delta", max_delta)
    if max_delta > 0.5:
        raise ValueError(f"hue max_delta must be in [0, 0.5] turns, got {max_delta}")
    return _random_adjust(adjust_hue, images, seed, -max_delta, max_delta)


def sample_jitter_params(seed, batch, strength=1.0, prob=0.8):
    """Draws SimCLR colour-jitter parameters, one set per image.

    Args:
        seed: integer tensor of shape [2].
        batch: number of images B (Python int or scalar int tensor).
        strength: jitter strength s >= 0 (SimCLR uses 1.0 on ImageNet, 0.5 on CIFAR-10).
        prob: probability in [0, 1] that an image is jittered at all.

    Returns:
        dict with float32 [B] "brightness", "contrast", "saturation", "hue" (ranges from
        `jitter_ranges`), int32 [B, 4] "order" (a uniformly random permutation of JITTER_OPS
        indices per image; order[b, p] is the op image b gets at position p) and bool [B] "apply".
    """
    ranges = jitter_ranges(strength)
    prob = _utils.check_probability("jitter_prob", prob)
    params = {
        name: _utils.uniform_per_image(_utils.fold_seed(seed, i), batch, *ranges[name])
        for i, name in enumerate(JITTER_OPS)
    }
    # argsort of i.i.d. uniforms is a uniformly random permutation per image.
    keys = rng.uniform([batch, len(JITTER_OPS)], _utils.fold_seed(seed, len(JITTER_OPS)))
    params["order"] = tf.cast(tf.argsort(keys, axis=1), tf.int32)
    params["apply"] = _utils.bernoulli_per_image(_utils.fold_seed(seed, len(JITTER_OPS) + 1), batch, prob)
    return params


def apply_color_jitter(images, params):
    """Applies per-image jitter parameters in each image's own op order, clipping after each op.

    At each of the 4 positions the batch is split by the op each image's permutation names there
    (tf.dynamic_partition), each op runs once on its group, and the groups are stitched back in
    order. Compared with running all four ops on every image and selecting per image with
    tf.where, this does a quarter of the arithmetic (measured ~4-7x faster at 224 px, where the
    HSV conversion of hue dominates), still without a per-image loop. Inside an XLA compilation,
    where groups of data-dependent size cannot exist, the select form (`apply_color_jitter_by_select`)
    is used instead; it gives the same numbers. Clipping to [0, 1] after every op follows the SimCLR
    reference implementation.

    Args:
        images: float tensor [B, H, W, 3] in [0, 1].
        params: dict as returned by `sample_jitter_params`.

    Returns:
        float32 tensor [B, H, W, 3] in [0, 1]; images with apply=False are returned unchanged.
    """
    images = _utils.check_images(images, channels=(3,))
    if _utils.compiling_with_xla():
        return apply_color_jitter_by_select(images, params)
    values = [params[name] for name in JITTER_OPS]
    order = tf.cast(params["order"], tf.int32)
    skip = len(JITTER_OPS)  # extra pass-through group for images that are not jittered
    image_ids = tf.range(tf.shape(images)[0], dtype=tf.int32)

    jittered = images
    for position in range(len(JITTER_OPS)):
        groups = tf.where(params["apply"], order[:, position], skip)
        pixels = tf.dynamic_partition(jittered, groups, skip + 1)
        ids = tf.dynamic_partition(image_ids, groups, skip + 1)
        outputs = [
            tf.clip_by_value(adjust(group, tf.gather(value, group_ids)), 0.0, 1.0)
            for adjust, value, group, group_ids in zip(_ADJUSTS, values, pixels, ids)
        ]
        jittered = tf.dynamic_stitch(ids, outputs + [pixels[skip]])
    jittered.set_shape(images.shape)
    return jittered


def apply_color_jitter_by_select(images, params):
    """`apply_color_jitter` with static shapes only, so that XLA compiles it.

    At each of the 4 positions every op runs on the whole batch and each image keeps the output of the
    op its permutation names there (tf.where); every op is per image, so this gives the same numbers as
    the grouped form, for four times the arithmetic.

    Args:
        images: float tensor [B, H, W, 3] in [0, 1].
        params: dict as returned by `sample_jitter_params`.

    Returns:
        float32 tensor [B, H, W, 3] in [0, 1]; images with apply=False are returned unchanged.
    """
    images = _utils.check_images(images, channels=(3,))
    order = tf.cast(params["order"], tf.int32)
    jittered = images
    for position in range(len(JITTER_OPS)):
        chosen = jittered
        for index, (name, adjust) in enumerate(zip(JITTER_OPS, _ADJUSTS)):
            here = params["apply"] & tf.equal(order[:, position], index)
            output = tf.clip_by_value(adjust(jittered, params[name]), 0.0, 1.0)
            chosen = _utils.where_per_image(here, output, chosen)
        jittered = chosen
    return jittered


def random_color_jitter(images, seed, strength=1.0, prob=0.8):
    """SimCLR colour jitter: 4 ops in a random order per image, applied with probability `prob`.

    Brightness 0.8s, contrast 0.8s, saturation 0.8s, hue 0.2s (SimCLR appendix A); every image
    draws its own parameters, op order and apply coin (see `sample_jitter_params`,
    `apply_color_jitter`).

    Args:
        images: float tensor [B, H, W, 3] in [0, 1].
        seed: integer tensor of shape [2].
        strength: jitter strength s >= 0.
        prob: probability in [0, 1] that an image is jittered at all.

    Returns:
        float32 tensor [B, H, W, 3] in [0, 1].
    """
    images = _utils.check_images(images, channels=(3,))
    params = sample_jitter_params(seed, _utils.batch_size(images), strength, prob)
    return apply_color_jitter(images, params)


def random_grayscale(images, seed, prob=0.2):
    """Replaces each RGB image by its 3-channel luma gray with probability `prob`.

    Args:
        images: float tensor [B, H, W, 3].
        seed: integer tensor of shape [2].
        prob: probability in [0, 1].

    Returns:
        Tensor like `images`.
    """
    prob = _utils.check_probability("grayscale_prob", prob)
    images = _utils.check_images(images, channels=(3,))
    mask = _utils.bernoulli_per_image(_utils.as_seed(seed), _utils.batch_size(images), prob)
    return _utils.where_per_image(mask, to_grayscale(images), images)


def solarize(images, threshold=0.5):
    """Inverts every pixel value at or above `threshold`: x -> x if x < threshold else 1 - x.

    BYOL's solarisation (Grill et al. 2020, appendix B, table 6) on images in [0, 1]; it acts on each
    channel value independently, like PIL's ImageOps.solarize.

    Args:
        images: float tensor [B, H, W, C] in [0, 1].
        threshold: inversion threshold in [0, 1].

    Returns:
        float32 tensor like `images`, still in [0, 1].
    """
    threshold = _utils.check_probability("solarize threshold", threshold)
    images = _utils.check_images(images)
    return tf.where(images < threshold, images, 1.0 - images)


def random_solarize(images, seed, prob=0.2, threshold=0.5):
    """Solarizes each image with probability `prob` (one Bernoulli draw per image).

    Args:
        images: float tensor [B, H, W, C] in [0, 1].
        seed: integer tensor of shape [2].
        prob: probability in [0, 1] (BYOL: 0 for the first view, 0.2 for the second).
        threshold: inversion threshold in [0, 1].

    Returns:
        float32 tensor like `images`.
    """
    prob = _utils.check_probability("solarize_prob", prob)
    images = _utils.check_images(images)
    mask = _utils.bernoulli_per_image(_utils.as_seed(seed), _utils.batch_size(images), prob)
    return _utils.where_per_image(mask, solarize(images, threshold), images)
