"""tfssl-train: self-supervised pre-training driven by absl flags / flagfiles.

  tfssl-train --flagfile=flags/simclr_fashion_mnist.flags --model_dir=runs/a

Re-running the same command resumes from the newest checkpoint in --model_dir.
"""
from absl import flags

import tfssl.cli  # noqa: F401  (quiet TF logs before TensorFlow loads)
from tfssl.cli._common import run_main
import tfssl.config
from tfssl.config import TrainConfig, define_flags, define_method_flags, from_flags
import tfssl.methods  # noqa: F401  (registers every method, whose options become --<method>_* flags)

define_flags(flags.FLAGS)
define_method_flags(flags.FLAGS)
flags.adopt_module_key_flags(tfssl.config)  # so --helpshort lists them
FLAGS = flags.FLAGS


def main(_):
    from tfssl.training import pretrain

    config = from_flags(FLAGS, TrainConfig)
    result = pretrain(config)
    if result["worker"]:
        print(f"Done: step {result['step']} (worker {result['worker']} of {result['num_workers']}; "
              f"the chief writes {config.model_dir})")
        return
    print(f"Done: step {result['step']}, checkpoint {result['checkpoint']}")
    print(f"Logs: {config.model_dir}/metrics.csv, TensorBoard: tensorboard --logdir {config.model_dir}/tensorboard")


def _create_strategy():
    """The strategy, before anything initialises TensorFlow (MultiWorkerMirroredStrategy requires it)."""
    from tfssl.cli._common import initialise_devices
    from tfssl.distribute import build_strategy

    try:
        build_strategy(FLAGS.strategy, FLAGS.tpu_address)
    finally:
        initialise_devices()  # inside the quiet start-up too, also when the strategy failed


def run():
    run_main("tfssl-train", main, startup=_create_strategy)


if __name__ == "__main__":
    run()
