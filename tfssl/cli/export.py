"""tfssl-export: write a run's encoder for TF Serving, or describe an export's signatures.

  tfssl-export --model_dir=runs/a --export_base=exports                 # exports/tfssl_encoder/<next>/
  tfssl-export --model_dir=runs/a --export_base=exports --model_name=fmnist --version=3 \
      --projection --endpoints=block3,block4,kept_head
  tfssl-export --model_dir=runs/a --export_dir=exports/a               # exactly that directory
  tfssl-export --describe=exports/fmnist                                # like saved_model_cli show --all

Endpoints: encoder stage outputs (stem, block1..block4) and, for SimCLR with --simclr_keep_proj_layer > 0,
"kept_head": the projection-head layer SimCLRv2 fine-tunes from.
"""
from absl import flags

import tfssl.cli  # noqa: F401
from tfssl.cli._common import run_main

KEPT_HEAD = "kept_head"

flags.DEFINE_string("model_dir", "", "Training run directory (flags.json + checkpoints).")
flags.DEFINE_string("export_base", "", "TF Serving base directory: writes <export_base>/<model_name>/<version>/.")
flags.DEFINE_string("model_name", "tfssl_encoder", "TF Serving model name (directory under --export_base).")
flags.DEFINE_integer("version", None, "Version number (default: 1 + the highest existing version).")
flags.DEFINE_string("export_dir", "", "Write the export to exactly this directory instead of --export_base.")
flags.DEFINE_bool("overwrite", False, "Replace an existing --export_dir.")
flags.DEFINE_string("checkpoint", "", "Specific checkpoint path (default: newest).")
flags.DEFINE_bool("projection", False, "Also output the projection head's output as 'projection'.")
flags.DEFINE_list("endpoints", [], f"Extra outputs: encoder stages (stem, block1..block4) and/or {KEPT_HEAD}.")
flags.DEFINE_bool("warmup", True, "Write assets.extra/tf_serving_warmup_requests.")
flags.DEFINE_string("describe", "", "Print the signatures of this export (version or model dir) and exit.")
FLAGS = flags.FLAGS


def _heads(model, config, checkpoint_path):
    """(projection callable or None, endpoints mapping) asked for by the flags."""
    from tfssl.export import check_head_restored

    projector = getattr(model, "projector", None)
    if FLAGS.projection and projector is None:
        raise ValueError(f"--projection: the {config.method} model has no projection head")
    wants_head = FLAGS.projection or KEPT_HEAD in FLAGS.endpoints
    if wants_head and projector is not None:
        check_head_restored(model, projector, checkpoint_path, "projector", f"--projection / {KEPT_HEAD}")
    endpoints = {}
    for name in FLAGS.endpoints:
        if name != KEPT_HEAD:
            endpoints[name] = name
        elif projector is None or not getattr(projector, "keep_layer", 0):
            raise ValueError(f"--endpoints={KEPT_HEAD}: the run keeps no projection-head layer "
                             "(--simclr_keep_proj_layer=0), so its fine-tuning representation is the embedding itself")
        else:
            endpoints[name] = projector.kept_output
    return (projector if FLAGS.projection else None), endpoints


def main(_):
    from tfssl.export import export_encoder, export_encoder_to_dir, signature_report

    if FLAGS.describe:
        print(signature_report(FLAGS.describe), end="")
        return
    if not FLAGS.model_dir:
        raise ValueError("--model_dir is required (or --describe=<export> to inspect an export)")
    if bool(FLAGS.export_base) == bool(FLAGS.export_dir):
        raise ValueError("pass exactly one of --export_base (TF Serving layout) and --export_dir (one directory)")
    if FLAGS.export_dir and FLAGS.version is not None:
        raise ValueError("--version applies to --export_base only; --export_dir is the destination itself")
    if FLAGS.version is not None and FLAGS.version <= 0:
        raise ValueError(f"--version must be a positive integer, got {FLAGS.version}")

    from tfssl.training import restore_model

    model, config, path = restore_model(FLAGS.model_dir, FLAGS.checkpoint or None)
    projection, endpoints = _heads(model, config, path)
    common = dict(projection=projection, endpoints=endpoints, warmup=FLAGS.warmup,
                  # A method with its own backbone (CPC's patch ResNet, AMDIM's encoder) names that model instead.
                  metadata={"method": config.method,
                            "encoder": config.encoder if config.options().reads_encoder_flags()
                            else model.representation().name,
                            "width_multiplier": config.width_multiplier, "checkpoint": path,
                            "keep_proj_layer": getattr(config.options(), "keep_proj_layer", 0)})
    if FLAGS.export_dir:
        out = export_encoder_to_dir(model.representation(), FLAGS.export_dir, config.image_size, overwrite=FLAGS.overwrite,
                                    model_name=FLAGS.model_name, **common)
    else:
        out = export_encoder(model.representation(), FLAGS.export_base, config.image_size, model_name=FLAGS.model_name,
                             version=FLAGS.version, **common)
    print(f"Exported encoder of {path} to {out}")
    print(signature_report(out), end="")


def run():
    run_main("tfssl-export", main)


if __name__ == "__main__":
    run()
