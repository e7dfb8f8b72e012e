"""Where the time of a SimCLR train step goes, by TensorFlow op type, from the TensorFlow profiler.

Builds the step of `throughput.py` (same flags: encoder, width, batch, image size, precision, XLA) on
views already in memory, warms it up, traces `--steps` steps with `tf.profiler`, and sums the duration of
every op the executor ran, by op type (oneDNN's kernels show up under their own names, e.g.
`_MklNativeConv2D`) and by the layer kind each type belongs to (convolution forward, its input and weight
gradients, batch norm, dense, element-wise, optimizer). Op times of ops running side by side on different
inter-op threads add up, so the shares are of the summed op time, next to the wall time per step.

  python benchmarks/profile_step.py --width_multiplier=0.25 --image_size=28 --steps=3
  # the raw trace stays in --trace_dir for TensorBoard's Profile tab
"""
import collections
import glob
import os
import time

from absl import app, flags

import _common  # noqa: F401  (path set-up)
import throughput  # noqa: F401  (its flags: encoder, width_multiplier, batch_size, image_size, steps, ...)

flags.DEFINE_string("trace_dir", "/tmp/tfssl-profile", "Where the profiler writes its trace (replaced).")
FLAGS = flags.FLAGS
FLAGS.set_default("output", "benchmarks/results/profile_step.json")
FLAGS.set_default("steps", 3)

# Layer kind of an op type, by substrings of the (oneDNN-prefixed or plain) op type; first match wins.
KINDS = (
    ("conv weight gradient", ("Conv2DBackpropFilter",)),
    ("conv input gradient", ("Conv2DBackpropInput",)),
    ("conv forward", ("Conv2D", "DepthwiseConv")),
    ("batch norm", ("FusedBatchNorm", "BatchNorm")),
    ("dense (matmul)", ("MatMul", "Einsum")),
    ("optimizer update", ("ResourceApply", "AssignVariable", "AssignAdd", "AssignSub")),
    ("pooling / reductions", ("Mean", "Sum", "Max", "Pool", "Softmax", "LogSoftmax", "Argmax")),
)


def kind_of(op_type):
    for kind, keys in KINDS:
        if any(key in op_type for key in keys):
            return kind
    return "element-wise / other"


def is_op_event(name):
    """Executor op events are "<node name>:<op type>"; the rest (executor, eager, iterator and threadpool
    spans such as "ExecutorState::Process" or "EagerLocalExecute: __inference_...") enclose op events."""
    return (":" in name and "::" not in name and "__inference" not in name
            and not name.startswith("ThreadpoolListener"))


def op_times(trace_dir):
    """Summed seconds per op type over every host thread of the trace in `trace_dir`."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "*.xplane.pb"))
    if not paths:
        raise FileNotFoundError(f"the profiler wrote no trace under {trace_dir}")
    space = xplane_pb2.XSpace()
    with open(max(paths, key=os.path.getmtime), "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.Counter()
    for plane in space.planes:
        names = plane.event_metadata
        for line in plane.lines:
            if line.name == "python":
                continue
            for event in line.events:
                name = names[event.metadata_id].name
                if is_op_event(name):
                    totals[name.rsplit(":", 1)[1]] += event.duration_ps * 1e-12
    return totals


def main(_):
    import shutil

    import numpy as np
    import tensorflow as tf

    from tfssl.training import _make_step_function, build_training, set_precision_policy

    config = throughput.config_for_benchmark()
    set_precision_policy(config.mixed_precision)
    strategy = tf.distribute.get_strategy()
    model, _ = build_training(config, strategy, 10, 100, 10_000)
    run_one = _make_step_function(model, strategy, config.jit_compile)
    images = np.random.default_rng(0).random((config.batch_size, config.image_size, config.image_size, 3))
    views = tf.constant(images, tf.float32)
    batch = {"views": (views, views[::-1]), "labels": tf.zeros([config.batch_size], tf.int64)}
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    throughput.time_steps(run_one, iterator, 1)  # trace and warm up

    shutil.rmtree(FLAGS.trace_dir, ignore_errors=True)
    tf.profiler.experimental.start(FLAGS.trace_dir)
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        out = run_one(iterator)
    out["loss"].numpy()
    wall = (time.perf_counter() - start) / FLAGS.steps
    tf.profiler.experimental.stop()

    by_type = {op: seconds / FLAGS.steps for op, seconds in op_times(FLAGS.trace_dir).items()}
    total = sum(by_type.values())
    by_kind = collections.Counter()
    for op, seconds in by_type.items():
        by_kind[kind_of(op)] += seconds
    print(f"wall {wall * 1000:.0f} ms/step (profiled); summed op time {total * 1000:.0f} ms/step")
    print(f"{'layer kind':<24} {'ms/step':>9} {'share':>7}")
    for kind, seconds in by_kind.most_common():
        print(f"{kind:<24} {seconds * 1000:9.1f} {100 * seconds / total:6.1f}%")
    print(f"\n{'op type':<40} {'ms/step':>9} {'share':>7}  layer kind")
    top = sorted(by_type.items(), key=lambda item: -item[1])[:20]
    for op, seconds in top:
        print(f"{op:<40} {seconds * 1000:9.1f} {100 * seconds / total:6.1f}%  {kind_of(op)}")
    results = {"machine": _common.machine(),
               "flags": {k: FLAGS[k].value for k in ("encoder", "width_multiplier", "batch_size", "image_size",
                                                      "steps", "mixed_precision", "jit_compile")},
               "wall_seconds_per_step": wall, "op_seconds_per_step": total,
               "by_kind": dict(by_kind.most_common()), "by_op_type": dict(sorted(by_type.items(),
                                                                                 key=lambda item: -item[1]))}
    _common.write_json(FLAGS.output, results)
    print(f"Wrote {FLAGS.output}; trace for TensorBoard's Profile tab: {FLAGS.trace_dir}")


if __name__ == "__main__":
    app.run(main)
