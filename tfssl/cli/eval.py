"""tfssl-eval: linear probe and weighted kNN of a run's encoder, beside a random-init encoder.

  tfssl-eval --model_dir=runs/a            # newest checkpoint of a training run
  tfssl-eval --encoder=exports/a --dataset=fashion_mnist --image_size=28   # an exported encoder
"""
from absl import flags

import tfssl.cli  # noqa: F401
from tfssl.cli._common import run_main

flags.DEFINE_string("model_dir", "", "Training run directory (flags.json + checkpoints).")
flags.DEFINE_string("encoder", "", "Exported encoder SavedModel to evaluate instead of a checkpoint.")
flags.DEFINE_string("checkpoint", "", "Specific checkpoint path (default: newest in --model_dir).")
for _name in ("dataset", "data_dir", "train_split", "val_split", "test_split"):
    flags.DEFINE_string(_name, None, f"Override the run's --{_name}.")
flags.DEFINE_integer("knn_k", 200, "Neighbours of the weighted kNN classifier.")
flags.DEFINE_float("knn_temperature", 0.1, "Temperature of the weighted kNN classifier.")
flags.DEFINE_integer("batch_size", 256, "Feature-extraction batch size.")
flags.DEFINE_bool("random_baseline", True, "Also evaluate a random-init encoder of the same architecture.")
flags.DEFINE_bool("raw_baseline", True, "Also evaluate the raw pixels (flattened, same probes): the no-learning "
                  "baseline.")
flags.DEFINE_string("output", "", "Where to write result.json (default <model_dir>/eval/result.json).")
FLAGS = flags.FLAGS


def main(_):
    from tfssl.evaluation.run import evaluate_run, format_table

    if FLAGS.knn_k <= 0 or FLAGS.knn_temperature <= 0 or FLAGS.batch_size <= 0:
        raise ValueError("--knn_k, --knn_temperature and --batch_size must be > 0")
    overrides = {name: FLAGS[name].value for name in
                 ("dataset", "data_dir", "train_split", "val_split", "test_split")}
    result = evaluate_run(FLAGS.model_dir or None, export_dir=FLAGS.encoder or None,
                          checkpoint=FLAGS.checkpoint or None, overrides=overrides,
                          random_baseline=FLAGS.random_baseline, raw_baseline=FLAGS.raw_baseline, knn_k=FLAGS.knn_k,
                          knn_temperature=FLAGS.knn_temperature, batch_size=FLAGS.batch_size,
                          output=FLAGS.output or None)
    print(format_table(result))
    print(f"Wrote {result['result_path']}")


def run():
    run_main("tfssl-eval", main)


if __name__ == "__main__":
    run()
