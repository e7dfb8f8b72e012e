"""SimCLR view generator: crop -> flip -> colour jitter -> grayscale -> blur, per-image parameters.

Reference: Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations"
(SimCLR, ICML 2020), appendix A ("Data Augmentation Details").
"""
import numpy as np
import tensorflow as tf

from tfssl.augment import _utils
from tfssl.augment.blur import random_gaussian_blur
from tfssl.augment.color import jitter_ranges, random_color_jitter, random_grayscale
from tfssl.augment.preprocess import to_float_rgb
from tfssl.augment.spatial import random_flip_left_right, random_resized_crop

# Fixed salts per stage: turning one stage off leaves the other stages' draws unchanged.
_CROP, _FLIP, _JITTER, _GRAY, _BLUR = range(5)


class SimCLRAugment:
    """Random SimCLR view of a batch of images; every image draws its own parameters.

    All randomness is stateless and derived from the `seed` passed to `__call__`, so the same
    (images, seed) always gives the same views, in eager mode, `tf.data.Dataset.map` (on batches),
    `tf.function` (static or unknown batch size), `tf.function(jit_compile=True)` (XLA, equal up to
    float32 rounding) and `MirroredStrategy.run`. Two views of a batch
    are two calls with different seeds. Under a strategy with more than one replica, the replica
    id is folded into the seed so that replicas given the same seed still draw different
    parameters for their local images.

    Example (host side, a new seed per batch and view):

        aug = SimCLRAugment(32, color_jitter_strength=0.5)
        ds = ds.batch(256).enumerate().map(
            lambda step, batch: (aug(batch, tf.stack([step, 0])), aug(batch, tf.stack([step, 1]))))

    Args:
        image_size: output side length S > 0.
        color_jitter_strength: jitter strength s >= 0 (1.0 for ImageNet, 0.5 for CIFAR-10 in the
            paper); 0 disables jitter.
        blur: whether to apply Gaussian blur; None -> auto, on iff image_size > 32 (the paper
            does not blur CIFAR-10).
        crop_area: (min, max) crop area fraction, inside (0, 1].
        crop_aspect: (min, max) crop aspect ratio width / height, min > 0 (log-uniform).
        flip: whether to flip horizontally with probability 0.5.
        jitter_prob: probability in [0, 1] of applying colour jitter.
        grayscale_prob: probability in [0, 1] of converting to grayscale.
        blur_prob: probability in [0, 1] of blurring (when blur is on).

    Raises:
        ValueError: on any invalid argument, with a one-line message.
    """

    def __init__(
        self,
        image_size,
        color_jitter_strength=1.0,
        blur=None,
        crop_area=(0.08, 1.0),
        crop_aspect=(3 / 4, 4 / 3),
        flip=True,
        jitter_prob=0.8,
        grayscale_prob=0.2,
        blur_prob=0.5,
    ):
        self.image_size = _utils.check_positive_int("image_size", image_size)
        self.color_jitter_strength = _utils.check_non_negative("color_jitter_strength", color_jitter_strength)
        jitter_ranges(self.color_jitter_strength)  # validates the derived ranges too
        if blur is not None and not isinstance(blur, (bool, np.bool_)):
            raise ValueError(f"blur must be True, False or None (auto: on iff image_size > 32), got {blur!r}")
        self.blur = None if blur is None else bool(blur)
        self.crop_area = _utils.check_range("crop_area", crop_area, low=0.0, high=1.0, low_open=True)
        self.crop_aspect = _utils.check_range("crop_aspect", crop_aspect, low=0.0, low_open=True)
        if not isinstance(flip, (bool, np.bool_)):
            raise ValueError(f"flip must be True or False, got {flip!r}")
        self.flip = bool(flip)
        self.jitter_prob = _utils.check_probability("jitter_prob", jitter_prob)
        self.grayscale_prob = _utils.check_probability("grayscale_prob", grayscale_prob)
        self.blur_prob = _utils.check_probability("blur_prob", blur_prob)

    @property
    def blur_enabled(self):
        """Whether blur runs: `blur` if given, else image_size > 32."""
        return self.image_size > 32 if self.blur is None else self.blur

    def __call__(self, images, seed):
        """Draws one random view of every image.

        Args:
            images: float32 [B, H, W, C] in [0, 1] (uint8 also accepted), C in {1, 3};
                one channel is tiled to three.
            seed: int32/int64 tensor of shape [2].

        Returns:
            float32 tensor [B, image_size, image_size, 3] in [0, 1].
        """
        images = to_float_rgb(images)
        images = _utils.check_images(images, channels=(3,))
        seed = _fold_replica_id(_utils.as_seed(seed))

        views = random_resized_crop(
            images, _utils.fold_seed(seed, _CROP), self.image_size, self.crop_area, self.crop_aspect
        )
        if self.flip:
            views = random_flip_left_right(views, _utils.fold_seed(seed, _FLIP), 0.5)
        if self.color_jitter_strength > 0 and self.jitter_prob > 0:
            views = random_color_jitter(
                views, _utils.fold_seed(seed, _JITTER), self.color_jitter_strength, self.jitter_prob
            )
        if self.grayscale_prob > 0:
            views = random_grayscale(views, _utils.fold_seed(seed, _GRAY), self.grayscale_prob)
        if self.blur_enabled and self.blur_prob > 0:
            views = random_gaussian_blur(views, _utils.fold_seed(seed, _BLUR), self.blur_prob)
        views = tf.clip_by_value(views, 0.0, 1.0)
        views.set_shape([images.shape[0], self.image_size, self.image_size, 3])
        return views

    def get_config(self):
        """All constructor arguments (blur=None stays None, i.e. auto)."""
        return {
            "image_size": self.image_size,
            "color_jitter_strength": self.color_jitter_strength,
            "blur": self.blur,
            "crop_area": tuple(self.crop_area),
            "crop_aspect": tuple(self.crop_aspect),
            "flip": self.flip,
            "jitter_prob": self.jitter_prob,
            "grayscale_prob": self.grayscale_prob,
            "blur_prob": self.blur_prob,
        }

    @classmethod
    def from_config(cls, config):
        """Rebuilds an instance from `get_config()` output."""
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _fold_replica_id(seed):
    """Folds the replica id into the seed when running inside a multi-replica strategy.

    Without this, replicas handed the same seed would give their i-th local images identical
    parameters. Single-device runs are left untouched so eager and device results match.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return seed
    return _utils.fold_seed(seed, context.replica_id_in_sync_group)
