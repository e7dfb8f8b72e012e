"""The framework paper's ablation, re-measured: swap one part of a contrastive method at a time.

Falcon & Cho 2020 split a method into augmentation, encoder, representation extraction, similarity and
loss. The base here is YADIM on Fashion-MNIST (flags/yadim_fashion_mnist.flags: the union of the CPC and AMDIM
pipelines, AMDIM's encoder, the last feature map, dot product, NCE); each arm changes one part and keeps the
rest, all at one fixed budget (--train_steps, warm-up 10% of it, then the recipe's cosine) and seed. Extraction arms are the methods whose extraction it
is (AMDIM's multiscale NCE, CPC v2's context network): they keep the budget and views where their method
allows and say what else differs. Every arm: linear probe and weighted kNN (validation-selected, test
scored once), seconds per step of its own pre-training, and forward FLOPs per image of its representation.
Resumable: jobs whose JSON exists are skipped; the table (markdown + CSV) is rewritten after every job.

  python benchmarks/ablation.py --train_steps=600             # every arm
  python benchmarks/ablation.py --arms=base,similarity_cosine  # some arms
"""
import csv
import json
import os

from absl import app, flags

import _common  # noqa: F401  (environment defaults)
from jobs import figures, run_accuracy_job, worktree

# (arm, part, recipe, overrides, what it is). Overrides are flags on top of the recipe.
ARMS = (
    ("base", "-", "yadim", {}, "YADIM: union pipeline, AMDIM encoder (small), last map, dot, NCE"),
    ("augment_simclr", "augmentation", "yadim", {"yadim_pipeline": "simclr"}, "SimCLR's pipeline"),
    ("augment_amdim", "augmentation", "yadim", {"yadim_pipeline": "amdim"}, "AMDIM's pipeline alone"),
    ("augment_cpc", "augmentation", "yadim", {"yadim_pipeline": "cpc"}, "CPC's transforms alone, on whole images"),
    ("encoder_resnet18", "encoder", "yadim", {"yadim_backbone": "config", "encoder": "resnet18",
                                              "width_multiplier": 0.25, "cifar_stem": "auto"},
     "ResNet-18 x0.25 (CIFAR stem), its pooled features as the last map"),
    ("encoder_amdim_wide", "encoder", "yadim", {"yadim_ndf": 64}, "AMDIM encoder at 2x the base width"),
    ("extraction_multiscale", "extraction", "amdim", {}, "AMDIM's multiscale NCE (1-5, 1-7, 5-5), its own views"),
    ("extraction_cpc", "extraction", "cpc_v2", {}, "CPC v2: patch grid, LN ResNet, context network"),
    ("similarity_cosine", "similarity", "yadim", {"yadim_similarity": "cosine", "yadim_temperature": 0.1},
     "cosine / 0.1 instead of the dot product"),
    ("loss_nt_xent", "loss", "yadim", {"yadim_loss": "nt_xent", "yadim_similarity": "cosine",
                                       "yadim_temperature": 0.1}, "NT-Xent (2N - 1 candidates, cosine / 0.1)"),
)

flags.DEFINE_list("arms", ["all"], "Arms to run (names in ARMS), or all.")
flags.DEFINE_integer("train_steps", 600, "Pre-training steps of every arm (the fixed budget).")
flags.DEFINE_integer("seed", 0, "Seed of every arm.")
flags.DEFINE_multi_string("override", [], "flag=value applied to every arm after its own settings (e.g. smaller "
                          "splits for a smoke run: --override=train_split=train[:2048]); part of the job names.")
flags.DEFINE_string("head", "HEAD", "Commit the arms run on.")
flags.DEFINE_string("precision", "none", "--mixed_precision of every arm (none = float32).")
flags.DEFINE_string("work_dir", "runs/ablation", "Worktrees and run directories.")
flags.DEFINE_string("results_dir", "benchmarks/results/ablation", "Per-arm JSON and the table.")
FLAGS = flags.FLAGS


