"""tfssl-export: write a run's encoder as a SavedModel (serving_default: raw pixels -> embedding).

  tfssl-export --model_dir=runs/a --export_dir=exports/a
"""
from absl import flags

import tfssl.cli  # noqa: F401
from tfssl.cli._common import run_main

flags.DEFINE_string("model_dir", "", "Training run directory (flags.json + checkpoints).")
flags.DEFINE_string("export_dir", "", "Destination directory of the SavedModel.")
flags.DEFINE_string("checkpoint", "", "Specific checkpoint path (default: newest).")
flags.DEFINE_bool("overwrite", False, "Replace an existing --export_dir.")
FLAGS = flags.FLAGS


def main(_):
    from tfssl.export import export_encoder
    from tfssl.training import restore_model

    if not FLAGS.model_dir or not FLAGS.export_dir:
        raise ValueError("--model_dir and --export_dir are both required")
    model, config, path = restore_model(FLAGS.model_dir, FLAGS.checkpoint or None)
    out = export_encoder(model.encoder, FLAGS.export_dir, config.image_size, overwrite=FLAGS.overwrite,
                         metadata={"method": config.method, "encoder": config.encoder,
                                   "width_multiplier": config.width_multiplier, "checkpoint": path})
    print(f"Exported encoder of {path} to {out}")
    print("  signature serving_default: images float32 [batch, height, width, channels] (0..255) "
          "-> embedding float32 [batch, D]")


def run():
    run_main("tfssl-export", main)


if __name__ == "__main__":
    run()
