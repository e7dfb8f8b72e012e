"""Evaluate a run (or an exported encoder) the way the field reports it, beside random-init and raw-pixel baselines.

Features of each split are extracted once and cached under `<model_dir>/eval/`; the linear probe's
regularisation is selected on the validation split and the test split is scored once.
"""
import json
import os
import sys
import time

import keras
import numpy as np

from tfssl.evaluation import evaluate_features, extract_features
from tfssl.training import restore_model, write_text_atomic

RESULT_FILE = "result.json"


def split_features(embed, tag, config, cache_dir, batch_size=256, verbose=1):
    """Extracts (features, labels) of the train / validation / test splits named by `config`.

    Args:
      embed: encoder callable, `[B, S, S, 3]` in [0, 1] -> `[B, D]`.
      tag: cache key of this encoder (e.g. "step1000", "random_seed1").
      config: object with dataset, data_dir, train_split, val_split, test_split, image_size,
        val_fraction and seed (a `TrainConfig`).
      cache_dir: where `features_<tag>_<split>.npz` files are kept.

    Returns:
      `({"train": (x, y), "val": (x, y), "test": (x, y)}, num_classes)`.
    """
    out, num_classes = {}, None
    for key, split_name in (("train", config.train_split), ("val", config.val_split), ("test", config.test_split)):
        split = config.load_split(split_name)
        if split.num_classes is None:
            raise ValueError(f"{config.dataset}:{split_name} has no labels; linear and kNN evaluation need labels")
        num_classes = split.num_classes
        safe = split_name.replace("[", "_").replace("]", "").replace(":", "-").replace("%", "pct")
        cache = os.path.join(cache_dir, f"features_{tag}_{safe}.npz")
        if verbose:
            print(f"  features: {tag} {config.dataset}:{split_name} ({split.num_examples} images)")
        # A progress bar only on a terminal: in a log file it is thousands of redrawn lines.
        out[key] = extract_features(embed, split.dataset, config.image_size, batch_size=batch_size,
                                    cache_path=cache, verbose=verbose and sys.stdout.isatty())
    return out, num_classes


def evaluate_encoder(embed, tag, config, cache_dir, knn_k=200, knn_temperature=0.1, batch_size=256,
                     verbose=1, features_out=None):
    """Linear probe and weighted kNN of one encoder (see `split_features`); `features_out`, a dict, receives
    the extracted `{"train" | "val" | "test": (x, y)}`."""
    feats, num_classes = split_features(embed, tag, config, cache_dir, batch_size, verbose)
    if features_out is not None:
        features_out.update(feats)
    start = time.time()
    result = evaluate_features(feats["train"], feats["val"], feats["test"], num_classes,
                               knn_k=min(knn_k, len(feats["train"][1])), knn_temperature=knn_temperature)
    result["feature_dim"] = int(feats["train"][0].shape[1])
    result["num_examples"] = {k: int(len(v[1])) for k, v in feats.items()}
    result["probe_seconds"] = round(time.time() - start, 1)
    return result


def random_init_encoder(config, seed_offset=1):
    """A freshly initialised representation of the run's architecture (the baseline every number needs):
    the method's `representation()`, which is the encoder for most methods and e.g. patchify + patch
    encoder + pooling for CPC."""
    from tfssl.methods import build_method

    keras.utils.set_random_seed(config.seed + seed_offset)
    return build_method(config).representation()


def raw_pixels(images, training=False):
    """The no-learning baseline: the flattened pixels themselves, `[B, S, S, C]` -> `[B, S*S*C]`.

    Through the same probes as every encoder (the linear probe standardises each pixel on the training
    split), this is what a user has without any representation learning.
    """
    import tensorflow as tf

    return tf.reshape(tf.cast(images, tf.float32), [tf.shape(images)[0], -1])


def export_eval_dir(export_dir):
    """Where the evaluation of an export goes: never inside a directory a model server may watch.

    `<base>/<model>/<version>` (TF Serving layout; a model dir means its newest version) ->
    `<base>/<model>_eval/<version>`; any other SavedModel directory `<dir>` -> `<dir>_eval`.
    """
    from tfssl.export import resolve_version_dir

    version_dir = os.path.normpath(resolve_version_dir(export_dir))
    model_dir, version = os.path.split(version_dir)
    if version.isdigit():
        return os.path.join(os.path.dirname(model_dir), os.path.basename(model_dir) + "_eval", version)
    return version_dir + "_eval"


