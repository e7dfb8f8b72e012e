"""Export -> tf.saved_model.load -> every signature equals the in-memory encoder on the same images.

Reference: the in-memory Keras encoder (inference mode) on `tfssl.augment.center_resize` of the uint8
images, the evaluation protocol. Tolerance: rtol 1e-5, atol 1e-5 (same ops on the same CPU; observed
differences are 0 or float rounding of a different batch composition).
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from export_helpers import IMAGE_SIZE, MODEL_NAME, sample_images

TOL = dict(rtol=1e-5, atol=1e-5)


def reference(encoder, images):
    from tfssl.augment import center_resize

    return encoder(center_resize(tf.constant(images), IMAGE_SIZE), training=False).numpy()


def numpy_kept_head(head, h):
    """First head layer by hand: relu(BN_inference(h @ W)), BN epsilon 1e-5 (no Dense bias with BN)."""
    dense, bn = head.blocks[0][0], head.blocks[0][1]
    z = h @ dense.kernel.numpy()
    z = (z - bn.moving_mean.numpy()) / np.sqrt(bn.moving_variance.numpy() + 1e-5) * bn.gamma.numpy() + bn.beta.numpy()
    return np.maximum(z, 0.0)


def test_layout_and_metadata(exported, export_base):
    assert exported == os.path.join(export_base, MODEL_NAME, "1")
    for name in ("saved_model.pb", "variables/variables.index", "assets.extra/encoder.keras",
                 "assets.extra/tf_serving_warmup_requests", "assets.extra/tfssl_export.json"):
        assert os.path.exists(os.path.join(exported, name)), name
    assert not [n for n in os.listdir(os.path.dirname(exported)) if n.startswith(".tmp")]
    with open(os.path.join(exported, "assets.extra", "tfssl_export.json")) as f:
        meta = json.load(f)
    assert meta["image_size"] == 16 and meta["embedding_dim"] == 64 and meta["note"] == "test"
    assert meta["outputs"] == ["embedding", "projection", "block3", "block4", "kept_head"]
    assert meta["output_specs"]["block3"]["shape"] == [None, 4, 4, 32]
    assert meta["output_specs"]["projection"]["shape"] == [None, 8]
    assert set(meta["signatures"]) == {"serving_default", "serve_uint8", "serve_image_bytes", "serve_model_input"}


def test_serving_default_equals_in_memory_encoder(tiny_model, loaded):
    encoder, head = tiny_model
    images = sample_images(0, (5, IMAGE_SIZE, IMAGE_SIZE, 3))
    out = loaded.signatures["serving_default"](images=tf.constant(images, tf.float32))
    expected = reference(encoder, images)
    np.testing.assert_allclose(out["embedding"].numpy(), expected, **TOL)
    # Inference-mode batch norm matters here: training mode gives something else entirely.
    from tfssl.augment import center_resize

    saved = [v.numpy() for v in encoder.non_trainable_variables]
    trained_mode = encoder(center_resize(tf.constant(images), IMAGE_SIZE), training=True).numpy()
    for variable, value in zip(encoder.non_trainable_variables, saved):  # training=True moved the BN statistics
        variable.assign(value)
    assert np.abs(trained_mode - expected).max() > 1e-2
    np.testing.assert_allclose(out["projection"].numpy(), head(tf.constant(expected), training=False).numpy(), **TOL)
    np.testing.assert_allclose(out["kept_head"].numpy(), numpy_kept_head(head, expected), rtol=1e-4, atol=1e-5)
    from tfssl.encoders import endpoint_model

    stages = endpoint_model(encoder, ["block3", "block4"])(center_resize(tf.constant(images), IMAGE_SIZE))
    for name in ("block3", "block4"):
        np.testing.assert_allclose(out[name].numpy(), stages[name].numpy(), **TOL)


def test_any_size_and_channel_count(tiny_model, loaded):
    encoder, _ = tiny_model
    serve = loaded.signatures["serving_default"]
    rgba = sample_images(1, (3, 23, 37, 4))  # non-square, larger: crop + resize
    out = serve(images=tf.constant(rgba, tf.float32))["embedding"].numpy()
    np.testing.assert_allclose(out, reference(encoder, rgba[..., :3]), **TOL)
    grey = sample_images(2, (2, 9, 9, 1))  # smaller than the model input: upsampled
    out = serve(images=tf.constant(grey, tf.float32))["embedding"].numpy()
    np.testing.assert_allclose(out, reference(encoder, np.repeat(grey, 3, axis=-1)), **TOL)
    with pytest.raises(tf.errors.InvalidArgumentError, match="1, 3 or 4 channels"):
        serve(images=tf.zeros([1, 16, 16, 2]))


def test_uint8_signature_equals_float(loaded):
    images = sample_images(3, (4, 20, 20, 3))
    as_float = loaded.signatures["serving_default"](images=tf.constant(images, tf.float32))
    as_uint8 = loaded.signatures["serve_uint8"](images=tf.constant(images))
    assert sorted(as_float) == sorted(as_uint8)
    for name in as_float:
        np.testing.assert_array_equal(as_uint8[name].numpy(), as_float[name].numpy())


def test_model_input_signature(tiny_model, loaded):
    encoder, _ = tiny_model
    x = np.random.default_rng(4).uniform(0, 1, (3, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    out = loaded.signatures["serve_model_input"](images=tf.constant(x))["embedding"].numpy()
    np.testing.assert_allclose(out, encoder(x, training=False).numpy(), **TOL)


def test_image_bytes_png_equals_decoded_pixels(loaded):
    # A batch of mixed sizes and colour types: RGB 16x16, RGB 30x22, grey 12x12, RGBA 16x20.
    images = [sample_images(5, (1, 16, 16, 3))[0], sample_images(6, (1, 30, 22, 3))[0],
              sample_images(7, (1, 12, 12, 1))[0], sample_images(8, (1, 16, 20, 4))[0]]
    blobs = [tf.io.encode_png(image).numpy() for image in images]
    served = loaded.signatures["serve_image_bytes"](image_bytes=tf.constant(blobs))
    serve = loaded.signatures["serving_default"]
    for i, image in enumerate(images):  # PNG is lossless: the decoded pixels are the originals
        one = serve(images=tf.constant(image[None], tf.float32))
        for name in ("embedding", "projection", "block4"):
            np.testing.assert_allclose(served[name][i].numpy(), one[name][0].numpy(), **TOL)


def test_image_bytes_jpeg_equals_own_decode(loaded):
    images = sample_images(9, (3, 24, 24, 3))
    blobs = [tf.io.encode_jpeg(image, quality=75).numpy() for image in images]
    served = loaded.signatures["serve_image_bytes"](image_bytes=tf.constant(blobs))["embedding"].numpy()
    decoded = np.stack([tf.io.decode_jpeg(blob, channels=3).numpy() for blob in blobs])
    assert np.abs(decoded.astype(int) - images).max() > 0  # JPEG is lossy: the decode is the reference
    expected = loaded.signatures["serving_default"](images=tf.constant(decoded, tf.float32))["embedding"].numpy()
    np.testing.assert_allclose(served, expected, **TOL)


@pytest.mark.parametrize("bad, message", [
    (b"definitely not an image", "not JPEG or PNG files"),
    (b"\xff\xd8\xff" + b"\x00" * 64, "JPEG"),  # a JPEG header and nothing decodable after it
])
def test_undecodable_bytes_are_a_request_error(loaded, bad, message):
    serve = loaded.signatures["serve_image_bytes"]
    good = tf.io.encode_png(sample_images(10, (1, 16, 16, 3))[0]).numpy()
    with pytest.raises(tf.errors.InvalidArgumentError, match=message) as info:
        serve(image_bytes=tf.constant([good, bad]))
    if message.startswith("not"):
        assert "indices:] [1]" in str(info.value)  # names the bad element of the batch
    # The loaded model is unharmed: the next request works.
    assert serve(image_bytes=tf.constant([good]))["embedding"].shape == (1, 64)


def test_exported_encoder_and_keras_encoder(tiny_model, exported):
    from tfssl.augment import center_resize
    from tfssl.export import ExportedEncoder, load_keras_encoder

    encoder, _ = tiny_model
    x = center_resize(tf.constant(sample_images(11, (4, 28, 28, 1))), IMAGE_SIZE)
    expected = encoder(x, training=False).numpy()
    wrapped = ExportedEncoder(os.path.dirname(exported))  # a model dir: its highest version
    assert wrapped.version_dir == exported and wrapped.image_size == 16 and wrapped.metadata["version"] == 1
    np.testing.assert_allclose(wrapped(x).numpy(), expected, **TOL)
    assert sorted(wrapped.outputs(x)) == ["block3", "block4", "embedding", "kept_head", "projection"]
    # Other sizes go through the raw-pixel signature (resized inside the SavedModel).
    big = tf.image.resize(x, [24, 24])
    np.testing.assert_allclose(wrapped(big).numpy(), encoder(center_resize(
        tf.cast(tf.round(big * 255.0), tf.uint8), IMAGE_SIZE), training=False).numpy(), **TOL)
    keras_encoder = load_keras_encoder(os.path.dirname(exported))
    np.testing.assert_allclose(keras_encoder(x, training=False).numpy(), expected, **TOL)
    assert len(keras_encoder.trainable_weights) == len(encoder.trainable_weights) > 0
