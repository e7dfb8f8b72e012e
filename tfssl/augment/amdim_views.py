"""AMDIM's views, and YADIM's union of the AMDIM and CPC pipelines on whole images.

Bachman, Hjelm, Buchwalter 2019 (AMDIM) and the authors' `datasets.py` (`TransformsC10`, `TransformsSTL10`):
CIFAR views are a random horizontal flip, a random translation by up to 4 px whose uncovered border is
filled by reflection (`RandomTranslateWithReflect(4)`, p 0.8), colour jitter (brightness, contrast,
saturation 0.4, hue 0.2; p 0.8) and grayscale (p 0.25); the 64 px STL-10 views replace the translation by
a random resized crop (area 0.3-1, aspect 0.7-1.4). Falcon & Cho 2020 (YADIM) apply the union of the CPC
and AMDIM transforms to whole images; `AMDIMAugment(color_drop_prob=...)` adds CPC's colour dropping
(`tfssl.augment.patches.drop_color_channels`) as the last stage.

Every parameter is drawn per image from the batch seed (stateless Philox), so the same call runs in
`tf.data` (host), inside `train_step` (device), under XLA and per replica, like `SimCLRAugment`.
Differences from the reference: brightness is an additive delta in [-0.4, 0.4] (the repo's
`adjust_brightness`, as SimCLR's TF code) where torchvision multiplies by a factor in [0.6, 1.4]; each view
draws its own flip, where the reference flips the image once before making both views.
"""
import numpy as np
import tensorflow as tf

from tfssl import rng
from tfssl.augment import _utils
from tfssl.augment.color import JITTER_OPS, apply_color_jitter, random_grayscale
from tfssl.augment.patches import drop_color_channels
from tfssl.augment.preprocess import center_resize, to_float_rgb
from tfssl.augment.simclr import _fold_replica_id
from tfssl.augment.spatial import random_flip_left_right, random_resized_crop

# Stage salts: fixed, so that turning one stage off leaves the others' draws unchanged.
_CROP, _FLIP, _TRANSLATE, _JITTER, _GRAY, _DROP = range(6)


def reflect_translate(images, shifts, max_shift):
    """Shifts image b by `shifts[b] = (dy, dx)` pixels, the uncovered border filled by reflection.

    `out[b, y, x] = R[b, y - dy, x - dx]` where R is the image extended by mirror reflection without
    repeating the edge pixel (numpy's "reflect" mode), as AMDIM's `RandomTranslateWithReflect` pastes
    flipped copies of the image around it.

    Args:
        images: float `[B, H, W, C]`.
        shifts: int `[B, 2]`, each entry in [-max_shift, max_shift].
        max_shift: the largest shift m, 0 <= m < min(H, W).

    Returns:
        Tensor like `images`.
    """
    images = _utils.check_images(images)
    m = int(max_shift)
    height, width = images.shape[1], images.shape[2]
    if m < 0 or (height is not None and m >= height) or (width is not None and m >= width):
        raise ValueError(f"max_shift must be in [0, image side), got {max_shift!r} for shape {images.shape}")
    if m == 0:
        return images
    shifts = tf.clip_by_value(tf.cast(shifts, tf.int32), -m, m)
    padded = tf.pad(images, [[0, 0], [m, m], [m, m], [0, 0]], mode="REFLECT")
    h, w = tf.shape(images)[1], tf.shape(images)[2]
    rows = tf.range(h)[None, :] + m - shifts[:, :1]  # [B, H] rows of the padded image
    cols = tf.range(w)[None, :] + m - shifts[:, 1:]
    out = tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
    out.set_shape(images.shape)
    return out


def random_reflect_translate(images, seed, max_shift=4, prob=0.8):
    """With probability `prob` per image, `reflect_translate` by (dy, dx) uniform on {-m..m}^2, else unchanged."""
    prob = _utils.check_probability("translate_prob", prob)
    images = _utils.check_images(images)
    batch, seed = _utils.batch_size(images), _utils.as_seed(seed)
    u = rng.uniform([batch, 2], _utils.fold_seed(seed, 0))
    shifts = tf.minimum(tf.cast(tf.floor(u * (2 * max_shift + 1)), tf.int32), 2 * max_shift) - max_shift
    apply = _utils.bernoulli_per_image(_utils.fold_seed(seed, 1), batch, prob)
    return reflect_translate(images, shifts * tf.cast(apply, tf.int32)[:, None], max_shift)


def jitter_params(seed, batch, jitter, prob):
    """Colour-jitter parameters (the dict of `tfssl.augment.color.sample_jitter_params`) from torchvision-style
    strengths `jitter = (brightness, contrast, saturation, hue)`: delta U[-b, b], factors U[max(0, 1-c), 1+c],
    hue U[-h, h] turns; a random op order per image; applied with probability `prob`."""
    b, c, s, h = (float(x) for x in jitter)
    ranges = {"brightness": (-b, b), "contrast": (max(0.0, 1 - c), 1 + c), "saturation": (max(0.0, 1 - s), 1 + s),
              "hue": (-h, h)}
    params = {name: _utils.uniform_per_image(_utils.fold_seed(seed, i), batch, *ranges[name])
              for i, name in enumerate(JITTER_OPS)}
    keys = rng.uniform([batch, len(JITTER_OPS)], _utils.fold_seed(seed, len(JITTER_OPS)))
    params["order"] = tf.cast(tf.argsort(keys, axis=1), tf.int32)
    params["apply"] = _utils.bernoulli_per_image(_utils.fold_seed(seed, len(JITTER_OPS) + 1), batch, prob)
    return params


