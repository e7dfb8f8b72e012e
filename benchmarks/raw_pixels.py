"""The no-learning baseline of the Fashion-MNIST tables: the raw pixels through the same probes.

Linear probe (each pixel standardised on the training split, l2 selected on the validation split carved
from train) and weighted kNN (k=200, T=0.1) on the flattened 28 x 28 images, test scored once: the
number a method must beat for its representation to be worth training.

  python benchmarks/raw_pixels.py [--flagfile_path=flags/simclr_fashion_mnist.flags]
"""
import os
import tempfile
import time

from absl import app, flags

import _common

flags.DEFINE_string("flagfile_path", "flags/simclr_fashion_mnist.flags", "Recipe whose data and splits to use.")
flags.DEFINE_string("output", "benchmarks/results/raw_pixels_fashion_mnist.json", "Figures (JSON).")
FLAGS = flags.FLAGS


def main(_):
    from tfssl.config import load_flagfile
    from tfssl.evaluation.run import evaluate_encoder, raw_pixels

    config = load_flagfile(FLAGS.flagfile_path)
    start = time.time()
    with tempfile.TemporaryDirectory() as cache:
        figures = evaluate_encoder(raw_pixels, "raw_pixels", config, cache)
    results = {"machine": _common.machine(), "dataset": config.dataset, "image_size": config.image_size,
               "splits": [config.train_split, config.val_split, config.test_split], "val_fraction": config.val_fraction,
               "seed": config.seed, "seconds": round(time.time() - start, 1), "raw_pixels": figures}
    _common.write_json(FLAGS.output, results)
    lin, knn = figures["linear"], figures["knn"]
    print(f"raw pixels ({figures['feature_dim']} dims): linear test {100 * lin['test_accuracy']:.2f} "
          f"(val {100 * lin['val_accuracy']:.2f}, l2 {lin['best_l2']}), kNN test {100 * knn['test_accuracy']:.2f} "
          f"(val {100 * knn['val_accuracy']:.2f}); wrote {os.path.abspath(FLAGS.output)}")


if __name__ == "__main__":
    app.run(main)
