"""Fashion-MNIST accuracy of a method beside random-init and supervised encoders of the same architecture.

The recipe is the flagfile itself (default flags/simclr_fashion_mnist.flags; every method has a
flags/<method>_fashion_mnist.flags at the same encoder and budget), so the number in README is the
number that flagfile gives. Protocols: linear probe (l2 selected on the validation split carved from
train) and weighted kNN (k=200, T=0.1); test reported once. The supervised baseline trains the same
encoder with labels for `--supervised_epochs`, keeps the epoch with the best validation accuracy, and
is also evaluated with the same linear probe and kNN on its frozen features.

  python benchmarks/accuracy.py --out_dir=runs/bench_fmnist            # full budget (~1 h here)
  python benchmarks/accuracy.py --out_dir=/tmp/quick --epochs=1 --supervised_epochs=1   # smoke
  python benchmarks/accuracy.py --flagfile_path=flags/byol_fashion_mnist.flags --out_dir=runs/bench_byol \
      --supervised_epochs=0 --output=benchmarks/results/accuracy_byol_fashion_mnist.json
  python benchmarks/accuracy_table.py        # the README table from every results JSON

Pre-training time and peak memory come from the run's timing.json, summed over resumed segments.
`--supervised_epochs=0` skips the supervised baseline (it does not depend on the method).
"""
import time

from absl import app, flags

import _common

flags.DEFINE_string("flagfile_path", "flags/simclr_fashion_mnist.flags", "Method recipe (flagfile).")
flags.DEFINE_string("out_dir", "runs/bench_fmnist", "Run directory (resumes if it exists).")
flags.DEFINE_integer("epochs", 0, "Override the recipe's epochs (0 = keep).")
flags.DEFINE_integer("supervised_epochs", 8, "Epochs of the supervised baseline (0 = skip it).")
flags.DEFINE_string("output", "benchmarks/results/accuracy_fashion_mnist.json", "Figures (JSON).")
FLAGS = flags.FLAGS


def read_flagfile(path):
    """The flagfile's `TrainConfig`, parsed as tfssl-train parses it."""
    from tfssl.config import load_flagfile

    return load_flagfile(path)


def supervised_baseline(config, epochs, cache_dir):
    """Trains the encoder + linear classifier with labels; returns (encoder, figures)."""
    import keras
    import tensorflow as tf

    from tfssl.augment import SimCLRAugment, center_resize
    from tfssl.methods import build_method

    keras.mixed_precision.set_global_policy(
        "float32" if config.mixed_precision == "none" else config.mixed_precision)
    keras.utils.set_random_seed(config.seed + 2)
    train, val, test = (config.load_split(s) for s in (config.train_split, config.val_split, config.test_split))
    # The method's representation (the encoder for most; patchify + patch encoder + pooling for CPC).
    encoder = build_method(config).representation()
    classifier = keras.Sequential([encoder, keras.layers.Dense(train.num_classes, dtype="float32")])
    # Mild augmentation (crops of >= 50% area, flips): the usual supervised recipe, not SimCLR's.
    augment = SimCLRAugment(config.image_size, color_jitter_strength=0.0, jitter_prob=0.0,
                            grayscale_prob=0.0, crop_area=(0.5, 1.0), blur=False)
    steps = train.num_examples // config.batch_size
    schedule = keras.optimizers.schedules.CosineDecay(1e-3 * config.batch_size / 256, epochs * steps)
    classifier.compile(optimizer=keras.optimizers.Adam(schedule),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"])

    def train_ds(epoch):
        ds = train.dataset.shuffle(train.num_examples, seed=epoch).batch(config.batch_size, drop_remainder=True)
        ds = ds.enumerate().map(lambda i, e: (augment(e[0], tf.stack([tf.cast(epoch, tf.int64), i])), e[1]),
                                num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)

    def eval_ds(split):
        return split.dataset.batch(512).map(lambda x, y, i: (center_resize(x, config.image_size), y))

    best = (-1.0, None, -1)
    for epoch in range(epochs):
        classifier.fit(train_ds(epoch), epochs=1, verbose=2)
        _, val_acc = classifier.evaluate(eval_ds(val), verbose=0)
        print(f"supervised epoch {epoch + 1}/{epochs}: val accuracy {val_acc:.4f}")
        if val_acc > best[0]:
            best = (val_acc, [w.numpy() for w in classifier.weights], epoch + 1)
    for variable, value in zip(classifier.weights, best[1]):
        variable.assign(value)
    _, test_acc = classifier.evaluate(eval_ds(test), verbose=0)
    keras.mixed_precision.set_global_policy("float32")
    fp32_encoder = build_method(config).representation()
    fp32_encoder.set_weights(encoder.get_weights())
    return fp32_encoder, {"val_accuracy": float(best[0]), "test_accuracy": float(test_acc),
                          "selected_epoch": best[2], "epochs": epochs}


def main(_):
    import dataclasses
    import json
    import os

    from tfssl.evaluation.run import evaluate_encoder, evaluate_run, format_table
    from tfssl.training import TIMING_FILE, pretrain

    config = read_flagfile(FLAGS.flagfile_path)
    config.model_dir = FLAGS.out_dir
    if FLAGS.epochs:
        config.epochs = FLAGS.epochs
    results = {"machine": _common.machine(), "config": dataclasses.asdict(config), "method": config.method}
    start = time.time()
    train_result = pretrain(config)
    timing_path = os.path.join(config.model_dir, TIMING_FILE)
    if os.path.exists(timing_path):
        with open(timing_path) as f:
            timing = json.load(f)
        results["pretrain_seconds"], results["pretrain_segments"] = timing["seconds"], timing["segments"]
        results["pretrain_peak_rss_mib"] = timing["peak_rss_mib"]
    else:  # a run from before timing.json existed: this process's own share only
        results["pretrain_seconds"] = round(time.time() - start, 1)
    results["pretrain_final"] = {k: v for k, v in train_result.items() if isinstance(v, (int, float))}

    start = time.time()
    evaluation = evaluate_run(config.model_dir)
    results["eval_seconds"] = round(time.time() - start, 1)
    results[config.method] = evaluation["encoder"]
    results["random_init"], results["raw_pixels"] = evaluation["random_init"], evaluation["raw_pixels"]
    print(format_table(evaluation))
    names = [config.method, "random_init", "raw_pixels"]

    if FLAGS.supervised_epochs:
        start = time.time()
        encoder, supervised = supervised_baseline(config, FLAGS.supervised_epochs, config.model_dir)
        results["supervised_seconds"] = round(time.time() - start, 1)
        results["supervised"] = {"end_to_end": supervised,
                                 **evaluate_encoder(encoder, "supervised", config,
                                                    os.path.join(config.model_dir, "eval"))}
        names.append("supervised")
    results["peak_rss_mib"] = round(_common.peak_rss_mib(), 1)
    _common.write_json(FLAGS.output, results)
    print(f"\n{'':12s} {'linear test':>11s} {'kNN test':>9s}")
    for name in names:
        r = results[name]
        print(f"{name:12s} {r['linear']['test_accuracy']:11.4f} {r['knn']['test_accuracy']:9.4f}")
    if "supervised" in results:
        supervised = results["supervised"]["end_to_end"]
        print(f"supervised end-to-end test accuracy {supervised['test_accuracy']:.4f} "
              f"(epoch {supervised['selected_epoch']} selected on validation)")
    print(f"pretrain {results['pretrain_seconds']} s, eval {results['eval_seconds']} s, "
          f"supervised {results.get('supervised_seconds', 0)} s, peak RSS {results['peak_rss_mib']} MiB")
    print(f"Wrote {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
