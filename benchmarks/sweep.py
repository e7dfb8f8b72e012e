"""A resumable hyper-parameter sweep of one recipe, selected on validation, with its table.

Every combination of the --grid values runs as its own job (pre-train + evaluate, benchmarks/jobs.py) on one
commit; a job whose JSON exists is skipped, so the command resumes. After every job the table is rewritten
(markdown + CSV), sorted by validation linear accuracy: the selected setting is the best on validation, and
its test figures are the ones to report (test is never used to choose).

  python benchmarks/sweep.py --recipe=flags/simclr_fashion_mnist.flags --epochs=3 \\
      --grid=learning_rate=0.5,1.0,2.0 --grid=simclr_temperature=0.2,0.5 --name=simclr_lr_t
"""
import csv
import itertools
import os

from absl import app, flags

import _common  # noqa: F401  (environment defaults)
from jobs import figures, run_accuracy_job, worktree

flags.DEFINE_string("recipe", "flags/simclr_fashion_mnist.flags", "Flagfile swept (path inside the repo).")
flags.DEFINE_multi_string("grid", [], "flag=v1,v2,... (repeat for more flags; every combination runs).")
flags.DEFINE_string("name", "", "Sweep name: files sweep_<name>.{md,csv} (default: the recipe's name).")
flags.DEFINE_string("head", "HEAD", "Commit the jobs run on.")
flags.DEFINE_integer("epochs", 3, "Pre-training epochs of every job (0 = the recipe's own).")
flags.DEFINE_list("seeds", ["0"], "Seeds of every setting.")
flags.DEFINE_string("precision", "none", "--mixed_precision of every job (none = float32).")
flags.DEFINE_string("work_dir", "runs/sweep", "Worktrees and run directories.")
flags.DEFINE_string("results_dir", "benchmarks/results/sweep", "Per-job JSON and the tables.")
FLAGS = flags.FLAGS


def parse_grid(entries):
    """["lr=0.5,1", "t=0.2"] -> [("lr", ["0.5", "1"]), ("t", ["0.2"])] (one-line error for a bad entry)."""
    grid = []
    for entry in entries:
        key, sep, values = entry.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key or not values.strip():
            raise app.UsageError(f"--grid={entry!r} must be flag=v1,v2,..., e.g. --grid=learning_rate=0.5,1.0")
        if key in {k for k, _ in grid}:
            raise app.UsageError(f"--grid names {key} twice; give all its values in one --grid")
        grid.append((key, [v.strip() for v in values.split(",")]))
    return grid


def job_name(sweep, sha, setting, seed):
    parts = "_".join(f"{k}{v}" for k, v in setting.items())
    return f"{sweep}_{sha}_{FLAGS.epochs or 'full'}ep_{parts}_s{seed}".replace("/", "-")


def write_tables(sweep, keys, rows):
    rows = sorted(rows, key=lambda r: -r["val_linear"])
    columns = [*keys, "seed", "val_linear", "val_knn", "linear", "knn", "minutes"]
    with open(os.path.join(FLAGS.results_dir, f"sweep_{sweep}.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    lines = ["| " + " | ".join([*keys, "seed", "linear val", "kNN val", "linear test", "kNN test", "min"]) + " |",
             "|" + "---|" * (len(keys) + 6)]
    for i, r in enumerate(rows):
        mark = " **(selected on val)**" if i == 0 else ""
        lines.append("| " + " | ".join([*(str(r[k]) for k in keys), str(r["seed"])]) +
                     f" | {r['val_linear']:.2f}{mark} | {r['val_knn']:.2f} | {r['linear']:.2f} | {r['knn']:.2f} | "
                     f"{r['minutes']:.1f} |")
    with open(os.path.join(FLAGS.results_dir, f"sweep_{sweep}.md"), "w") as f:
        f.write(f"Sweep of {FLAGS.recipe} at {FLAGS.epochs or 'its own'} epochs, {FLAGS.precision} precision\n\n")
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def main(_):
    grid = parse_grid(FLAGS.grid)
    if not grid:
        raise app.UsageError("give at least one --grid=flag=v1,v2,...")
    sha, code = worktree(FLAGS.head, FLAGS.work_dir)
    recipe = os.path.join(code, FLAGS.recipe)
    sweep = FLAGS.name or os.path.basename(FLAGS.recipe).replace(".flags", "")
    os.makedirs(FLAGS.results_dir, exist_ok=True)
    keys = [k for k, _ in grid]
    rows = []
    for values in itertools.product(*(v for _, v in grid)):
        setting = dict(zip(keys, values))
        for seed in FLAGS.seeds:
            overrides = {**setting, "seed": seed, "mixed_precision": FLAGS.precision}
            path = run_accuracy_job(code, job_name(sweep, sha, setting, seed), recipe, overrides,
                                    FLAGS.results_dir, FLAGS.work_dir, FLAGS.epochs, tag="sweep")
            rows.append({**setting, "seed": seed, **figures(path)})
            write_tables(sweep, keys, rows)


if __name__ == "__main__":
    app.run(main)
