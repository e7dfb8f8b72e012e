"""Throughput of SimCLR training on this machine, all measured in one run so ratios are comparable.

Measures:
  1. the machine's float32 and bfloat16 matmul rates (GFLOP/s, square matmuls, the best a dense kernel
     does here in each precision); the step is rated against the peak of its own compute precision;
  2. the SimCLR train-step rate on in-memory views (images/s; one image = its two views) and its FLOP
     rate, FLOPs counted analytically from the conv / dense layer shapes of encoder and head (forward
     multiply-adds x2, x3 for forward + backward, x2 views; BN, ReLU, pooling and the loss not counted);
  3. end-to-end rate with the real tf.data pipeline, augmentation on the host and on the device.

  python benchmarks/throughput.py --encoder=resnet18 --width_multiplier=1 --batch_size=256 --image_size=32
"""
import time

from absl import app, flags

import _common  # noqa: F401  (path set-up)
from tfssl.encoders.flops import layer_forward_flops

flags.DEFINE_string("encoder", "resnet18", "Encoder.")
flags.DEFINE_float("width_multiplier", 1.0, "Encoder width.")
flags.DEFINE_integer("batch_size", 256, "Global batch size.")
flags.DEFINE_integer("image_size", 32, "Training crop size (Fashion-MNIST is resized to it).")
flags.DEFINE_integer("steps", 5, "Timed steps per round and mode (after 2 warm-up steps).")
flags.DEFINE_integer("rounds", 2, "Alternating timing rounds; the best round of each mode counts.")
flags.DEFINE_enum("mixed_precision", "none", ["none", "mixed_bfloat16", "mixed_float16"], "Compute dtype policy.")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the train step.")
flags.DEFINE_string("output", "benchmarks/results/throughput.json", "Where to write the figures.")
FLAGS = flags.FLAGS


def matmul_gflops(n=2048, repeats=20, dtype="float32"):
    import tensorflow as tf

    a = tf.cast(tf.random.normal([n, n]), dtype)
    b = tf.cast(tf.random.normal([n, n]), dtype)

    @tf.function
    def chain():
        c = a
        for _ in range(repeats):
            c = tf.matmul(c, b) * 1e-3  # keep values finite; the scale costs n^2, negligible
        return c

    chain().numpy()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        chain().numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 * repeats / best / 1e9


def config_for_benchmark():
    from tfssl.config import TrainConfig

    return TrainConfig(model_dir="/tmp/tfssl-throughput", encoder=FLAGS.encoder,
                       width_multiplier=FLAGS.width_multiplier, batch_size=FLAGS.batch_size,
                       image_size=FLAGS.image_size, mixed_precision=FLAGS.mixed_precision,
                       jit_compile=FLAGS.jit_compile, color_jitter_strength=0.5,
                       linear_probe=True)


def time_steps(run_one, iterator, steps):
    for _ in range(2):
        run_one(iterator)["loss"].numpy()
    start = time.perf_counter()
    for _ in range(steps):
        out = run_one(iterator)
    out["loss"].numpy()
    return (time.perf_counter() - start) / steps


def main(_):
    import dataclasses

    import numpy as np
    import tensorflow as tf

    from tfssl.augment import SimCLRAugment
    from tfssl.data import load_split
    from tfssl.data.pipeline import pretrain_dataset
    from tfssl.training import _make_step_function, build_training, set_precision_policy

    results = {"machine": _common.machine(), "flags": {k: FLAGS[k].value for k in
               ("encoder", "width_multiplier", "batch_size", "image_size", "steps", "mixed_precision",
                "jit_compile")}}
    # A bfloat16 matmul on a CPU without bf16 instructions is emulated and far below the float32 rate:
    # both are reported, and the step is rated against its own precision's peak.
    results["matmul_gflops_by_dtype"] = {d: matmul_gflops(dtype=d) for d in ("float32", "bfloat16")}
    compute_dtype = {"none": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}[
        FLAGS.mixed_precision]
    if compute_dtype not in results["matmul_gflops_by_dtype"]:
        results["matmul_gflops_by_dtype"][compute_dtype] = matmul_gflops(dtype=compute_dtype)
    results["compute_dtype"] = compute_dtype
    results["matmul_gflops"] = results["matmul_gflops_by_dtype"][compute_dtype]  # the peak the step is rated on
    print("matmul rate: " + ", ".join(f"{d} {g:.1f} GFLOP/s" for d, g in results["matmul_gflops_by_dtype"].items()))

    strategy = tf.distribute.get_strategy()
    split = load_split("fashion_mnist", "train", image_size=None)
    split = dataclasses.replace(split, dataset=split.dataset.map(
        lambda x, y, i: (tf.image.resize(x, [FLAGS.image_size] * 2, method="nearest"), y, i)))
    # Build all three set-ups first, then time them in alternating rounds and keep each one's best
    # round, so a burst of load from elsewhere does not land on one mode only.
    setups = {}
    for mode in ("step_only", "host_augment", "device_augment"):
        config = config_for_benchmark()
        config.augment_on = "device" if mode == "device_augment" else "host"
        set_precision_policy(config.mixed_precision)
        model, _ = build_training(config, strategy, 10, 100, 10_000)
        run_one = _make_step_function(model, strategy, config.jit_compile)
        augment = SimCLRAugment(config.image_size, color_jitter_strength=0.5)
        if mode == "step_only":
            # Views already in memory: the rate of the train step alone.
            images = np.random.default_rng(0).random((config.batch_size, config.image_size, config.image_size, 3))
            views = tf.constant(images, tf.float32)
            labels = tf.zeros([config.batch_size], tf.int64)
            ds = tf.data.Dataset.from_tensors({"views": (views, views[::-1]), "labels": labels}).repeat()
            per_image = 3 * (2 * layer_forward_flops(model.encoder) + 2 * layer_forward_flops(model.projector))
            results["train_flops_per_image"] = per_image
        else:
            ds = pretrain_dataset(split, config.batch_size, augment=augment if mode == "host_augment" else None)
            ds = ds.repeat()
        iterator = iter(ds)
        time_steps(run_one, iterator, 1)  # trace and warm up
        setups[mode] = (run_one, iterator)
    rates = {mode: 0.0 for mode in setups}
    for round_index in range(FLAGS.rounds):
        for mode, (run_one, iterator) in setups.items():
            seconds = time_steps(run_one, iterator, FLAGS.steps)
            rates[mode] = max(rates[mode], FLAGS.batch_size / seconds)
            print(f"round {round_index + 1} {mode}: {FLAGS.batch_size / seconds:.1f} images/s "
                  f"({seconds * 1000:.0f} ms/step)")
    results["step_gflops"] = results["train_flops_per_image"] * rates["step_only"] / 1e9
    results["images_per_second"] = rates
    results["step_flop_rate_vs_matmul"] = results["step_gflops"] / results["matmul_gflops"]
    results["host_augment_vs_step_only"] = rates["host_augment"] / rates["step_only"]
    results["device_augment_vs_step_only"] = rates["device_augment"] / rates["step_only"]
    results["peak_rss_mib"] = _common.peak_rss_mib()
    print(f"step FLOP rate {results['step_gflops']:.1f} GFLOP/s = "
          f"{100 * results['step_flop_rate_vs_matmul']:.0f}% of the {compute_dtype} matmul rate; end-to-end host "
          f"{100 * results['host_augment_vs_step_only']:.0f}%, device "
          f"{100 * results['device_augment_vs_step_only']:.0f}% of step-only")
    _common.write_json(FLAGS.output, results)
    print(f"Wrote {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