def warmup_epochs(recipe, steps, batch=None, train_examples=54_000):
    """--warmup_epochs that make the warm-up 10% of `steps` at the recipe's batch size (Fashion-MNIST's
    60,000 training images less the 10% validation carve = 54,000)."""
    if batch is None:
        with open(recipe) as f:
            batch = next(int(line.split("=", 1)[1]) for line in f if line.startswith("--batch_size="))
    return round(0.1 * steps / (train_examples // batch), 4)


def forward_flops(run_dir):
    """Forward FLOPs per image of a run's representation, traced at the run's image size (a patch encoder's
    representation cuts the image into its patches, so every patch is counted)."""
    from tfssl.encoders.flops import graph_forward_flops
    from tfssl.training import restore_model

    model, config, _ = restore_model(run_dir)
    channels = int(model.representation().input.shape[-1])
    return graph_forward_flops(model.representation(), (config.image_size, config.image_size, channels))


def seconds_per_step(run_dir, pretrain_seconds, steps):
    """Steady-state seconds per step: from metrics.csv's elapsed_s between the first logged step and the
    last (so graph tracing before step 1 is not counted); the whole pre-training time / steps otherwise."""
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        rows = [(int(r["step"]), float(r["elapsed_s"])) for r in csv.DictReader(f)]
    if len(rows) >= 2 and rows[-1][0] > rows[0][0]:
        return (rows[-1][1] - rows[0][1]) / (rows[-1][0] - rows[0][0])
    return pretrain_seconds / max(steps, 1)


def arm_row(arm, part, what, path, run_dir):
    with open(path) as f:
        data = json.load(f)
    steps = int(data["pretrain_final"]["step"])
    row = {"arm": arm, "part": part, "what": what, **figures(path),
           "seconds_per_step": seconds_per_step(run_dir, data["pretrain_seconds"], steps), "steps": steps}
    cached = path[:-5] + ".flops"
    if not os.path.exists(cached):
        with open(cached, "w") as f:
            f.write(str(forward_flops(run_dir)))
    with open(cached) as f:
        row["mflops"] = int(f.read()) / 1e6
    return row


def write_tables(rows):
    columns = ["arm", "part", "what", "val_linear", "linear", "val_knn", "knn", "seconds_per_step", "mflops", "steps"]
    with open(os.path.join(FLAGS.results_dir, "ablation.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    base = next((r for r in rows if r["arm"] == "base"), None)
    lines = ["| part | arm | linear test | kNN test | linear val | Δ linear vs base | s / step | MFLOPs / image |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        delta = f"{r['linear'] - base['linear']:+.2f}" if base and r is not base else "-"
        lines.append(f"| {r['part']} | {r['what']} | {r['linear']:.2f} | {r['knn']:.2f} | {r['val_linear']:.2f} | "
                     f"{delta} | {r['seconds_per_step']:.2f} | {r['mflops']:.1f} |")
    with open(os.path.join(FLAGS.results_dir, "ablation.md"), "w") as f:
        f.write(f"{FLAGS.train_steps} steps per arm, seed {FLAGS.seed}, {FLAGS.precision} precision, Fashion-MNIST\n\n")
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def main(_):
    names = [a[0] for a in ARMS]
    chosen = names if FLAGS.arms == ["all"] else FLAGS.arms
    unknown = [a for a in chosen if a not in names]
    if unknown:
        raise app.UsageError(f"unknown arm(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    extra = {}
    for entry in FLAGS.override:
        key, sep, value = entry.partition("=")
        if not sep or not key:
            raise app.UsageError(f"--override={entry!r} must be flag=value, e.g. --override=batch_size=64")
        extra[key.lstrip("-")] = value
    sha, code = worktree(FLAGS.head, FLAGS.work_dir)
    os.makedirs(FLAGS.results_dir, exist_ok=True)
    rows = []
    for arm, part, method, overrides, what in ARMS:
        if arm not in chosen:
            continue
        name = f"{arm}_{sha}_{FLAGS.train_steps}steps_s{FLAGS.seed}" + ("_override" if extra else "")
        settings = {**overrides, "train_steps": FLAGS.train_steps, "seed": FLAGS.seed,
                    "mixed_precision": FLAGS.precision, **extra}
        recipe = os.path.join(code, "flags", f"{method}_fashion_mnist.flags")
        settings["warmup_epochs"] = warmup_epochs(recipe, FLAGS.train_steps, settings.get("batch_size") and
                                                  int(settings["batch_size"]))
        path = run_accuracy_job(code, name, recipe, settings, FLAGS.results_dir, FLAGS.work_dir, tag="ablation")
        rows.append(arm_row(arm, part, what, path, os.path.join(FLAGS.work_dir, name, "run")))
        write_tables(rows)


if __name__ == "__main__":
    app.run(main)
