"""Prints the README's Fashion-MNIST table from the JSON files benchmarks/accuracy.py wrote.

  python benchmarks/accuracy_table.py [--results_dir=benchmarks/results]

One row per method (linear probe and weighted kNN, validation-selected, test reported; pre-training wall
time and peak memory), then the baselines: random-init and supervised training of the same encoder, and
the raw pixels through the same probes (from a run that has them, else benchmarks/raw_pixels.py's JSON).
"""
import glob
import json
import os

from absl import app, flags

flags.DEFINE_string("results_dir", "benchmarks/results", "Where accuracy*_fashion_mnist.json live.")
FLAGS = flags.FLAGS

ORDER = ("simclr", "moco_v1", "moco_v2", "moco_v3", "byol", "simsiam", "instdis", "barlow_twins", "vicreg", "swav",
         "dino")
RAW_PIXELS = "raw_pixels_fashion_mnist.json"


def _row(name, figures, minutes="", memory=""):
    linear, knn = figures["linear"], figures["knn"]
    return (f"| {name} | {100 * linear['test_accuracy']:.1f} | {100 * knn['test_accuracy']:.1f} | "
            f"{100 * linear['val_accuracy']:.1f} / {100 * knn['val_accuracy']:.1f} | {minutes} | {memory} |")


def table(results_dir):
    """Markdown lines of the table (methods in `ORDER`, baselines last)."""
    runs = {}
    for path in glob.glob(os.path.join(results_dir, "accuracy*_fashion_mnist.json")):
        with open(path) as f:
            data = json.load(f)
        runs[data.get("method", "simclr")] = data
    if not runs:
        raise SystemExit(f"no accuracy*_fashion_mnist.json in {results_dir}: run benchmarks/accuracy.py first")
    lines = ["| method | linear test % | kNN test % | val % (linear / kNN) | pre-train min | peak GiB |",
             "|---|---:|---:|---:|---:|---:|"]
    for method in sorted(runs, key=lambda m: ORDER.index(m) if m in ORDER else len(ORDER)):
        data = runs[method]
        peak = data.get("pretrain_peak_rss_mib", data.get("peak_rss_mib", 0.0))
        lines.append(_row(method, data[method], f"{data['pretrain_seconds'] / 60:.0f}", f"{peak / 1024:.1f}"))
    baseline = runs.get("simclr") or next(iter(runs.values()))
    lines.append(_row("random init (same encoder)", baseline["random_init"]))
    raw = next((data["raw_pixels"] for data in runs.values() if "raw_pixels" in data), None)
    if raw is None and os.path.exists(os.path.join(results_dir, RAW_PIXELS)):
        with open(os.path.join(results_dir, RAW_PIXELS)) as f:
            raw = json.load(f)["raw_pixels"]
    if raw is not None:
        lines.append(_row("raw pixels (same probes)", raw))
    if "supervised" in baseline:
        lines.append(_row("supervised (same encoder, labels)", baseline["supervised"],
                          f"{baseline['supervised_seconds'] / 60:.0f}"))
    return lines


def main(_):
    print("\n".join(table(FLAGS.results_dir)))


if __name__ == "__main__":
    app.run(main)
