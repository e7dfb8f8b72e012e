"""`load_encoder`: a trainable Keras feature extractor from any tfssl artefact.

Sources (detected from the path):
  * a training run directory (`flags.json` + `checkpoints/`) or one of its checkpoint prefixes
    (`<run>/checkpoints/ckpt-N`): the method is rebuilt from flags.json and the checkpoint restored;
  * a `.keras` file: an SSL method saved with `model.save`, a bare encoder, or a classifier written by
    `tfssl-finetune` (its features = the input of its `classifier` layer); a `tfssl-finetune` output
    directory stands for its `classifier.keras`;
  * an exported SavedModel (`<export_base>/<model_name>/<version>` or the model directory, meaning its
    newest version): `assets.extra/encoder.keras` is loaded, so the weights are ordinary trainable Keras
    variables rather than the frozen inference graph of the SavedModel signatures.

For inference inside a Keras model, the SavedModel itself can also be wrapped as a layer:
  `keras.layers.TFSMLayer(version_dir, call_endpoint="serving_default")` takes raw pixels (float, 0..255,
  any size) and returns the signature's dict ({"embedding": [B, D], ...}). It runs the serving graph,
  whose batch norm is fixed in inference mode, so fine-tune from `load_encoder(version_dir)` instead.
"""
import os

import keras
import tensorflow as tf
from absl import logging

CLASSIFIER_FILE = "classifier.keras"
CLASSIFIER_LAYER = "classifier"
_RUN_FLAGS = "flags.json"


def _is_checkpoint_prefix(path):
    return os.path.exists(path + ".index")


def _run_dir_of_checkpoint(path):
    """`<run>/checkpoints/ckpt-N` -> `<run>` (the directory holding flags.json above the checkpoint)."""
    directory = os.path.dirname(os.path.abspath(path))
    for candidate in (directory, os.path.dirname(directory)):
        if os.path.exists(os.path.join(candidate, _RUN_FLAGS)):
            return candidate
    raise FileNotFoundError(f"no {_RUN_FLAGS} beside or above checkpoint {path!r}: "
                            "pass the training run directory instead")


