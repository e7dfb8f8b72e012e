"""Patch-grid views for CPC: an image -> a G x G grid of overlapping patches, each augmented on its own.

Hénaff et al. 2019, "Data-Efficient Image Recognition with Contrastive Predictive Coding" (CPC v2, its
description of the patch grid and of patch-based augmentation): a 256 px crop becomes a 7 x 7 grid of 64 px patches with 50% overlap (stride 32); every
patch is augmented independently ("color dropping" -- two of the three colour channels dropped, random
horizontal flips, spatial jitter, and in the full model further colour / geometric transforms).

Geometry. G patches of side P and stride s = P * (1 - overlap) tile a side S exactly when
(G - 1) * s + P = S with P and s integers. Writing 1 - overlap = a / q in lowest terms, that means
P = m * q, s = m * a and S = m * ((G - 1) * a + q) for an integer m >= 1: the sides that tile are the
multiples of (G - 1) * a + q (G + 1 at 50% overlap: 32 px -> 8 px patches, stride 4; 256 px -> 64 / 32).
Other sides raise a ValueError naming the nearest sides that do; `PatchGridAugment` resizes its input to
its `image_size` first, so a 28 px Fashion-MNIST image is made 32 px (a resize, never a silent crop).

Randomness. The repo's seed conventions hold: a batch seed `[2]` (`batch_seed` / `view_seed`) gives image
b the seed `rng.fold_in(seed, b)` (computed for the whole batch at once, see `image_seeds`), and every
random number of an image's patches comes from that image seed alone: one Philox draw
`rng.uniform([G * G, NUM_DRAWS], image_seed)` whose row p is patch p's parameters. Philox is a bijection of
its counter for a fixed key, so the patches of one image read disjoint parts of one stream (no two patches
share a draw), and an image's patches do not depend on the batch it sits in: augmenting one image on the
host (`augment_image` in `tf.data.Dataset.map`) and a batch on the device (`augment_batch` / `__call__`
inside a `tf.function`, also under XLA) give the same patches. Drawing is a cheap per-image `tf.map_fn`;
the image work runs batched over all B * G * G patches with the repo's deterministic ops.

Differences from the paper: spatial jitter is a crop of a fixed fraction of the patch side at a uniform
offset, resized back to P (the paper gives no numbers here; 0.875 = 56 / 64 is our default); dropped
colour channels are set to 0 (Doersch et al. 2015, whose "color dropping" CPC v2 uses, fill them with faint
Gaussian noise); optional whole-patch grayscale is an alternative for data whose channels are equal.
"""
import fractions
import math

import numpy as np
import tensorflow as tf

from tfssl import rng
from tfssl.augment import _utils
from tfssl.augment.color import to_grayscale
from tfssl.augment.preprocess import to_float_rgb
from tfssl.augment.simclr import _fold_replica_id
from tfssl.augment.spatial import crop_and_resize_boxes, flip_left_right

# Columns of each patch's row of draws. Fixed, so switching one stage off leaves the others' draws unchanged.
_FLIP, _DROP, _CHANNEL, _GRAY, _JITTER_Y, _JITTER_X = range(6)
NUM_DRAWS = 6


def _check_overlap(overlap):
    value = _utils._as_float("overlap", overlap)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"overlap must be a fraction in [0, 1) of the patch side, got {overlap!r}")
    # str() keeps 0.3 as 3/10 rather than the binary fraction nearest 0.3.
    return fractions.Fraction(str(value))


def tiling_unit(grid, overlap):
    """The image sides that a `grid` x `grid` patch grid with `overlap` tiles exactly are the multiples of this.

    Args:
        grid: patches per side G >= 1.
        overlap: fraction in [0, 1) of a patch shared with its neighbour.

    Returns:
        `(unit, q, a)`: sides S = m * unit, patches P = m * q, strides s = m * a (1 - overlap = a / q).
    """
    grid = _utils.check_positive_int("grid", grid)
    keep = 1 - _check_overlap(overlap)
    a, q = keep.numerator, keep.denominator
    return (grid - 1) * a + q, q, a


