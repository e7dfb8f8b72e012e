"""Serving functions: raw pixels or encoded image bytes -> the encoder's outputs, preprocessing inside.

Signatures of an export (all return the same dict of outputs):
  serving_default    images float32 [batch, height, width, channels], pixel values 0..255
  serve_uint8        images uint8   [batch, height, width, channels]
  serve_image_bytes  image_bytes string [batch], each a JPEG or PNG file's bytes (REST: {"b64": ...})
  serve_model_input  images float32 [batch, S, S, 3] in [0, 1]: the encoder's own input (no resizing)
Any height and width; 1 (grey), 3 (RGB) or 4 (RGBA, alpha dropped) channels. Preprocessing is the
evaluation protocol's (`tfssl.augment.center_resize`): central square crop, antialiased bilinear
resize to S x S, scale to [0, 1].
"""
import keras
import tensorflow as tf

from tfssl.augment import center_resize

IMAGES = "images"
IMAGE_BYTES = "image_bytes"
EMBEDDING = "embedding"
PROJECTION = "projection"

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rgb_channels(images):
    """[B, H, W, C] with C in {1, 3, 4} -> [B, H, W, 3] (grey tiled, alpha dropped)."""
    channels = tf.shape(images)[-1]
    check = tf.debugging.Assert(
        tf.reduce_any(tf.equal(channels, [1, 3, 4])),
        ["images must have 1, 3 or 4 channels (grey, RGB, RGBA); got", channels])
    with tf.control_dependencies([check]):
        images = tf.cond(tf.equal(channels, 1), lambda: tf.tile(images[..., :1], [1, 1, 1, 3]),
                         lambda: images[..., :3])
    return tf.ensure_shape(images, [None, None, None, 3])


def raw_pixels_to_model_input(images, image_size):
    """Raw pixels (0..255, any size, 1/3/4 channels) -> the encoder's input, exactly as evaluation does.

    Float pixels are rounded and clipped to uint8 first, so float and uint8 clients get bit-identical
    embeddings and the result equals evaluating the stored uint8 image.

    Args:
      images: `[B, H, W, C]` float or integer pixel values in [0, 255], C in {1, 3, 4}.
      image_size: S, side of the encoder's square input.

    Returns:
      float32 `[B, S, S, 3]` in [0, 1].
    """
    images = _rgb_channels(tf.convert_to_tensor(images))
    if images.dtype != tf.uint8:
        images = tf.cast(tf.clip_by_value(tf.round(tf.cast(images, tf.float32)), 0.0, 255.0), tf.uint8)
    return center_resize(images, image_size)


def check_encoded_images(image_bytes):
    """An op that fails with InvalidArgument naming the elements that are not JPEG or PNG files.

    Checking the magic bytes first turns "random bytes" into an error that says which batch elements
    are wrong (the decoder's own message does not); a request error, never a server crash.

    Args:
      image_bytes: string `[B]`.

    Returns:
      The assert op (run it as a control dependency).
    """
    is_jpeg = tf.equal(tf.strings.substr(image_bytes, 0, len(_JPEG_MAGIC)), _JPEG_MAGIC)
    is_png = tf.equal(tf.strings.substr(image_bytes, 0, len(_PNG_MAGIC)), _PNG_MAGIC)
    valid = tf.logical_or(is_jpeg, is_png)
    return tf.debugging.Assert(
        tf.reduce_all(valid),
        ["serve_image_bytes: these elements of image_bytes are not JPEG or PNG files (send the file's "
         "raw bytes, base64 in REST JSON); indices:", tf.where(tf.logical_not(valid))[:, 0]],
        summarize=20)


def image_bytes_to_model_input(image_bytes, image_size):
    """Batch of encoded JPEG / PNG files (any sizes) -> the encoder's input.

    Each image is decoded to RGB uint8 (grey expanded, alpha dropped) and preprocessed on its own
    (`center_resize`), so a batch may mix sizes; the result equals `raw_pixels_to_model_input` on
    the decoded pixels.

    Args:
      image_bytes: string `[B]`, each element a JPEG or PNG file.
      image_size: S.

    Returns:
      float32 `[B, S, S, 3]` in [0, 1].

    Raises:
      tf.errors.InvalidArgumentError (at run time): an element is not a decodable JPEG / PNG.
    """
    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)

    def one(data):
        image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
        return center_resize(image[tf.newaxis], image_size)[0]

    with tf.control_dependencies([check_encoded_images(image_bytes)]):
        return tf.map_fn(one, image_bytes,
                         fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32))


def output_names(endpoints=(), projection=False):
    """Output keys in the order they are documented: embedding, [projection], endpoints."""
    return [EMBEDDING] + ([PROJECTION] if projection else []) + list(endpoints)


class ServingFunctions:
    """The encoder (+ projection head + endpoints) as functions of each signature's input.

    Args:
      encoder: Keras model `[B, S, S, 3]` in [0, 1] -> `[B, D]`.
      image_size: S.
      projection: None, or a callable `(h [B, D], training=False) -> [B, P]` (e.g. SimCLR's
        `model.projector`), exported as output "projection".
      endpoints: mapping output name -> encoder layer name (a stage output such as "block3") or a
        callable on the embedding `(h, training=False) -> tensor` (e.g. SimCLRv2's kept head layer).
    """

    def __init__(self, encoder, image_size, projection=None, endpoints=None):
        self.image_size = int(image_size)
        self.encoder = encoder
        self.projection = projection
        endpoints = dict(endpoints or {})
        self.layer_endpoints = {k: v for k, v in endpoints.items() if isinstance(v, str)}
        self.head_endpoints = {k: v for k, v in endpoints.items() if not isinstance(v, str)}
        self.names = output_names(endpoints, projection is not None)
        # One functional pass gives the embedding and every requested stage output together.
        outputs = {EMBEDDING: encoder.output}
        outputs.update({name: encoder.get_layer(layer).output for name, layer in self.layer_endpoints.items()})
        self._trunk = keras.Model(encoder.input, outputs, name=f"{encoder.name}_serving")

    def from_model_input(self, images):
        """`[B, S, S, 3]` in [0, 1] -> {output name: tensor} (inference mode: BN moving statistics)."""
        outputs = dict(self._trunk(images, training=False))
        h = outputs[EMBEDDING]
        if self.projection is not None:
            outputs[PROJECTION] = self.projection(h, training=False)
        for name, head in self.head_endpoints.items():
            outputs[name] = head(h, training=False)
        return {name: tf.cast(outputs[name], tf.float32) for name in self.names}

    def from_pixels(self, images):
        return self.from_model_input(raw_pixels_to_model_input(images, self.image_size))

    def from_image_bytes(self, image_bytes):
        return self.from_model_input(image_bytes_to_model_input(image_bytes, self.image_size))

    def endpoints(self):
        """(signature name, function, input signature) of every exported signature."""
        any_pixels = [None, None, None, None]
        model_input = [None, self.image_size, self.image_size, 3]
        return [
            ("serving_default", self.from_pixels, [tf.TensorSpec(any_pixels, tf.float32, name=IMAGES)]),
            ("serve_uint8", self.from_pixels, [tf.TensorSpec(any_pixels, tf.uint8, name=IMAGES)]),
            ("serve_image_bytes", self.from_image_bytes, [tf.TensorSpec([None], tf.string, name=IMAGE_BYTES)]),
            ("serve_model_input", self.from_model_input, [tf.TensorSpec(model_input, tf.float32, name=IMAGES)]),
        ]
