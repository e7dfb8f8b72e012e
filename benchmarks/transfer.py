"""Transfer: pre-trained encoders evaluated on a dataset they never saw, beside raw pixels and random init.

The dataset is scikit-learn's handwritten digits (1,797 images of 8 x 8 px, 10 classes; UCI optdigits),
upsampled to each encoder's input size by the evaluation preprocessing (bilinear). Splits are stratified
and fixed: 30% test, then 20% of the rest as validation (the probe's l2 is chosen on validation; test is
scored once). Every encoder goes through the same linear probe and weighted kNN as the Fashion-MNIST table.

  python benchmarks/transfer.py --model_dirs=runs/simclr_fmnist,runs/moco_v3_fmnist \\
      --exports=export/simclr_fmnist --output=benchmarks/results/transfer_digits.json
"""
import os

from absl import app, flags

import _common

flags.DEFINE_list("model_dirs", [], "Training runs (newest checkpoint; their representation()).")
flags.DEFINE_list("exports", [], "Exported SavedModels (tfssl-export), served through the SavedModel itself.")
flags.DEFINE_integer("knn_k", 20, "Neighbours of the weighted kNN (the training split has ~1,000 images).")
flags.DEFINE_integer("seed", 0, "Seed of the stratified split.")
flags.DEFINE_string("output", "benchmarks/results/transfer_digits.json", "Where to write the figures.")
FLAGS = flags.FLAGS


def digits_splits(seed=0):
    """{"train" | "val" | "test": (uint8 images [N, 8, 8, 1], int64 labels [N])}, stratified and fixed."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # 0..16 -> 0..255
    labels = digits.target.astype(np.int64)
    rest_x, test_x, rest_y, test_y = train_test_split(images, labels, test_size=0.3, stratify=labels,
                                                      random_state=seed)
    train_x, val_x, train_y, val_y = train_test_split(rest_x, rest_y, test_size=0.2, stratify=rest_y,
                                                      random_state=seed)
    return {"train": (train_x, train_y), "val": (val_x, val_y), "test": (test_x, test_y)}


def run_name(model_dir):
    """A run's short name: its directory, or `parent/run` for the benchmarks' `<job>/run` layout."""
    parts = os.path.normpath(os.path.abspath(model_dir)).split(os.sep)
    return "/".join(parts[-2:]) if parts[-1] == "run" else parts[-1]


def evaluate(embed, image_size, splits):
    """Linear probe and kNN test / val accuracy of `embed` on the digit splits at `image_size`."""
    import tensorflow as tf

    from tfssl.evaluation import evaluate_features
    from tfssl.evaluation.features import extract_features

    feats = {}
    for name, (x, y) in splits.items():
        dataset = tf.data.Dataset.from_tensor_slices((x, y))
        feats[name] = extract_features(embed, dataset, image_size, batch_size=256, verbose=0)
    result = evaluate_features(feats["train"], feats["val"], feats["test"], num_classes=10, knn_k=FLAGS.knn_k)
    return {"linear": result["linear"], "knn": result["knn"], "feature_dim": int(feats["train"][0].shape[1])}


def main(_):
    from tfssl.evaluation.run import random_init_encoder, raw_pixels
    from tfssl.export import ExportedEncoder
    from tfssl.training import restore_model

    if not FLAGS.model_dirs and not FLAGS.exports:
        raise app.UsageError("pass --model_dirs and/or --exports: the encoders to transfer")
    splits = digits_splits(FLAGS.seed)
    results = {"machine": _common.machine(), "dataset": "sklearn digits (8x8, upsampled)",
               "num_examples": {k: int(len(v[1])) for k, v in splits.items()}, "encoders": {}}
    rows = []
    for model_dir in FLAGS.model_dirs:
        model, config, path = restore_model(model_dir)
        name = f"{config.method} ({run_name(model_dir)})"
        results["encoders"][name] = {"source": path, **evaluate(model.representation(), config.image_size, splits)}
        rows.append(name)
        random_name = f"random init ({config.method})"
        if random_name not in results["encoders"]:
            results["encoders"][random_name] = evaluate(random_init_encoder(config), config.image_size, splits)
            rows.append(random_name)
        size = config.image_size
    for export in FLAGS.exports:
        embed = ExportedEncoder(export)
        name = f"export {os.path.normpath(export)}"
        results["encoders"][name] = {"source": embed.version_dir, **evaluate(embed, embed.image_size, splits)}
        rows.append(name)
        size = embed.image_size
    results["encoders"]["raw pixels"] = evaluate(raw_pixels, size, splits)
    rows.append("raw pixels")
    _common.write_json(FLAGS.output, results)
    print(f"\n{'':40s} {'linear test':>11s} {'kNN test':>9s} {'linear val':>10s}")
    for name in rows:
        r = results["encoders"][name]
        print(f"{name:40s} {100 * r['linear']['test_accuracy']:11.2f} {100 * r['knn']['test_accuracy']:9.2f} "
              f"{100 * r['linear']['val_accuracy']:10.2f}")
    print(f"Wrote {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