def source_kind(path):
    """Classifies an encoder source path.

    Args:
      path: run directory, checkpoint prefix, `.keras` file, tfssl-finetune output directory, or an
        exported SavedModel (version or model directory).

    Returns:
      One of "run", "checkpoint", "keras", "export".

    Raises:
      FileNotFoundError: if `path` does not exist or is none of these.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ValueError(f"encoder path must be a non-empty string, got {path!r}")
    path = os.fspath(path)
    if _is_checkpoint_prefix(path):
        return "checkpoint"
    if os.path.isfile(path):
        if path.endswith(".keras"):
            return "keras"
        raise ValueError(f"{path!r} is a file but not a .keras model; pass a .keras file, a training run "
                         "directory, a checkpoint prefix or an exported SavedModel directory")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"encoder source {path!r} does not exist")
    if os.path.exists(os.path.join(path, _RUN_FLAGS)):
        return "run"
    if os.path.isfile(os.path.join(path, CLASSIFIER_FILE)):
        return "keras"
    return "export"


def _load_export_encoder(path):
    """The Keras encoder stored inside an export (helper A's `tfssl.export.load_keras_encoder`)."""
    from tfssl.export import load_keras_encoder

    return load_keras_encoder(path)


def _register_tfssl_objects():
    """Imports the modules whose classes .keras files refer to (registration happens at import)."""
    import tfssl.encoders  # noqa: F401  (ViT layers)
    import tfssl.heads  # noqa: F401
    import tfssl.methods  # noqa: F401
    import tfssl.optim  # noqa: F401


def _load_keras_file(path):
    _register_tfssl_objects()
    # compile=False: the optimizer (e.g. LARS with a schedule) is irrelevant for a new training run.
    return keras.saving.load_model(path, compile=False)


def features_with_head(encoder, projector, head_layers):
    """Encoder followed by the first `head_layers` projection-head layers (SimCLRv2 fine-tuning).

    Chen et al. 2020b ("Big Self-Supervised Models are Strong Semi-Supervised Learners", sec. 2.2)
    fine-tune from a middle layer of the 3-layer projection head instead of discarding it.

    Args:
      encoder: functional encoder, `[B, S, S, 3]` -> `[B, D]`.
      projector: `tfssl.heads.ProjectionHead` (built) or None.
      head_layers: how many head layers to keep, 0 = the encoder output.

    Returns:
      A functional keras.Model sharing the weights, `[B, S, S, 3]` -> `[B, D']`. Its layers are the
      encoder's own layers (not a nested model), so block names such as "block2" stay addressable.
    """
    if head_layers == 0:
        return encoder
    if projector is None:
        raise ValueError(f"head_layers={head_layers} but this source has no projection head; use 0 or None")
    if not 0 <= head_layers <= projector.num_layers:
        raise ValueError(f"head_layers must be in [0, {projector.num_layers}] (the projection head's depth), "
                         f"got {head_layers}")
    # training is left unset so that calling the model with training=True/False reaches the head's BN.
    features = projector.layer_outputs(encoder.output)[head_layers]
    return keras.Model(encoder.input, features, name=f"{encoder.name}_head{head_layers}")


def checkpoint_values_by_path(checkpoint_path):
    """Where each variable of a TF checkpoint is stored, by variable path.

    Read from the checkpoint's object graph (each saved tensor records the `full_name` of its
    variable, which for Keras 3 variables is `variable.path`, e.g. "projector/dense0/kernel").

    Returns:
      `(reader, {variable path: checkpoint key})`; `reader.get_tensor(key)` gives the value.
    """
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    reader = tf.train.load_checkpoint(checkpoint_path)
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    return reader, {a.full_name: a.checkpoint_key for node in graph.nodes for a in node.attributes
                    if a.name == "VARIABLE_VALUE"}


def restore_head_by_path(method, checkpoint_path):
    """Restores the projection head of a run from its checkpoint, matching variables by path.

    Why: checkpoints written before `ProjectionHead` joined TensorFlow's object graph (tfssl before
    commit ac6e70e) hold the head only through the optimizer's variable list, so a model-only restore
    (`restore_model`) leaves the head at its random initialisation. Its trainable weights are found
    here by their recorded variable path; its BN moving statistics were not saved by such runs and keep
    their initial values (mean 0, variance 1) until training-mode fine-tuning re-estimates them. For
    newer checkpoints this re-assigns the values `restore_model` already restored.

    Returns:
      list of head variable paths that the checkpoint did not hold.
    """
    reader, keys = checkpoint_values_by_path(checkpoint_path)
    missing = []
    for variable in method.projector.weights:
        key = keys.get(variable.path)
        if key is None:
            missing.append(variable.path)
            continue
        value = reader.get_tensor(key)
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(f"{checkpoint_path}: {variable.path} has shape {value.shape}, the rebuilt head "
                             f"{tuple(variable.shape)}; the run's flags.json does not match its checkpoint")
        variable.assign(value)
    return missing


def _from_method(method, head_layers):
    projector = getattr(method, "projector", None)
    if head_layers is None:
        head_layers = projector.keep_layer if projector is not None else 0
    if projector is not None and not projector.built:
        method.build_heads()
    return features_with_head(method.representation(), projector, head_layers)


def _from_keras_object(obj, head_layers, path):
    from tfssl.methods import SSLMethod

    if isinstance(obj, SSLMethod):
        return _from_method(obj, head_layers)
    if not isinstance(obj, keras.Model):
        raise ValueError(f"{path!r} holds a {type(obj).__name__}, not a Keras model")
    if head_layers:
        raise ValueError(f"head_layers={head_layers} but {path!r} is a plain encoder without a projection "
                         "head; use 0 or None")
    names = {layer.name for layer in obj.layers}
    if CLASSIFIER_LAYER in names:
        # A tfssl-finetune classifier: its features are what its linear classifier reads.
        return keras.Model(obj.input, obj.get_layer(CLASSIFIER_LAYER).input, name=f"{obj.name}_features")
    return obj


def load_encoder(path, trainable=True, head_layers=None, checkpoint=None):
    """Loads a trainable feature extractor from a run, checkpoint, `.keras` file or export.

    Args:
      path: see the module docstring for the accepted sources.
      trainable: value of `trainable` on every layer of the returned model. With False, batch norm
        runs in inference mode even when called with `training=True` (Keras' fine-tuning convention).
      head_layers: projection-head layers to keep on top of the encoder (SimCLRv2 selector). None =
        what the source chose at pre-training (`--simclr_keep_proj_layer` of the run; 0 for plain encoders).
        Only runs and saved SSL methods have a head.
      checkpoint: with a run directory, a specific checkpoint path (default: the newest).

    Returns:
      keras.Model: float32 images `[B, S, S, 3]` in [0, 1] -> features `[B, D]`. Called with
      `training=True`, batch norm uses batch statistics and updates its moving averages.

    Raises:
      FileNotFoundError: the path does not exist / holds no checkpoint or encoder.
      ValueError: an invalid `head_layers` for this source, or an unsupported file.
    """
    if head_layers is not None and (isinstance(head_layers, bool) or not isinstance(head_layers, int)
                                    or head_layers < 0):
        raise ValueError(f"head_layers must be None or an int >= 0, got {head_layers!r}")
    kind = source_kind(path)
    path = os.fspath(path)
    if kind in ("run", "checkpoint"):
        from tfssl.training import restore_model

        model_dir = path if kind == "run" else _run_dir_of_checkpoint(path)
        ckpt = checkpoint or (path if kind == "checkpoint" else None)
        method, _, restored = restore_model(model_dir, ckpt)
        projector = getattr(method, "projector", None)
        kept = (projector.keep_layer if projector is not None else 0) if head_layers is None else head_layers
        if kept and projector is not None:
            missing = restore_head_by_path(method, restored)
            if missing:
                logging.warning("%s does not hold %s; those start from their initial values",
                                restored, ", ".join(missing))
        model = _from_method(method, head_layers)
    elif kind == "keras":
        file = os.path.join(path, CLASSIFIER_FILE) if os.path.isdir(path) else path
        model = _from_keras_object(_load_keras_file(file), head_layers, file)
    else:
        model = _from_keras_object(_load_export_encoder(path), head_layers, path)
    _check_features_model(model, path)
    model.trainable = bool(trainable)
    return model


def _check_features_model(model, path):
    shape = tuple(model.input.shape) if not isinstance(model.input, (list, dict)) else None
    if shape is None or len(shape) != 4 or shape[1] is None or shape[1] != shape[2]:
        raise ValueError(f"{path!r}: expected a model taking square images [B, S, S, C], got input {shape}")
    out = model.output
    if isinstance(out, (list, tuple, dict)) or len(out.shape) != 2:
        raise ValueError(f"{path!r}: expected a model with one [B, D] output, got {out}")


def input_size(model):
    """Side S of the square `[B, S, S, C]` input of `model`."""
    return int(model.input.shape[1])


def block_layers(model, block):
    """The layers computing `model`'s layer named `block` (that layer and all its ancestors).

    Args:
      model: functional model containing a layer named `block` (e.g. "stem", "block1".."block4").
      block: layer name.

    Returns:
      list of layers (the input layer included).
    """
    names = [layer.name for layer in model.layers]
    if block not in names:
        raise ValueError(f"the model has no layer {block!r}; its stage outputs are "
                         f"{[n for n in names if n == 'stem' or (n.startswith('block') and n[5:].isdigit())]}")
    # A sub-model ending at the block keeps exactly the layers needed to compute it.
    sub = keras.Model(model.input, model.get_layer(block).output)
    return list(sub.layers)


FREEZE_CHOICES = ("none", "stem", "block1", "block2", "block3", "block4")


def parse_fine_tune_after_block(value):
    """Normalises `--fine_tune_after_block`.

    Accepts "none" / "" / -1 (train everything), "stem" / 0, "block1".."block4" / 1..4 (the integer
    form is SimCLR's own flag convention).

    Returns:
      One of `FREEZE_CHOICES`.
    """
    text = str(value).strip().lower()
    if text in ("", "none", "-1"):
        return "none"
    if text.isdigit() and int(text) <= 4:
        return FREEZE_CHOICES[int(text) + 1]
    if text in FREEZE_CHOICES:
        return text
    raise ValueError(f"--fine_tune_after_block={value!r} is not one of {', '.join(FREEZE_CHOICES)} "
                     "(or -1..4)")


def freeze_up_to(model, block):
    """Freezes `block` and every layer before it (their weights and BN statistics stay fixed).

    Args:
      model: functional feature model from `load_encoder` (or a classifier built on one).
      block: one of `FREEZE_CHOICES`; "none" freezes nothing.

    Returns:
      The list of frozen layers (input layer not counted).
    """
    block = parse_fine_tune_after_block(block)
    if block == "none":
        return []
    frozen = [layer for layer in block_layers(model, block) if not isinstance(layer, keras.layers.InputLayer)]
    for layer in frozen:
        # Frozen BN also switches to its moving statistics, as in SimCLR's fine_tune_after_block.
        layer.trainable = False
    return frozen


def clone_with_fresh_weights(model, seed):
    """Same architecture, freshly initialised weights (the random-init baseline of a source).

    Args:
      model: functional keras.Model.
      seed: seed of the new initialisation.

    Returns:
      A new functional model with new variables.
    """
    keras.utils.set_random_seed(seed)
    clone = keras.models.clone_model(model)
    clone.trainable = True
    return clone
