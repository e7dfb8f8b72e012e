"""Semi-supervised Fashion-MNIST: fine-tune with 1% / 10% of the labels from an SSL encoder vs random init.

For every encoder source (a tfssl-train run, a .keras file or an export) and every label fraction, two
runs of `tfssl.finetune.fine_tune` with identical settings, seeds and labelled subset: one from the
SSL weights, one from a fresh initialisation of the same architecture (projection-head layers kept
by the run included). The epoch is selected on the validation split carved from train; the test split
is scored once per run. Writes a JSON file and prints a markdown table for README.

  python benchmarks/semi_supervised.py --encoders=simclr=/work/bench/simclr_fmnist      # full (hours on CPU)
  python benchmarks/semi_supervised.py --train_split='train[:2000]' --val_split='validation[:500]' \
      --test_split='test[:500]' --epochs=1,1 --out_dir=/tmp/ssl_smoke --output=/tmp/ssl_smoke.json  # smoke

Finished runs are reused when the script is re-run with the same settings (their result.json is
kept in --out_dir), so an interrupted benchmark resumes at the first unfinished run.
"""
import dataclasses
import json
import os
import time

from absl import app, flags

import _common

flags.DEFINE_list("encoders", ["simclr=/work/bench/simclr_fmnist"],
                  "name=path pairs: SSL encoder sources (run dir, .keras, export) to compare with random init.")
flags.DEFINE_list("label_fractions", ["0.01", "0.1"], "Label fractions of the train split.")
flags.DEFINE_list("epochs", ["60", "30"], "Fine-tuning epochs for each label fraction (SimCLR: 60 for 1%, 30 for "
                  "10%).")
flags.DEFINE_list("seeds", ["0"], "Seeds (of the labelled subset, head init, order and augmentation).")
flags.DEFINE_string("train_split", "train", "Split the labelled subsets are drawn from.")
flags.DEFINE_string("val_split", "validation", "Epoch selection split.")
flags.DEFINE_string("test_split", "test", "Split reported once per run.")
flags.DEFINE_integer("batch_size", 64, "Fine-tuning batch size.")
flags.DEFINE_float("learning_rate", 0.05, "Peak learning rate (cosine decay).")
flags.DEFINE_string("optimizer", "sgd", "Optimizer (sgd, lars, adamw, lamb).")
flags.DEFINE_string("fine_tune_after_block", "none", "Freeze up to this block in both arms.")
flags.DEFINE_bool("zero_init_head", True, "Zero-initialised classifier in both arms (SimCLRv2).")
flags.DEFINE_list("arms", ["ssl", "random_init", "raw_pixels"],
                  "Arms per encoder and fraction: ssl, random_init (fine-tuned) and raw_pixels (a linear probe on "
                  "the flattened pixels of the same labelled subset, l2 chosen on validation: the no-learning "
                  "baseline).")
flags.DEFINE_string("out_dir", "runs/semi_supervised", "Where each run's result.json / classifier.keras go.")
flags.DEFINE_string("output", "benchmarks/results/semi_supervised_fashion_mnist.json", "Figures (JSON).")
FLAGS = flags.FLAGS


def run_one(config, verbose=1):
    """Runs (or reuses a finished identical run of) one fine-tuning configuration."""
    from tfssl.finetune import fine_tune

    path = os.path.join(config.output_dir, "result.json")
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if saved.get("config") == dataclasses.asdict(config):
            print(f"  reusing {path}")
            return saved
    return fine_tune(config, verbose=verbose)


def raw_pixels_run(config):
    """Logistic regression on the raw pixels of `config`'s labelled subset; val-selected l2, test scored once."""
    from tfssl.evaluation import extract_features, linear_probe
    from tfssl.evaluation.run import raw_pixels
    from tfssl.finetune import class_balanced_subset, split_labels

    start = time.time()
    train = config.load_split(config.train_split)
    indices = class_balanced_subset(split_labels(train), config.label_fraction, config.subset_seed, train.num_classes)
    size = int(train.dataset.element_spec[0].shape[0])
    x, y = extract_features(raw_pixels, train.dataset, size, verbose=0)
    val, test = (extract_features(raw_pixels, config.load_split(name).dataset, size, verbose=0)
                 for name in (config.val_split, config.test_split))
    probe = linear_probe((x[indices], y[indices]), val, test, train.num_classes)
    return {"val_accuracy": probe["val_accuracy"], "test_accuracy": probe["test_accuracy"],
            "best_l2": probe["best_l2"], "num_labelled": int(len(indices)), "selected_epoch": None,
            "seconds": round(time.time() - start, 1), "source": "raw pixels"}


