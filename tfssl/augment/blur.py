"""Batched Gaussian blur with a different sigma per image.

Reference: Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations"
(SimCLR, ICML 2020), appendix A: blur with probability 0.5, sigma uniform in [0.1, 2.0], kernel
size 10% of the image side; not used on CIFAR-10 (32 px).
"""
import tensorflow as tf

from tfssl.augment import _utils


def blur_kernel_size(image_size):
    """SimCLR's odd kernel size for an image side: 2 * ((image_size // 10) // 2) + 1.

    224 -> 23, 96 -> 9, 32 -> 3, < 20 -> 1 (identity).
    """
    image_size = _utils.check_positive_int("image_size", image_size)
    return 2 * ((image_size // 10) // 2) + 1


def gaussian_kernels(sigma, kernel_size):
    """Normalised 1-D Gaussian kernels, one per image.

    Args:
        sigma: float tensor [B] of standard deviations in pixels (> 0).
        kernel_size: odd Python int K.

    Returns:
        float32 tensor [B, K] whose rows sum to 1.
    """
    radius = kernel_size // 2
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    sigma = tf.cast(tf.reshape(sigma, [-1, 1]), tf.float32)
    weights = tf.exp(-tf.square(taps)[None, :] / (2.0 * tf.square(sigma)))
    return weights / tf.reduce_sum(weights, axis=1, keepdims=True)


def _depthwise_pass(folded, kernels, channels, vertical):
    """One separable pass over batch-folded images.

    Args:
        folded: [1, H', W', B*C] images with the batch folded into channels (already padded).
        kernels: [B, K] per-image kernels.
        channels: C, the channels per image.
        vertical: filter along H when True, along W otherwise.

    Returns:
        [1, H'', W'', B*C] after a VALID depthwise convolution.
    """
    size = tf.shape(kernels)[1]
    # Channel b*C + c of `folded` belongs to image b, so repeat each image's kernel C times.
    per_channel = tf.repeat(tf.transpose(kernels), channels, axis=1)  # [K, B*C]
    shape = [size, 1, -1, 1] if vertical else [1, size, -1, 1]
    return tf.nn.depthwise_conv2d(folded, tf.reshape(per_channel, shape), [1, 1, 1, 1], "VALID")


def gaussian_blur(images, sigma, kernel_size):
    """Blurs image b with a Gaussian of standard deviation sigma[b] pixels.

    The blur is separable (vertical then horizontal pass). All per-image kernels run in one
    depthwise convolution per pass by folding the batch into the channel axis, so there is no
    per-image loop. Borders are reflect-padded, so a constant image stays constant (zero padding
    would darken the edges).

    Args:
        images: float tensor [B, H, W, C].
        sigma: float tensor [B], > 0.
        kernel_size: odd Python int K >= 1 with K // 2 < min(H, W) (reflect padding limit).

    Returns:
        float32 tensor [B, H, W, C].

    Raises:
        ValueError: if kernel_size is not a positive odd int or too large for the images.
    """
    images = _utils.check_images(images)
    kernel_size = _utils.check_positive_int("kernel_size", kernel_size)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd so the kernel is centred, got {kernel_size}")
    radius = kernel_size // 2
    static_hw = [d for d in images.shape[1:3] if d is not None]
    if static_hw and radius >= min(static_hw):
        raise ValueError(f"kernel_size {kernel_size} too large for images {images.shape}: need K // 2 < H, W")
    if radius == 0:
        return images

    dims = tf.shape(images)
    b, h, w, c = dims[0], dims[1], dims[2], dims[3]
    channels = images.shape[-1] if images.shape[-1] is not None else c
    kernels = gaussian_kernels(sigma, kernel_size)

    folded = tf.reshape(tf.transpose(images, [1, 2, 0, 3]), [1, h, w, -1])
    folded = tf.pad(folded, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    folded = _depthwise_pass(folded, kernels, channels, vertical=True)
    folded = _depthwise_pass(folded, kernels, channels, vertical=False)
    out = tf.transpose(tf.reshape(folded, [h, w, b, c]), [2, 0, 1, 3])
    out.set_shape(images.shape)
    return out


def random_gaussian_blur(images, seed, prob=0.5, sigma_range=(0.1, 2.0), kernel_size=None):
    """Blurs each image with probability `prob`, sigma ~ U[sigma_range] drawn per image.

    Args:
        images: float tensor [B, H, W, C] in [0, 1].
        seed: integer tensor of shape [2].
        prob: blur probability in [0, 1].
        sigma_range: (min, max) standard deviation in pixels, min > 0.
        kernel_size: odd kernel size; None -> blur_kernel_size(H) (needs static H).

    Returns:
        float32 tensor [B, H, W, C] in [0, 1].
    """
    prob = _utils.check_probability("blur_prob", prob)
    lo, hi = _utils.check_range("sigma_range", sigma_range, low=0.0, low_open=True)
    images = _utils.check_images(images)
    if kernel_size is None:
        if images.shape[1] is None:
            raise ValueError("kernel_size must be given when the image height is not static")
        kernel_size = blur_kernel_size(images.shape[1])
    batch = _utils.batch_size(images)
    sigma = _utils.uniform_per_image(_utils.fold_seed(seed, 0), batch, lo, hi)
    blurred = tf.clip_by_value(gaussian_blur(images, sigma, kernel_size), 0.0, 1.0)
    apply = _utils.bernoulli_per_image(_utils.fold_seed(seed, 1), batch, prob)
    return _utils.where_per_image(apply, blurred, images)
