"""SavedModel export of an encoder with its preprocessing inside (minimal form; serving kit to come).

The exported `serving_default` signature takes raw pixels, so a TF Serving client needs no tfssl code:
  images: float32 `[batch, height, width, channels]`, values 0..255, any size, 1 or 3 (or 4) channels
  -> {"embedding": float32 `[batch, D]`}
"""
import json
import os
import shutil
import uuid

import keras
import tensorflow as tf

from tfssl.augment import center_resize

META_FILE = "tfssl_export.json"


def raw_pixels_to_model_input(images, image_size):
    """Raw pixels (0..255, any size, 1/3/4 channels) -> the encoder's input, exactly as evaluation does.

    Args:
      images: `[B, H, W, C]` float or integer pixel values in [0, 255].
      image_size: side of the encoder's square input.

    Returns:
      float32 `[B, image_size, image_size, 3]` in [0, 1].
    """
    images = tf.convert_to_tensor(images)
    images = tf.cond(tf.shape(images)[-1] == 1,
                     lambda: tf.tile(images[..., :1], [1, 1, 1, 3]),
                     lambda: images[..., :3])
    images = tf.ensure_shape(images, [None, None, None, 3])
    if images.dtype != tf.uint8:
        images = tf.cast(tf.clip_by_value(tf.round(tf.cast(images, tf.float32)), 0.0, 255.0), tf.uint8)
    return center_resize(images, image_size)


def export_encoder(encoder, export_dir, image_size, metadata=None, overwrite=False):
    """Writes `encoder` as a SavedModel whose `serving_default` maps raw pixels to embeddings.

    Written to a temporary sibling directory and renamed into place when complete, so nothing ever
    sees a half-written export.

    Args:
      encoder: Keras model, `[B, S, S, 3]` in [0, 1] -> `[B, D]`.
      export_dir: destination directory (must not exist unless `overwrite`).
      image_size: S, the encoder's input side.
      metadata: JSON-serialisable dict stored as `assets.extra/tfssl_export.json`.
      overwrite: replace an existing `export_dir`.

    Returns:
      `export_dir`.
    """
    export_dir = os.path.abspath(export_dir)
    if os.path.exists(export_dir) and not overwrite:
        raise ValueError(f"{export_dir} already exists; choose a new --export_dir or pass --overwrite")

    def serve(images):
        return {"embedding": encoder(raw_pixels_to_model_input(images, image_size), training=False)}

    archive = keras.export.ExportArchive()
    archive.track(encoder)
    archive.add_endpoint(
        name="serving_default", fn=serve,
        input_signature=[tf.TensorSpec([None, None, None, None], tf.float32, name="images")])
    tmp = f"{export_dir}.tmp-{uuid.uuid4().hex[:8]}"
    archive.write_out(tmp, verbose=False)
    meta = {"image_size": int(image_size), "embedding_dim": int(encoder.output.shape[-1]),
            "input": "float32 [batch, height, width, channels] raw pixels 0..255", **(metadata or {})}
    os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
    with open(os.path.join(tmp, "assets.extra", META_FILE), "w") as f:
        json.dump(meta, f, indent=2)
    if os.path.exists(export_dir):
        shutil.rmtree(export_dir)
    os.replace(tmp, export_dir)
    return export_dir


def load_export_metadata(export_dir):
    """The metadata dict written by `export_encoder`."""
    path = os.path.join(export_dir, "assets.extra", META_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: {export_dir!r} is not a tfssl encoder export")
    with open(path) as f:
        return json.load(f)


class ExportedEncoder:
    """Callable wrapper of an exported encoder with the in-memory encoder's interface.

    `ExportedEncoder(path)(images)` takes `[B, S, S, 3]` floats in [0, 1] (what evaluation feeds an
    encoder) and returns `[B, D]` embeddings through the SavedModel's own `serving_default`.
    """

    def __init__(self, export_dir):
        self.metadata = load_export_metadata(export_dir)
        self.image_size = self.metadata["image_size"]
        self._loaded = tf.saved_model.load(export_dir)
        self._serve = self._loaded.signatures["serving_default"]

    def __call__(self, images, training=False):
        del training  # the export is inference-only
        pixels = tf.cast(images, tf.float32) * 255.0
        return self._serve(images=pixels)["embedding"]
