"""1 process vs 2 worker processes (MultiWorkerMirroredStrategy on 127.0.0.1), same global batch.

Runs `tfssl-train` alone and `tfssl-launch --workers=2` on the same flags, back to back, and reports the
median step time of each (from metrics.csv, compile steps skipped) and the bytes each worker exchanges per
step, counted from the model: the gradient all-reduce (every trainable weight, float32), the
synchronised-BN moments, and the embeddings a global-batch loss gathers (SimCLR: both views'
projections, forward and backward). Ring all-reduce / all-gather: each worker sends (K-1)/K of an
all-gather's data and 2(K-1)/K of an all-reduce's.

  python benchmarks/multi_worker.py --method=simclr --steps=30
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
from absl import app, flags

import _common

flags.DEFINE_string("method", "simclr", "Method.")
flags.DEFINE_integer("steps", 30, "Training steps per run (the first `skip` are not timed).")
flags.DEFINE_integer("skip", 5, "Steps not timed (tracing, compilation).")
flags.DEFINE_integer("batch_size", 64, "Global batch size.")
flags.DEFINE_integer("image_size", 28, "Crop size.")
flags.DEFINE_float("width_multiplier", 0.25, "ResNet-18 width.")
flags.DEFINE_bool("sync_bn", True, "Synchronised BN (the multi-worker comparison's normalisation).")
flags.DEFINE_string("output", "benchmarks/results/multi_worker.json", "Where to write the figures.")
FLAGS = flags.FLAGS


def _train_args(model_dir):
    return [f"--method={FLAGS.method}", "--train_split=train[:8192]", f"--batch_size={FLAGS.batch_size}",
            f"--image_size={FLAGS.image_size}", "--encoder=resnet18", f"--width_multiplier={FLAGS.width_multiplier}",
            f"--train_steps={FLAGS.steps}", "--log_every=1", "--checkpoint_every=100000",
            f"--sync_bn={str(FLAGS.sync_bn).lower()}", f"--model_dir={model_dir}"]


def _step_seconds(model_dir):
    import csv

    with open(os.path.join(model_dir, "metrics.csv")) as f:
        elapsed = [float(r["elapsed_s"]) for r in csv.DictReader(f)]
    return float(np.median(np.diff(elapsed[FLAGS.skip - 1:])))


def _exchanged_bytes(num_workers):
    """Per worker and step: (all-reduce payload, all-gather payload, bytes sent by the ring)."""
    import keras

    from tfssl.config import TrainConfig
    from tfssl.methods import build_method

    config = TrainConfig(model_dir="unused", method=FLAGS.method, image_size=FLAGS.image_size,
                         width_multiplier=FLAGS.width_multiplier, sync_bn=FLAGS.sync_bn,
                         batch_size=FLAGS.batch_size)
    model = build_method(config, num_classes=10)
    model.build_heads()
    gradients = 4 * sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    channels = sum(layer.gamma.shape[0] for layer in model._flatten_layers()
                   if isinstance(layer, keras.layers.BatchNormalization) and getattr(layer, "synchronized", False))
    # Forward: mean and mean-of-squares per channel; backward: the two matching sums. Two views per step.
    bn = 4 * channels * 2 * 2 * 2
    gathered = 0
    if FLAGS.method == "simclr":
        gathered = 4 * FLAGS.batch_size * 2 * config.options().proj_dim * 2  # 2 views' z, forward + gradient back
    ring = 2 * (num_workers - 1) / num_workers * (gradients + bn) + (num_workers - 1) / num_workers * gathered
    return {"all_reduce_bytes": gradients + bn, "gradient_bytes": gradients, "sync_bn_bytes": bn,
            "all_gather_bytes": gathered, "ring_bytes_sent_per_worker": int(ring)}


def main(_):
    root = tempfile.mkdtemp(prefix="tfssl_mw_bench_")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    one = os.path.join(root, "one")
    subprocess.run([sys.executable, "-m", "tfssl.cli.train", *_train_args(one)], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    two = os.path.join(root, "two")
    subprocess.run([sys.executable, "-m", "tfssl.cli.launch", "--workers=2", "--", *_train_args(two)], env=env,
                   check=True, stdout=subprocess.DEVNULL)
    result = {"machine": _common.machine(), "flags": {k: FLAGS[k].value for k in (
        "method", "steps", "skip", "batch_size", "image_size", "width_multiplier", "sync_bn")},
        "one_process_step_s": _step_seconds(one), "two_workers_step_s": _step_seconds(two),
        **_exchanged_bytes(2)}
    result["slowdown"] = result["two_workers_step_s"] / result["one_process_step_s"]
    _common.write_json(FLAGS.output, result)
    for key, value in result.items():
        if key not in ("machine", "flags"):
            print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")


if __name__ == "__main__":
    app.run(main)