def patch_geometry(image_size, grid=7, overlap=0.5):
    """`(patch_size, stride)` of the `grid` x `grid` patches with `overlap` that tile `image_size` exactly.

    Args:
        image_size: image side S in pixels.
        grid: patches per side G.
        overlap: fraction in [0, 1) of a patch shared with the next one (0.5 in CPC v2).

    Returns:
        `(P, s)` Python ints with (G - 1) * s + P = S and s = P * (1 - overlap).

    Raises:
        ValueError: when no integer P, s tile S, naming the nearest sides that do.
    """
    image_size = _utils.check_positive_int("image_size", image_size)
    unit, q, a = tiling_unit(grid, overlap)
    if image_size % unit:
        below, above = (image_size // unit) * unit, (image_size // unit + 1) * unit
        nearest = f"{below} or {above}" if below else f"{above}"
        raise ValueError(f"a {image_size} px image has no exact {grid}x{grid} patch grid with overlap {overlap}: "
                         f"sides that tile are multiples of {unit} (e.g. {nearest}); resize the images first")
    m = image_size // unit
    return m * q, m * a


def patch_grid(images, grid=7, overlap=0.5):
    """The overlapping patch grid of every image (CPC v2's input view), by slicing; any dtype.

    Args:
        images: `[B, S, S, C]` with a static square side S that `patch_geometry` accepts.
        grid: patches per side G (7 in CPC v2).
        overlap: fraction of a patch shared with its neighbour (0.5 in CPC v2).

    Returns:
        `[B, G, G, P, P, C]`: `out[b, i, j] = images[b, i*s : i*s + P, j*s : j*s + P]`, i the row.

    Raises:
        ValueError: for a batch that is not rank 4 with a static square side, or a side with no exact grid.
    """
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4 or images.shape[1] is None or images.shape[1] != images.shape[2]:
        raise ValueError(f"patch_grid needs images [B, S, S, C] with a static square side S, got shape {images.shape}")
    patch, stride = patch_geometry(int(images.shape[1]), grid, overlap)
    # index[i, u] = row (or column) of pixel u of patch i.
    index = tf.constant(np.arange(grid)[:, None] * stride + np.arange(patch)[None, :], tf.int32)
    rows = tf.gather(images, index, axis=1)          # [B, G, P, S, C]
    cells = tf.gather(rows, index, axis=3)           # [B, G, P, G, P, C]
    return tf.transpose(cells, [0, 1, 3, 2, 4, 5])   # [B, G(i), G(j), P, P, C]


def flatten_patches(patches):
    """`[B, G, G, ...]` -> `[B * G * G, ...]` (row-major over b, i, j): one encoder call for every patch."""
    patches = tf.convert_to_tensor(patches)
    if patches.shape.rank is not None and patches.shape.rank < 3:
        raise ValueError(f"flatten_patches needs [B, G, G, ...], got shape {patches.shape}")
    tail = tf.shape(patches)[3:]
    flat = tf.reshape(patches, tf.concat([[-1], tail], axis=0))
    static = patches.shape
    if static.rank is not None:
        batch = None if None in static[:3] else static[0] * static[1] * static[2]
        flat.set_shape([batch] + static[3:].as_list())
    return flat


def unflatten_patches(flat, grid):
    """Inverse of `flatten_patches`: `[B * G * G, ...]` -> `[B, G, G, ...]` (e.g. pooled features -> z grid)."""
    grid = _utils.check_positive_int("grid", grid)
    flat = tf.convert_to_tensor(flat)
    if flat.shape.rank is not None and flat.shape.rank < 1:
        raise ValueError("unflatten_patches needs [B * G * G, ...], got a scalar")
    out = tf.reshape(flat, tf.concat([[-1, grid, grid], tf.shape(flat)[1:]], axis=0))
    batch = None if flat.shape[0] is None else flat.shape[0] // (grid * grid)
    out.set_shape([batch, grid, grid] + flat.shape[1:].as_list())
    return out


def image_seeds(seed, batch):
    """int64 `[B, 2]` per-image seeds of a batch: row b is exactly `rng.fold_in(seed, b)`.

    TF's fold_in is `[one Philox draw keyed by seed, data]`, so the whole batch takes one draw. Distinct
    rows within a batch; batches with distinct seeds share no image seed unless their 64-bit draws collide.

    Args:
        seed: the batch's integer seed `[2]`.
        batch: B, a Python int or scalar int tensor.
    """
    first = rng.fold_in(_utils.as_seed(seed), 0)[0]
    index = tf.range(tf.cast(batch, tf.int64), dtype=tf.int64)
    return tf.stack([tf.fill(tf.shape(index), first), index], axis=1)


def _check_image_seeds(seeds):
    seeds = tf.convert_to_tensor(seeds)
    if not seeds.dtype.is_integer or (seeds.shape.rank is not None and
                                      (seeds.shape.rank != 2 or seeds.shape[1] not in (None, 2))):
        raise ValueError(f"image seeds must be an integer tensor [B, 2] (one [2] seed per image), "
                         f"got {seeds.dtype.name} of shape {seeds.shape}")
    return tf.cast(seeds, tf.int64)


def draw_patch_uniforms(seeds, num_patches):
    """float32 `[B, num_patches, NUM_DRAWS]` in [0, 1): row p of image b from image b's seed alone.

    Image b's block is `rng.uniform([num_patches, NUM_DRAWS], seeds[b])`, i.e. patch p reads counter
    positions NUM_DRAWS * p ... NUM_DRAWS * p + NUM_DRAWS - 1 of that image's Philox stream.
    """
    seeds = _check_image_seeds(seeds)
    return tf.map_fn(lambda s: rng.uniform([num_patches, NUM_DRAWS], s), seeds,
                     fn_output_signature=tf.TensorSpec([num_patches, NUM_DRAWS], tf.float32))


def patch_params(uniforms, jitter_crop=0.875, flip=True, color_drop_prob=1.0, grayscale_prob=0.0):
    """Per-patch augmentation parameters from the draws of `draw_patch_uniforms` (flattened or not).

    Args:
        uniforms: float32 `[..., NUM_DRAWS]`.
        jitter_crop: side of the jitter crop as a fraction of the patch side, in (0, 1]; 1 disables jitter.
        flip: whether patches flip left-right with probability 0.5.
        color_drop_prob: probability that a patch keeps one random colour channel and drops the other two.
        grayscale_prob: probability that a patch is made gray (luma tiled to three channels).

    Returns:
        dict of flat `[N]`-leading tensors: "boxes" float32 `[N, 4]` (normalised y1, x1, y2, x2 of the
        jitter crop), "flip" bool `[N]`, "drop" bool `[N]`, "channel" int32 `[N]` (the kept channel),
        "gray" bool `[N]`.
    """
    jitter_crop = _utils._as_float("jitter_crop", jitter_crop)
    if not 0.0 < jitter_crop <= 1.0:
        raise ValueError(f"jitter_crop must be a fraction of the patch side in (0, 1], got {jitter_crop!r}")
    color_drop_prob = _utils.check_probability("color_drop_prob", color_drop_prob)
    grayscale_prob = _utils.check_probability("grayscale_prob", grayscale_prob)
    u = tf.reshape(uniforms, [-1, NUM_DRAWS])
    slack = 1.0 - jitter_crop
    y1, x1 = u[:, _JITTER_Y] * slack, u[:, _JITTER_X] * slack
    return {
        "boxes": tf.stack([y1, x1, y1 + jitter_crop, x1 + jitter_crop], axis=1),
        "flip": (u[:, _FLIP] < 0.5) if flip else tf.zeros_like(u[:, _FLIP], tf.bool),
        "drop": u[:, _DROP] < color_drop_prob,
        "channel": tf.minimum(tf.cast(tf.floor(u[:, _CHANNEL] * 3.0), tf.int32), 2),
        "gray": u[:, _GRAY] < grayscale_prob,
    }


def drop_color_channels(images, drop, channel):
    """Keeps only channel `channel[n]` of image n where `drop[n]` (the other two set to 0), else unchanged.

    Args:
        images: float `[N, H, W, 3]`.
        drop: bool `[N]`.
        channel: int32 `[N]` in {0, 1, 2}.
    """
    images = _utils.check_images(images, channels=(3,))
    keep = tf.one_hot(channel, 3, dtype=images.dtype)[:, None, None, :]
    return _utils.where_per_image(drop, images * keep, images)


def apply_patch_augment(patches, params, jitter=True):
    """Deterministic part of the pipeline: jitter crop + resize back, flip, colour drop, grayscale.

    Args:
        patches: float32 `[N, P, P, 3]` in [0, 1].
        params: dict from `patch_params` with N rows.
        jitter: whether to crop `params["boxes"]` and resize back to P.

    Returns:
        float32 `[N, P, P, 3]` in [0, 1].
    """
    patches = _utils.check_images(patches, channels=(3,))
    if jitter:
        patches = crop_and_resize_boxes(patches, params["boxes"], int(patches.shape[1]))
    patches = flip_left_right(patches, params["flip"])
    patches = drop_color_channels(patches, params["drop"], params["channel"])
    patches = _utils.where_per_image(params["gray"], to_grayscale(patches), patches)
    return tf.clip_by_value(patches, 0.0, 1.0)


class PatchGridAugment:
    """CPC v2's view: resize to `image_size`, cut a `grid` x `grid` patch grid, augment every patch on its own.

    Every patch draws its own jitter offset, flip, colour-drop coin and kept channel, and grayscale coin
    from its image's seed (module docstring). The same images and seeds give the same patches eagerly, in
    `tf.data` (per image or per batch), inside `tf.function`, under XLA (up to float rounding of the
    jitter's bilinear resize) and in `MirroredStrategy.run` (`__call__` folds the replica id into the batch
    seed there, as `SimCLRAugment` does).

    Args:
        image_size: side S the images are resized to before cutting; must tile exactly (32 for 8 px
            patches with stride 4 at G = 7, 50% overlap; 256 for the paper's 64 px patches).
        grid: patches per side G (7).
        overlap: fraction of a patch shared with its neighbour (0.5).
        jitter_crop: spatial-jitter crop side as a fraction of P, in (0, 1]; 1 turns jitter off.
        flip: random horizontal flip of each patch with probability 0.5.
        color_drop_prob: probability of dropping two of the three colour channels of a patch (1.0: every
            patch, as the paper's description reads).
        grayscale_prob: probability of making a patch gray.

    Raises:
        ValueError: one line, for any invalid argument.
    """

    def __init__(self, image_size, grid=7, overlap=0.5, jitter_crop=0.875, flip=True, color_drop_prob=1.0,
                 grayscale_prob=0.0):
        self.image_size = _utils.check_positive_int("image_size", image_size)
        self.grid = _utils.check_positive_int("grid", grid)
        self.overlap = _utils._as_float("overlap", overlap)
        self.patch_size, self.stride = patch_geometry(self.image_size, self.grid, self.overlap)
        crop = _utils._as_float("jitter_crop", jitter_crop)
        if not (math.isfinite(crop) and 0.0 < crop <= 1.0):
            raise ValueError(f"jitter_crop must be a fraction of the patch side in (0, 1], got {jitter_crop!r}")
        self.jitter_crop = crop
        if not isinstance(flip, (bool, np.bool_)):
            raise ValueError(f"flip must be True or False, got {flip!r}")
        self.flip = bool(flip)
        self.color_drop_prob = _utils.check_probability("color_drop_prob", color_drop_prob)
        self.grayscale_prob = _utils.check_probability("grayscale_prob", grayscale_prob)

    @property
    def num_patches(self):
        return self.grid * self.grid

    def _prepare(self, images):
        """to_float_rgb and resize to image_size (bilinear, the repo's XLA-safe crop_and_resize)."""
        images = _utils.check_images(to_float_rgb(images), channels=(3,))
        if images.shape[1] == self.image_size and images.shape[2] == self.image_size:
            return images
        # Box [0, 0, 1, 1] samples the corners exactly; for an input already S x S it copies it unchanged.
        boxes = tf.tile(tf.constant([[0.0, 0.0, 1.0, 1.0]]), [tf.shape(images)[0], 1])
        return crop_and_resize_boxes(images, boxes, self.image_size)

    def sample_params(self, seeds):
        """Parameters of every patch of every image: `patch_params` over `draw_patch_uniforms(seeds)`."""
        uniforms = draw_patch_uniforms(seeds, self.num_patches)
        return patch_params(uniforms, self.jitter_crop, self.flip, self.color_drop_prob, self.grayscale_prob)

    def augment_batch(self, images, seeds):
        """Augmented patch grids of a batch given one seed per image.

        Args:
            images: `[B, H, W, C]`, uint8 or float in [0, 1], C in {1, 3} (one channel is tiled to three).
            seeds: integer `[B, 2]`, row b the seed of image b.

        Returns:
            float32 `[B, G, G, P, P, 3]` in [0, 1].
        """
        images = self._prepare(images)
        patches = flatten_patches(patch_grid(images, self.grid, self.overlap))
        params = self.sample_params(seeds)
        out = apply_patch_augment(patches, params, jitter=self.jitter_crop < 1.0)
        out = unflatten_patches(out, self.grid)
        out.set_shape([images.shape[0], self.grid, self.grid, self.patch_size, self.patch_size, 3])
        return out

    def augment_image(self, image, seed):
        """One image `[H, W, C]` with its seed `[2]` -> `[G, G, P, P, 3]` (for a per-image `tf.data` map)."""
        image = tf.convert_to_tensor(image)
        if image.shape.rank is not None and image.shape.rank != 3:
            raise ValueError(f"augment_image takes one image [H, W, C], got shape {image.shape}; "
                             f"use augment_batch for a batch")
        return self.augment_batch(image[None], _utils.as_seed(seed)[None])[0]

    def __call__(self, images, seed):
        """Recipe interface of the repo (`recipe(images, batch_seed)`): per-image seeds via `image_seeds`.

        Args:
            images: `[B, H, W, C]`.
            seed: the batch's `[2]` seed (`batch_seed` / `view_seed`).

        Returns:
            float32 `[B, G, G, P, P, 3]`.
        """
        seed = _fold_replica_id(_utils.as_seed(seed))
        images = tf.convert_to_tensor(images)
        return self.augment_batch(images, image_seeds(seed, _utils.batch_size(images)))

    def get_config(self):
        return {"image_size": self.image_size, "grid": self.grid, "overlap": self.overlap,
                "jitter_crop": self.jitter_crop, "flip": self.flip, "color_drop_prob": self.color_drop_prob,
                "grayscale_prob": self.grayscale_prob}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
