"""Export of an encoder for TF Serving (SavedModel with preprocessing inside) and the loaders.

Layout of one export version (`export_encoder` -> `<export_base>/<model_name>/<version>/`):
  saved_model.pb, variables/                   the SavedModel (signatures: see `tfssl.export.signatures`)
  assets.extra/tfssl_export.json               image_size, embedding_dim, outputs, signatures, metadata
  assets.extra/encoder.keras                   the Keras encoder, `[B, S, S, 3]` in [0, 1] -> `[B, D]`
  assets.extra/tf_serving_warmup_requests      PredictionLog records TF Serving replays at load time
"""
import datetime
import json
import os
import shutil

import keras
import tensorflow as tf

from tfssl.export import layout
from tfssl.export.signatures import EMBEDDING, IMAGES, PROJECTION, ServingFunctions
from tfssl.export.warmup import WARMUP_FILE, write_warmup_file

META_FILE = "tfssl_export.json"
KERAS_FILE = "encoder.keras"
ASSETS_EXTRA = "assets.extra"
FORMAT = "tfssl-encoder-export/1"

SIGNATURE_DOCS = {
    "serving_default": "images float32 [batch, height, width, channels] raw pixels 0..255, any size, "
                       "1/3/4 channels",
    "serve_uint8": "images uint8 [batch, height, width, channels], any size, 1/3/4 channels",
    "serve_image_bytes": "image_bytes string [batch]: encoded JPEG or PNG files (REST: {\"b64\": ...})",
    "serve_model_input": "images float32 [batch, S, S, 3] in [0, 1] (already preprocessed)",
}
PREPROCESSING = ("grey tiled to RGB, alpha dropped; central square crop; antialiased bilinear resize to "
                 "image_size; scaled to [0, 1] (tfssl.augment.center_resize)")
_RESERVED = {"format", "model_name", "version", "image_size", "embedding_dim", "input", "preprocessing",
             "signatures", "outputs", "output_specs", "keras_encoder", "warmup_requests", "created",
             "tfssl_version", "tensorflow_version", "keras_version"}


def _normalise_endpoints(encoder, endpoints):
    """`endpoints` (names, or {output name: layer name | callable}) -> {output name: layer name | callable}."""
    if isinstance(endpoints, str):
        endpoints = [name.strip() for name in endpoints.split(",") if name.strip()]
    if not isinstance(endpoints, dict):
        endpoints = {name: name for name in endpoints}
    known = {layer.name for layer in encoder.layers}
    for name, source in endpoints.items():
        if not isinstance(name, str) or not name or name in (EMBEDDING, PROJECTION):
            raise ValueError(f"endpoint output name {name!r} is invalid; use a new non-empty name "
                             f"(not {EMBEDDING!r} or {PROJECTION!r})")
        if isinstance(source, str) and source not in known:
            raise ValueError(f"endpoint {source!r} is not a layer of encoder {encoder.name!r}; stage outputs "
                             "are stem, block1, block2, block3, block4")
        if not isinstance(source, str) and not callable(source):
            raise ValueError(f"endpoint {name!r} must map to an encoder layer name or a callable on the "
                             f"embedding, got {type(source).__name__}")
    return endpoints


def _output_specs(concrete_fn, names, endpoints):
    """{output name: {shape, dtype, description}} from the traced serving function's outputs, in `names` order."""
    specs = {}
    for name in names:
        tensor = concrete_fn.structured_outputs[name]
        if name == EMBEDDING:
            text = "encoder output (pooled features)"
        elif name == PROJECTION:
            text = "projection head output"
        elif isinstance(endpoints.get(name), str):
            text = f"encoder layer {endpoints[name]!r} output"
        else:
            text = "head output computed from the embedding"
        specs[name] = {"shape": [None] + tensor.shape.as_list()[1:], "dtype": tensor.dtype.name,
                       "description": text}
    return specs


def _check_metadata(metadata):
    metadata = dict(metadata or {})
    clash = sorted(_RESERVED & set(metadata))
    if clash:
        raise ValueError(f"metadata keys {clash} are reserved by the export format; rename them")
    try:
        json.dumps(metadata)
    except TypeError as error:
        raise ValueError(f"metadata must be JSON-serialisable: {error}") from None
    return metadata


