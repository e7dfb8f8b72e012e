"""SavedModel warm-up records: `assets.extra/tf_serving_warmup_requests`.

TF Serving replays these PredictRequests when it loads a version (`--enable_model_warmup`, on by
default), so graph optimisation and memory allocation happen before the first user request. The
file is a TFRecord of `tensorflow.serving.PredictionLog` protos (tensorflow-serving-api package).
"""
import os

import numpy as np
import tensorflow as tf

from tfssl.export.signatures import IMAGE_BYTES, IMAGES

WARMUP_FILE = "tf_serving_warmup_requests"


def _serving_protos():
    try:
        from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    except ImportError as error:  # pragma: no cover - the package is a tfssl dependency
        raise ImportError("warm-up requests need the tensorflow-serving-api package: "
                          "pip install 'tensorflow-serving-api>=2.21,<2.22' (or export with warmup=False)") from error
    return model_pb2, predict_pb2, prediction_log_pb2


def sample_images(image_size, batch=2):
    """Deterministic uint8 `[batch, S, S, 3]` test pattern (smooth gradients, not a constant image)."""
    ramp = np.linspace(0, 255, image_size, dtype=np.float32)
    red = np.broadcast_to(ramp[None, :], (image_size, image_size))
    green = np.broadcast_to(ramp[:, None], (image_size, image_size))
    blue = 255.0 - red
    image = np.stack([red, green, blue], axis=-1)
    return np.stack([np.roll(image, 3 * i, axis=1) for i in range(batch)]).round().astype(np.uint8)


def warmup_inputs(image_size):
    """(signature name, {input name: numpy array}) for each warm-up request.

    Covers every signature, the model's input size and a larger non-square grey image (resize path).
    """
    images = sample_images(image_size)
    larger = sample_images(image_size + 7)[:, :, : image_size + 3, :1]
    encoded = [tf.io.encode_png(images[0]).numpy(), tf.io.encode_jpeg(images[1], quality=90).numpy()]
    return [
        ("serving_default", {IMAGES: images.astype(np.float32)}),
        ("serving_default", {IMAGES: larger.astype(np.float32)}),
        ("serve_uint8", {IMAGES: images}),
        ("serve_image_bytes", {IMAGE_BYTES: np.array(encoded, dtype=object)}),
        ("serve_model_input", {IMAGES: images.astype(np.float32) / 255.0}),
    ]


def build_warmup_logs(model_name, image_size, signatures=None):
    """PredictionLog protos of the warm-up requests.

    Args:
      model_name: TF Serving model name (the request's model_spec.name).
      image_size: S of the export.
      signatures: restrict to these signature names (default: all).

    Returns:
      list of `prediction_log_pb2.PredictionLog`.
    """
    model_pb2, predict_pb2, prediction_log_pb2 = _serving_protos()
    logs = []
    for signature, inputs in warmup_inputs(image_size):
        if signatures is not None and signature not in signatures:
            continue
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
        logs.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def write_warmup_file(assets_extra_dir, model_name, image_size, signatures=None):
    """Writes `<assets_extra_dir>/tf_serving_warmup_requests`; returns its path."""
    os.makedirs(assets_extra_dir, exist_ok=True)
    path = os.path.join(assets_extra_dir, WARMUP_FILE)
    with tf.io.TFRecordWriter(path) as writer:
        for log in build_warmup_logs(model_name, image_size, signatures):
            writer.write(log.SerializeToString())
    return path


def read_warmup_file(path):
    """The PredictionLog protos of a warm-up file (a version dir, or the file itself)."""
    _, _, prediction_log_pb2 = _serving_protos()
    if os.path.isdir(path):
        path = os.path.join(path, "assets.extra", WARMUP_FILE)
    logs = []
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        logs.append(prediction_log_pb2.PredictionLog.FromString(record))
    return logs
