"""Same recipe, two commits: does a change move Fashion-MNIST accuracy by more than run-to-run noise?

Each commit is checked out once as a git worktree (so editing this checkout while the runs go on changes
nothing), and every (commit, method, seed) job runs that commit's own benchmarks/accuracy.py on that
commit's own flagfile flags/<method>_fashion_mnist.flags, with the epochs, seed and precision overridden
the same way for both. Jobs whose JSON exists are skipped, so the command resumes; after each job the
comparison table is rewritten (markdown), with the spread between seeds as the noise estimate.

  python benchmarks/regression.py --base=4862b62 --head=HEAD --epochs=3 \
      --methods=simclr,moco_v1,moco_v3,simsiam,instdis,barlow_twins,vicreg --noise_method=simclr
  python benchmarks/regression.py --base= --head=HEAD --epochs=0 --methods=simclr,moco_v2,byol  # full budget
"""
import os

from absl import app, flags

import _common  # noqa: F401  (environment defaults)
import jobs
from jobs import figures, run_accuracy_job

flags.DEFINE_string("base", "4862b62", "Commit before the change ('' = measure --head only).")
flags.DEFINE_string("head", "HEAD", "Commit with the change.")
flags.DEFINE_list("methods", ["simclr"], "Methods (each commit's flags/<method>_fashion_mnist.flags).")
flags.DEFINE_integer("epochs", 3, "Pre-training epochs (0 = the flagfile's own budget).")
flags.DEFINE_list("seeds", ["0"], "Seeds run for every method.")
flags.DEFINE_string("noise_method", "", "Also run this method at --noise_seeds on --head (noise estimate).")
flags.DEFINE_list("noise_seeds", ["0", "1"], "Seeds of the noise estimate.")
flags.DEFINE_string("precision", "none", "--mixed_precision of every run (none = float32).")
flags.DEFINE_string("work_dir", "runs/regression", "Worktrees and run directories.")
flags.DEFINE_string("results_dir", "benchmarks/results/regression", "Per-job JSON and the table.")
FLAGS = flags.FLAGS



def run_job(sha, code, method, seed, supervised_epochs=0):
    """One pre-train + evaluation of `method` on the code at `code` (plus a supervised baseline of the same
    encoder when `supervised_epochs`); returns the JSON path (skips the job if that JSON exists)."""
    budget = f"{FLAGS.epochs}ep" if FLAGS.epochs else "full"
    recipe = os.path.join(code, "flags", f"{method}_fashion_mnist.flags")
    return run_accuracy_job(code, f"{method}_{sha}_{budget}_s{seed}", recipe,
                            {"seed": seed, "mixed_precision": FLAGS.precision}, FLAGS.results_dir, FLAGS.work_dir,
                            FLAGS.epochs, supervised_epochs, tag="regression")


def worktree(commit):
    return jobs.worktree(commit, FLAGS.work_dir)


def write_table(rows, noise):
    lines = ["| method | commit | seed | linear test | kNN test | linear val | pre-train min |",
             "|---|---|---|---|---|---|---|"]
    for method, sha, seed, fig in rows:
        lines.append(f"| {method} | {sha} | {seed} | {fig['linear']:.2f} | {fig['knn']:.2f} | "
                     f"{fig['val_linear']:.2f} | {fig['minutes']:.1f} |")
    if len(noise) > 1:
        spread = {k: max(f[k] for f in noise) - min(f[k] for f in noise) for k in ("linear", "knn")}
        lines.append(f"\nNoise ({FLAGS.noise_method}, seeds {','.join(FLAGS.noise_seeds)}, same commit): "
                     f"linear spread {spread['linear']:.2f}, kNN spread {spread['knn']:.2f} points.")
    budget = f"{FLAGS.epochs}ep" if FLAGS.epochs else "full"
    path = os.path.join(FLAGS.results_dir, f"table_{budget}.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def main(_):
    os.makedirs(FLAGS.results_dir, exist_ok=True)
    codes = [worktree(c) for c in ([FLAGS.base] if FLAGS.base else []) + [FLAGS.head]]
    head_sha, head_code = codes[-1]
    jobs = []
    if FLAGS.noise_method:
        jobs += [(head_sha, head_code, FLAGS.noise_method, s) for s in FLAGS.noise_seeds]
    for method in FLAGS.methods:
        for seed in FLAGS.seeds:
            jobs += [(sha, code, method, seed) for sha, code in codes]
    rows, noise, seen = [], [], set()
    for sha, code, method, seed in jobs:
        if (sha, method, seed) in seen:
            continue
        seen.add((sha, method, seed))
        fig = figures(run_job(sha, code, method, seed))
        rows.append((method, sha, seed, fig))
        if method == FLAGS.noise_method and sha == head_sha and seed in FLAGS.noise_seeds:
            noise.append(fig)
        write_table(sorted(rows, key=lambda r: (r[0], r[1] != head_sha, r[2])), noise)


if __name__ == "__main__":
    app.run(main)