def evaluate_run(model_dir, export_dir=None, checkpoint=None, overrides=None, random_baseline=True,
                 knn_k=200, knn_temperature=0.1, batch_size=256, output=None, verbose=1, raw_baseline=True):
    """Evaluates a training run's encoder (or its export) and writes `result.json`.

    Args:
      model_dir: run directory (flags.json, checkpoints); may be None when `export_dir` and
        `overrides` describe the data.
      export_dir: evaluate this exported SavedModel instead of the checkpoint.
      checkpoint: a specific checkpoint path (default: newest).
      overrides: dict of `TrainConfig` fields to change (dataset, splits, data_dir ...).
      random_baseline: also evaluate a random-init encoder of the same architecture.
      raw_baseline: also evaluate the raw pixels (`raw_pixels`) with the same probes.
      output: path of result.json (default `<model_dir>/eval/result.json`, or `result.json` in
        `export_eval_dir(export_dir)` for an export).

    Returns:
      The result dict that was written.
    """
    from tfssl.config import TrainConfig
    from tfssl.export import ExportedEncoder
    from tfssl.training import load_run_config

    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if model_dir:
        config = load_run_config(model_dir)
    elif export_dir:
        config = TrainConfig(model_dir="(export)")
    else:
        raise ValueError("pass --model_dir (a training run) or --encoder (an exported encoder)")
    for key, value in overrides.items():
        setattr(config, key, value)
    cache_dir = os.path.join(model_dir, "eval") if model_dir else export_eval_dir(export_dir)
    os.makedirs(cache_dir, exist_ok=True)

    if export_dir:
        embed = ExportedEncoder(export_dir)
        config.image_size = embed.image_size
        tag, source = "export_" + os.path.basename(os.path.normpath(export_dir)), export_dir
    else:
        model, config_restored, path = restore_model(model_dir, checkpoint)
        for key, value in overrides.items():
            setattr(config_restored, key, value)
        config = config_restored
        embed = model.representation()
        tag, source = "step" + path.rsplit("-", 1)[-1], path
    features = {}
    result = {"source": source, "dataset": config.dataset,
              "splits": {"train": config.train_split, "val": config.val_split, "test": config.test_split},
              "encoder": evaluate_encoder(embed, tag, config, cache_dir, knn_k, knn_temperature, batch_size,
                                          verbose, features_out=features)}
    if model_dir and not export_dir and not overrides:  # the run's own evaluation: t-SNE + projector files
        from tfssl.report.plots import write_eval_pictures

        write_eval_pictures(model_dir, *features["test"], class_names=_class_names(config), seed=config.seed)
    if random_baseline and model_dir:
        baseline = random_init_encoder(config)
        result["random_init"] = evaluate_encoder(baseline, f"random_seed{config.seed + 1}", config, cache_dir,
                                                 knn_k, knn_temperature, batch_size, verbose)
    if raw_baseline:
        result["raw_pixels"] = evaluate_encoder(raw_pixels, f"raw_pixels{config.image_size}", config, cache_dir,
                                                knn_k, knn_temperature, batch_size, verbose)
    output = output or os.path.join(cache_dir, RESULT_FILE)
    write_text_atomic(output, json.dumps(result, indent=2, default=_json_default))
    result["result_path"] = output
    return result


def _class_names(config):
    try:
        return config.load_split(config.test_split).class_names
    except Exception:  # noqa: BLE001 (only the legend of a picture needs them)
        return None


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def format_table(result):
    """A short text table of linear / kNN accuracies (val-selected, test reported)."""
    rows = [("encoder", result["encoder"])]
    rows += [(label, result[key]) for key, label in (("random_init", "random init"), ("raw_pixels", "raw pixels"))
             if key in result]
    lines = [f"{'':12s} {'linear val':>10s} {'linear test':>11s} {'kNN val':>8s} {'kNN test':>9s}"]
    for name, r in rows:
        lin, knn = r["linear"], r["knn"]
        lines.append(f"{name:12s} {lin['val_accuracy']:10.4f} {lin['test_accuracy']:11.4f} "
                     f"{knn['val_accuracy']:8.4f} {knn['test_accuracy']:9.4f}")
    return "\n".join(lines)
