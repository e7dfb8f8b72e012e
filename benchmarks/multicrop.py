"""Multi-crop cost: SwAV's step with 2 x 28 px crops vs 2 x 28 + N x 14 px, against the FLOPs it adds.

Both runs use flags/swav_fashion_mnist.flags (ResNet-18 x0.25, batch 256, float32) and differ only in
`--swav_small_crops`. The batch is augmented once and cached, so the step is timed without its input
pipeline; the median of `--steps` steps after `--skip` (tracing) is reported. FLOPs: multiply-adds x 2 of
every convolution and dense layer of the encoder at each crop size (the head is included once per crop),
x 3 for forward + backward.

  python benchmarks/multicrop.py --steps=20
"""
import time

import numpy as np
from absl import app, flags

import _common

flags.DEFINE_integer("steps", 20, "Timed steps per recipe.")
flags.DEFINE_integer("skip", 3, "Untimed steps first (tracing).")
flags.DEFINE_integer("small_crops", 6, "Small crops of the multi-crop recipe.")
flags.DEFINE_string("output", "benchmarks/results/multicrop.json", "Where to write the figures.")
FLAGS = flags.FLAGS


def _flops_per_image(config, options):
    import dataclasses

    from tfssl.encoders.flops import layer_forward_flops
    from tfssl.methods import build_encoder_from_config

    large = layer_forward_flops(build_encoder_from_config(config))
    small = layer_forward_flops(build_encoder_from_config(dataclasses.replace(config, image_size=options.small_size)))
    return 3 * (options.large_crops * large + options.small_crops * small)


def _median_step(small_crops):
    import dataclasses

    import keras

    from tfssl import distribute
    from tfssl.config import load_flagfile
    from tfssl.data.pipeline import pretrain_dataset
    from tfssl.methods import build_augment
    from tfssl.training import _make_step_function, build_training

    base = load_flagfile("flags/swav_fashion_mnist.flags", model_dir="/tmp/tfssl-multicrop")
    config = dataclasses.replace(base, method_options={**base.method_options, "small_crops": small_crops})
    strategy = distribute.build_strategy("default")
    split = config.load_split("train[:2048]")
    model, _ = build_training(config, strategy, split.num_classes, steps_per_epoch=8, total_steps=1000)
    batch = pretrain_dataset(split, config.batch_size, augment=build_augment(config)).take(1).cache().repeat()
    run_one = _make_step_function(model, strategy, jit_compile=False)
    iterator = iter(strategy.experimental_distribute_dataset(batch))
    times = []
    for i in range(FLAGS.skip + FLAGS.steps):
        start = time.perf_counter()
        float(run_one(iterator)["loss"])
        if i >= FLAGS.skip:
            times.append(time.perf_counter() - start)
    keras.backend.clear_session()
    return float(np.median(times)), _flops_per_image(config, config.options()) * config.batch_size


def main(_):
    two, two_flops = _median_step(0)
    multi, multi_flops = _median_step(FLAGS.small_crops)
    result = {"machine": _common.machine(), "recipe": "flags/swav_fashion_mnist.flags (float32, batch 256)",
              "two_crops_step_s": round(two, 4), "multi_crop_step_s": round(multi, 4),
              "small_crops": FLAGS.small_crops, "step_time_ratio": round(multi / two, 3),
              "flop_ratio": round(multi_flops / two_flops, 3), "two_crops_gflop_per_step": round(two_flops / 1e9, 2),
              "multi_crop_gflop_per_step": round(multi_flops / 1e9, 2)}
    print(f"2 x 28 px: {two:.3f} s/step; 2 x 28 + {FLAGS.small_crops} x 14 px: {multi:.3f} s/step; "
          f"time ratio {result['step_time_ratio']:.2f} vs FLOP ratio {result['flop_ratio']:.2f}")
    _common.write_json(FLAGS.output, result)


if __name__ == "__main__":
    app.run(main)