def _build_metadata(encoder, image_size, model_name, version, specs, warmup, metadata):
    import tfssl

    return {"format": FORMAT, "model_name": model_name, "version": version, "image_size": int(image_size),
            "embedding_dim": int(encoder.output.shape[-1]),
            "input": f"serving_default: {SIGNATURE_DOCS['serving_default']}",
            "preprocessing": PREPROCESSING, "signatures": dict(SIGNATURE_DOCS),
            "outputs": list(specs), "output_specs": specs,
            "keras_encoder": f"{ASSETS_EXTRA}/{KERAS_FILE}",
            "warmup_requests": f"{ASSETS_EXTRA}/{WARMUP_FILE}" if warmup else None,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "tfssl_version": tfssl.__version__, "tensorflow_version": tf.__version__,
            "keras_version": keras.__version__, **metadata}


def _check_image_size(encoder, image_size):
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"image_size must be a positive int (the encoder's input side), got {image_size!r}")
    expected = tuple(encoder.input.shape[1:])
    if expected != (image_size, image_size, 3):
        raise ValueError(f"the encoder takes inputs {expected}, not ({image_size}, {image_size}, 3); pass "
                         "the run's image_size (and a 3-channel encoder)")


def _write_export(directory, encoder, image_size, model_name, version, projection, endpoints, metadata, warmup):
    """Writes the SavedModel and its assets.extra into the (empty, private) `directory`."""
    functions = ServingFunctions(encoder, image_size, projection=projection, endpoints=endpoints)
    archive = keras.export.ExportArchive()
    archive.track(encoder)  # exposes .variables / .trainable_variables on the reloaded object
    traced = {}
    for name, fn, input_signature in functions.endpoints():
        traced[name] = archive.add_endpoint(name=name, fn=fn, input_signature=input_signature)
    archive.write_out(directory, verbose=False)

    extra = os.path.join(directory, ASSETS_EXTRA)
    os.makedirs(extra, exist_ok=True)
    encoder.save(os.path.join(extra, KERAS_FILE))
    if warmup:
        write_warmup_file(extra, model_name, image_size)
    specs = _output_specs(traced["serve_model_input"].get_concrete_function(), functions.names, endpoints)
    meta = _build_metadata(encoder, image_size, model_name, version, specs, warmup, metadata)
    with open(os.path.join(extra, META_FILE), "w") as f:
        json.dump(meta, f, indent=2)


def export_encoder(encoder, export_base, image_size, model_name="tfssl_encoder", version=None, projection=None,
                   endpoints=(), metadata=None, warmup=True):
    """Exports `encoder` as version `<export_base>/<model_name>/<version>/` for TF Serving.

    The version is written to a hidden temporary directory beside it and renamed into place when
    complete, so a model server polling the base never sees a partial version.

    Args:
      encoder: Keras model, `[B, S, S, 3]` float in [0, 1] -> `[B, D]` (e.g. `model.encoder` of a run).
      export_base: root directory a model server is pointed at.
      image_size: S.
      model_name: TF Serving model name (directory under `export_base`).
      version: positive int; None -> 1 + the highest existing version.
      projection: None or a callable `(h, training=False) -> [B, P]` (SimCLR: `model.projector`),
        exported as output "projection".
      endpoints: encoder layer names to export as extra outputs (e.g. ("block3", "block4")), or a
        mapping output name -> layer name or callable on the embedding (SimCLRv2's kept head layer).
      metadata: JSON-serialisable dict merged into `assets.extra/tfssl_export.json`.
      warmup: write `assets.extra/tf_serving_warmup_requests` (needs tensorflow-serving-api).

    Returns:
      The version directory (absolute path).

    Raises:
      ValueError: bad arguments, or an explicit `version` that already exists.
    """
    _check_image_size(encoder, image_size)
    if not isinstance(model_name, str) or not model_name or os.sep in model_name or model_name.startswith("."):
        raise ValueError(f"model_name must be a plain directory name like 'tfssl_encoder', got {model_name!r}")
    if version is not None:
        layout.check_version(version)
    endpoints = _normalise_endpoints(encoder, endpoints)
    metadata = _check_metadata(metadata)
    model_dir = os.path.join(os.path.abspath(os.fspath(export_base)), model_name)
    if version is not None and os.path.exists(os.path.join(model_dir, str(version))):
        raise ValueError(f"{os.path.join(model_dir, str(version))} already exists; pick another --version "
                         "or omit it to use the next one")
    tmp = layout.new_temp_dir(model_dir)
    try:
        # With version None the number is only known at publish time: the file then says null and
        # load_export_metadata reads the directory name.
        _write_export(tmp, encoder, image_size, model_name, version, projection, endpoints, metadata, warmup)
        version_dir = layout.publish_version(tmp, model_dir, version)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return version_dir