def summary(results):
    """Mean (and spread over seeds) of val / test accuracy."""
    import numpy as np

    val = np.array([r["val_accuracy"] for r in results])
    test = np.array([r["test_accuracy"] for r in results])
    return {"val_accuracy": float(val.mean()), "test_accuracy": float(test.mean()),
            "test_accuracy_std": float(test.std()), "seeds": len(results),
            "num_labelled": results[0]["num_labelled"], "selected_epochs": [r["selected_epoch"] for r in results],
            "seconds": round(sum(r.get("seconds", 0.0) for r in results), 1)}


def markdown_table(figures):
    lines = ["| encoder | labels | arm | val | test |", "|---|---|---|---|---|"]
    for name, per_fraction in figures.items():
        for fraction, arms in per_fraction.items():
            for arm, fig in arms.items():
                spread = f" ± {fig['test_accuracy_std']:.3f}" if fig["seeds"] > 1 else ""
                lines.append(f"| {name} | {float(fraction):.0%} ({fig['num_labelled']}) | {arm} | "
                             f"{fig['val_accuracy']:.4f} | {fig['test_accuracy']:.4f}{spread} |")
    return "\n".join(lines)


def parse_encoders(pairs):
    out = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise app.UsageError(f"--encoders entries are name=path, got {pair!r}")
        out[name] = path
    return out


def main(_):
    from tfssl.finetune import FineTuneConfig

    encoders = parse_encoders(FLAGS.encoders)
    unknown = set(FLAGS.arms) - {"ssl", "random_init", "raw_pixels"}
    if unknown:
        raise app.UsageError(f"--arms takes ssl, random_init, raw_pixels; got {', '.join(sorted(unknown))}")
    fractions = [float(f) for f in FLAGS.label_fractions]
    epochs = [int(e) for e in FLAGS.epochs]
    if len(epochs) != len(fractions):
        raise app.UsageError("--epochs needs one value per --label_fractions entry")
    seeds = [int(s) for s in FLAGS.seeds]
    start = time.time()
    figures, runs = {}, []
    for name, path in encoders.items():
        figures[name] = {}
        for fraction, num_epochs in zip(fractions, epochs):
            arms = {}
            for arm in FLAGS.arms:
                results = []
                for seed in seeds:
                    config = FineTuneConfig(
                        encoder=path, random_init=arm == "random_init", dataset="fashion_mnist",
                        train_split=FLAGS.train_split, val_split=FLAGS.val_split, test_split=FLAGS.test_split,
                        label_fraction=fraction, subset_seed=seed, seed=seed, epochs=num_epochs,
                        batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate, optimizer=FLAGS.optimizer,
                        fine_tune_after_block=FLAGS.fine_tune_after_block, zero_init_head=FLAGS.zero_init_head,
                        output_dir=os.path.join(FLAGS.out_dir, name, f"labels{fraction:g}", f"{arm}_seed{seed}"))
                    print(f"\n== {name} {fraction:.0%} labels, {arm}, seed {seed}: {config.output_dir}", flush=True)
                    result = raw_pixels_run(config) if arm == "raw_pixels" else run_one(config)
                    results.append(result)
                    runs.append({"arm": arm, **{k: result[k] for k in ("val_accuracy", "test_accuracy",
                                                                       "selected_epoch", "num_labelled",
                                                                       "result_path") if k in result}})
                arms[arm] = summary(results)
                arms[arm]["source"] = results[0]["source"]
            figures[name][f"{fraction:g}"] = arms
    table = markdown_table(figures)
    output = {"machine": _common.machine(), "figures": figures, "runs": runs, "markdown": table,
              "settings": {k: FLAGS[k].value for k in ("label_fractions", "epochs", "seeds", "train_split",
                                                       "val_split", "test_split", "batch_size", "learning_rate",
                                                       "optimizer", "fine_tune_after_block", "zero_init_head",
                                                       "arms")},
              "seconds": round(time.time() - start, 1), "peak_rss_mib": round(_common.peak_rss_mib(), 1)}
    _common.write_json(FLAGS.output, output)
    print("\n" + table)
    print(f"\nWrote {FLAGS.output} ({output['seconds']} s)")


if __name__ == "__main__":
    app.run(main)
