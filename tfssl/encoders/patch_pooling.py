"""Patch-grid representation for CPC: images -> patch grid (no augmentation) -> patch encoder -> grid mean.

Hénaff et al. 2019 (CPC v2) evaluate a linear classifier on the patch-feature grid pooled over space. This
wraps a patch encoder `[N, P, P, C] -> [N, D]` into an image model `[B, S, S, C] -> [B, D]` whose input is
the run's image side, so evaluation, export (a serving model with its preprocessing in front) and
fine-tuning take it like any other encoder; it shares the patch encoder's layers (and so its weights).
"""
import keras
import tensorflow as tf

from tfssl.augment.patches import flatten_patches, patch_geometry, patch_grid


@keras.saving.register_keras_serializable(package="tfssl")
class PatchGrid(keras.layers.Layer):
    """`[B, S, S, C]` -> the overlapping `grid` x `grid` patches, flattened to `[B * G * G, P, P, C]` (rows
    b, i, j in row-major order, as `tfssl.augment.flatten_patches`). No randomness: the evaluation view."""

    def __init__(self, grid=7, overlap=0.5, **kwargs):
        kwargs.setdefault("dtype", "float32")  # a pure gather: it must not round pixels under mixed precision
        super().__init__(**kwargs)
        self.grid, self.overlap = int(grid), float(overlap)

    def call(self, images):
        return flatten_patches(patch_grid(images, self.grid, self.overlap))

    def compute_output_shape(self, input_shape):
        patch, _ = patch_geometry(int(input_shape[1]), self.grid, self.overlap)
        batch = None if input_shape[0] is None else input_shape[0] * self.grid * self.grid
        return (batch, patch, patch, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "grid": self.grid, "overlap": self.overlap}


@keras.saving.register_keras_serializable(package="tfssl")
class GridMean(keras.layers.Layer):
    """`[B * G * G, D]` patch features -> `[B, D]`, the mean over each image's G * G patches."""

    def __init__(self, grid=7, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.grid = int(grid)

    def call(self, features):
        features = tf.cast(features, tf.float32)
        grouped = tf.reshape(features, [-1, self.grid * self.grid, features.shape[-1]])
        return tf.reduce_mean(grouped, axis=1)

    def compute_output_shape(self, input_shape):
        batch = None if input_shape[0] is None else input_shape[0] // (self.grid * self.grid)
        return (batch, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "grid": self.grid}


def patch_pooled_encoder(patch_encoder, image_size, grid=7, overlap=0.5, channels=3, name=None):
    """The image model `PatchGrid -> patch_encoder -> GridMean`, sharing `patch_encoder`'s weights.

    Args:
        patch_encoder: Keras model, patches `[N, P, P, channels]` (or any side) -> `[N, D]`.
        image_size: side S of the input images; must tile into the grid (`patch_geometry`).
        grid: patches per side G.
        overlap: fraction of a patch shared with its neighbour.
        channels: input channels C (3: the repo's export feeds RGB in [0, 1]).
        name: model name; default f"{patch_encoder.name}_grid_mean".

    Returns:
        A functional `keras.Model` `[B, S, S, C]` -> float32 `[B, D]`.

    Raises:
        ValueError: one line, when `image_size` has no exact patch grid.
    """
    patch_geometry(image_size, grid, overlap)  # one-line error naming the sides that tile
    images = keras.Input((image_size, image_size, channels), name="images")
    patches = PatchGrid(grid, overlap, name="patch_grid")(images)
    pooled = GridMean(grid, name="grid_mean")(patch_encoder(patches))
    return keras.Model(images, pooled, name=name or f"{patch_encoder.name}_grid_mean")