class AMDIMAugment:
    """AMDIM's per-image view: [resized crop] -> flip -> reflect-translate -> jitter -> grayscale -> [colour drop].

    Args:
        image_size: output side S.
        crop_area: None (no crop: the image is resized to S if needed, AMDIM's CIFAR views) or (min, max)
            area fractions of a random resized crop (STL-10: (0.3, 1.0)).
        crop_aspect: (min, max) aspect ratio of the crop (0.7, 1.4).
        flip: random horizontal flip, p 0.5.
        translate: largest reflect-translation m in pixels (4 on CIFAR; 0: off).
        translate_prob: probability of translating (0.8).
        jitter: (brightness, contrast, saturation, hue) strengths ((0.4, 0.4, 0.4, 0.2)).
        jitter_prob: probability of jittering (0.8).
        grayscale_prob: probability of grayscale (0.25).
        color_drop_prob: probability of CPC's colour dropping (keep one random channel; 0 in AMDIM).
    """

    def __init__(self, image_size, crop_area=None, crop_aspect=(0.7, 1.4), flip=True, translate=4,
                 translate_prob=0.8, jitter=(0.4, 0.4, 0.4, 0.2), jitter_prob=0.8, grayscale_prob=0.25,
                 color_drop_prob=0.0):
        self.image_size = _utils.check_positive_int("image_size", image_size)
        self.crop_area = None if crop_area is None else tuple(
            _utils.check_range("crop_area", crop_area, low=0.0, high=1.0, low_open=True))
        self.crop_aspect = tuple(_utils.check_range("crop_aspect", crop_aspect, low=0.0, low_open=True))
        if not isinstance(flip, (bool, np.bool_)):
            raise ValueError(f"flip must be True or False, got {flip!r}")
        self.flip = bool(flip)
        if isinstance(translate, bool) or not isinstance(translate, (int, np.integer)) or not 0 <= translate < image_size:
            raise ValueError(f"translate must be an int in [0, image_size) pixels, got {translate!r}")
        self.translate = int(translate)
        self.translate_prob = _utils.check_probability("translate_prob", translate_prob)
        jitter = tuple(float(x) for x in jitter)
        if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5:
            raise ValueError(f"jitter must be (brightness, contrast, saturation, hue) >= 0 with hue <= 0.5, got {jitter!r}")
        self.jitter = jitter
        self.jitter_prob = _utils.check_probability("jitter_prob", jitter_prob)
        self.grayscale_prob = _utils.check_probability("grayscale_prob", grayscale_prob)
        self.color_drop_prob = _utils.check_probability("color_drop_prob", color_drop_prob)

    def __call__(self, images, seed):
        """One view of every image: float32 `[B, S, S, 3]` in [0, 1] from `[B, H, W, C]` and a `[2]` seed."""
        images = _utils.check_images(to_float_rgb(images), channels=(3,))
        seed = _fold_replica_id(_utils.as_seed(seed))
        batch = _utils.batch_size(images)
        if self.crop_area is not None:
            views = random_resized_crop(images, _utils.fold_seed(seed, _CROP), self.image_size, self.crop_area,
                                        self.crop_aspect)
        elif images.shape[1] != self.image_size or images.shape[2] != self.image_size:
            views = center_resize(images, self.image_size)
        else:
            views = images
        if self.flip:
            views = random_flip_left_right(views, _utils.fold_seed(seed, _FLIP), 0.5)
        if self.translate and self.translate_prob > 0:
            views = random_reflect_translate(views, _utils.fold_seed(seed, _TRANSLATE), self.translate,
                                             self.translate_prob)
        if max(self.jitter) > 0 and self.jitter_prob > 0:
            views = apply_color_jitter(views, jitter_params(_utils.fold_seed(seed, _JITTER), batch, self.jitter,
                                                            self.jitter_prob))
        if self.grayscale_prob > 0:
            views = random_grayscale(views, _utils.fold_seed(seed, _GRAY), self.grayscale_prob)
        if self.color_drop_prob > 0:
            drop_seed = _utils.fold_seed(seed, _DROP)
            drop = _utils.bernoulli_per_image(_utils.fold_seed(drop_seed, 0), batch, self.color_drop_prob)
            channel = tf.minimum(tf.cast(tf.floor(rng.uniform([batch], _utils.fold_seed(drop_seed, 1)) * 3), tf.int32), 2)
            views = drop_color_channels(views, drop, channel)
        views = tf.clip_by_value(views, 0.0, 1.0)
        views.set_shape([images.shape[0], self.image_size, self.image_size, 3])
        return views

    def get_config(self):
        return {"image_size": self.image_size, "crop_area": self.crop_area, "crop_aspect": self.crop_aspect,
                "flip": self.flip, "translate": self.translate, "translate_prob": self.translate_prob,
                "jitter": self.jitter, "jitter_prob": self.jitter_prob, "grayscale_prob": self.grayscale_prob,
                "color_drop_prob": self.color_drop_prob}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


def _register():
    """Makes `AMDIMAugment` serialisable by `tfssl.augment.serialize_augment` (the `RECIPES` table)."""
    from tfssl.augment.views import RECIPES

    RECIPES.setdefault(AMDIMAugment.__name__, AMDIMAugment)


_register()

__all__ = ["AMDIMAugment", "jitter_params", "random_reflect_translate", "reflect_translate"]