def export_encoder_to_dir(encoder, export_dir, image_size, projection=None, endpoints=(), metadata=None,
                          warmup=True, overwrite=False, model_name="tfssl_encoder"):
    """Same export as `export_encoder`, written to exactly `export_dir` (no model / version levels).

    Args:
      export_dir: destination; must not exist unless `overwrite` (replaced without ever being partial).
      model_name: name put in the warm-up requests' model_spec.
      Others: as `export_encoder`.

    Returns:
      `export_dir` (absolute).
    """
    _check_image_size(encoder, image_size)
    endpoints = _normalise_endpoints(encoder, endpoints)
    metadata = _check_metadata(metadata)
    export_dir = os.path.abspath(os.fspath(export_dir))
    if os.path.exists(export_dir) and not overwrite:
        raise ValueError(f"{export_dir} already exists; choose a new --export_dir or pass --overwrite")
    tmp = layout.new_temp_dir(os.path.dirname(export_dir))
    try:
        _write_export(tmp, encoder, image_size, model_name, None, projection, endpoints, metadata, warmup)
        return layout.publish_dir(tmp, export_dir, overwrite=overwrite)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def resolve_version_dir(path):
    """See `tfssl.export.layout.resolve_version_dir`: version dir as is, model dir -> highest version."""
    return layout.resolve_version_dir(path)


def load_export_metadata(path):
    """The metadata dict written beside an export (`path`: version dir or model dir)."""
    version_dir = resolve_version_dir(path)
    meta_path = os.path.join(version_dir, ASSETS_EXTRA, META_FILE)
    if not os.path.exists(meta_path):
        raise FileNotFoundError(f"{meta_path} not found: {version_dir!r} is not a tfssl encoder export")
    with open(meta_path) as f:
        meta = json.load(f)
    if not isinstance(meta.get("version"), int) and os.path.basename(version_dir).isdigit():
        meta["version"] = int(os.path.basename(version_dir))
    return meta


def load_keras_encoder(path, compile=False):
    """The Keras encoder stored in an export (`assets.extra/encoder.keras`), ready to fine-tune.

    Args:
      path: version dir or model dir of an export.

    Returns:
      keras.Model `[B, S, S, 3]` float in [0, 1] -> `[B, D]`, weights as exported, all trainable.
    """
    version_dir = resolve_version_dir(path)
    keras_path = os.path.join(version_dir, ASSETS_EXTRA, KERAS_FILE)
    if not os.path.exists(keras_path):
        raise FileNotFoundError(f"{keras_path} not found: the export predates encoder.keras; re-export it "
                                "with tfssl-export")
    import tfssl.encoders  # noqa: F401  (registers any tfssl layers the encoder may use)

    return keras.saving.load_model(keras_path, compile=compile)


class ExportedEncoder:
    """Callable wrapper of an exported encoder with the in-memory encoder's interface.

    `ExportedEncoder(path)(images)` takes `[B, S, S, 3]` floats in [0, 1] (what evaluation feeds an
    encoder) and returns `[B, D]` embeddings computed by the SavedModel itself.

    Args:
      path: version dir, or model dir (`<export_base>/<model_name>`: its highest version).

    Attributes:
      image_size: S. metadata: the export's tfssl_export.json. version_dir: the directory loaded.
    """

    def __init__(self, path):
        self.version_dir = resolve_version_dir(path)
        self.metadata = load_export_metadata(self.version_dir)
        self.image_size = self.metadata["image_size"]
        self._loaded = tf.saved_model.load(self.version_dir)
        signatures = self._loaded.signatures
        # Exports before serve_model_input only had raw pixels: feed them the same values * 255.
        self._direct = "serve_model_input" in signatures
        self._serve = signatures["serve_model_input" if self._direct else "serving_default"]
        self._pixels = signatures["serving_default"]

    @property
    def output_names(self):
        return sorted(self._serve.structured_outputs)

    def outputs(self, images):
        """Every exported output (embedding, projection, endpoints) for float `[B, H, W, 3]` in [0, 1].

        `[B, S, S, 3]` goes straight to the encoder; other sizes take the raw-pixel signature, which
        resizes (after rounding to 8-bit pixels, as it does for every client).
        """
        images = tf.cast(images, tf.float32)
        if self._direct and tuple(images.shape[1:]) == (self.image_size, self.image_size, 3):
            return self._serve(**{IMAGES: images})
        return self._pixels(**{IMAGES: images * 255.0})

    def __call__(self, images, training=False):
        del training  # the export is inference-only
        return self.outputs(images)[EMBEDDING]
