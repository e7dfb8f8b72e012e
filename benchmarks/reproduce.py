"""One command for the whole per-method Fashion-MNIST table, over several seeds, with the spread reported.

Every method with a flags/<method>_fashion_mnist.flags runs on one commit (checked out once as a worktree,
so editing this checkout meanwhile changes nothing) at each seed: pre-training, then linear probe and
weighted kNN (validation-selected, test scored once) beside a random-init encoder of the same architecture
and the raw pixels; seed 0 also trains the supervised baseline of the same encoder. Each job writes its
JSON and is skipped when that JSON exists, so the command resumes where it stopped; after every job the
table is rewritten as markdown and CSV (mean over seeds, spread = max - min).

  python benchmarks/reproduce.py --seeds=0,1                       # every method, the flagfiles' budgets
  python benchmarks/reproduce.py --methods=simclr,moco_v3 --epochs=3 --supervised_epochs=0
"""
import csv
import glob
import json
import os

from absl import app, flags

from regression import FLAGS, figures, run_job, worktree  # and its flags: --head, --seeds, --epochs, --precision

flags.DEFINE_integer("supervised_epochs", 10, "Epochs of the supervised baseline, trained at seed 0 (0 = none).")


def flagfile_methods(code):
    """Methods with a Fashion-MNIST flagfile at `code`, sorted."""
    return sorted(os.path.basename(p)[:-len("_fashion_mnist.flags")]
                  for p in glob.glob(os.path.join(code, "flags", "*_fashion_mnist.flags")))


def baseline_figures(path, name):
    """Test accuracies of baseline `name` ("random_init", "raw_pixels", "supervised") in a job's JSON."""
    with open(path) as f:
        data = json.load(f)
    if name not in data:
        return None
    return {"linear": 100 * data[name]["linear"]["test_accuracy"], "knn": 100 * data[name]["knn"]["test_accuracy"]}


def summarise(label, runs):
    """One table row: mean and spread (max - min) over seeds of each figure."""
    row = {"method": label, "seeds": len(runs)}
    for key in ("linear", "knn", "val_linear", "minutes"):
        values = [r[key] for r in runs if key in r]
        if values:
            row[key] = sum(values) / len(values)
            row[key + "_spread"] = max(values) - min(values)
    return row


def write_tables(rows, budget):
    columns = ["method", "seeds", "linear", "linear_spread", "knn", "knn_spread", "val_linear", "minutes"]
    os.makedirs(FLAGS.results_dir, exist_ok=True)
    with open(os.path.join(FLAGS.results_dir, f"table_{budget}.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()} for r in rows)

    def cell(row, key):
        if key not in row:
            return "-"
        spread = row.get(key + "_spread")
        return f"{row[key]:.2f}" + (f" ± {spread / 2:.2f}" if spread is not None and row["seeds"] > 1 else "")

    lines = ["| method | seeds | linear test | kNN test | linear val | pre-train min |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['seeds']} | {cell(r, 'linear')} | {cell(r, 'knn')} | "
                     f"{cell(r, 'val_linear')} | {cell(r, 'minutes')} |")
    lines.append("\n± is half the spread (max - min) over the seeds; baselines are of the same protocol "
                 "(random init: each method's architecture at seed 0; raw pixels: the flattened images).")
    with open(os.path.join(FLAGS.results_dir, f"table_{budget}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def main(_):
    sha, code = worktree(FLAGS.head)
    methods = FLAGS.methods if FLAGS.methods != ["all"] else flagfile_methods(code)
    missing = [m for m in methods if m not in flagfile_methods(code)]
    if missing:
        raise SystemExit(f"reproduce: no flags/<method>_fashion_mnist.flags at {sha} for {', '.join(missing)}; "
                         f"choose from {', '.join(flagfile_methods(code))}")
    budget = f"{FLAGS.epochs}ep" if FLAGS.epochs else "full"
    rows, baselines = [], {}
    for method in methods:
        runs = []
        for seed in FLAGS.seeds:
            path = run_job(sha, code, method, seed, FLAGS.supervised_epochs if seed == FLAGS.seeds[0] else 0)
            runs.append(figures(path))
            if seed == FLAGS.seeds[0]:
                for name in ("raw_pixels", "random_init", "supervised"):
                    found = baseline_figures(path, name)
                    if found:
                        label = "raw pixels" if name == "raw_pixels" else f"{name.replace('_', ' ')} ({method})"
                        baselines.setdefault(label, found)
        rows.append(summarise(method, runs))
        write_tables(rows + [summarise(label, [fig]) for label, fig in baselines.items()], budget)


if __name__ == "__main__":
    FLAGS.set_default("methods", ["all"])
    FLAGS.set_default("seeds", ["0", "1"])
    FLAGS.set_default("epochs", 0)
    FLAGS.set_default("work_dir", "runs/reproduce")
    FLAGS.set_default("results_dir", "benchmarks/results/reproduce")
    app.run(main)
