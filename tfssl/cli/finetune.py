"""tfssl-finetune: semi-supervised fine-tuning (label fractions) and SimCLRv2 distillation.

  tfssl-finetune --encoder=runs/a --label_fraction=0.1 --epochs=30 --output_dir=runs/a_ft10
  tfssl-finetune --encoder=exports/tfssl_encoder --label_fraction=0.01 --zero_init_head --output_dir=ft1
  tfssl-finetune --random_init --encoder=runs/a --label_fraction=0.1 --output_dir=ft10_random   # baseline
  tfssl-finetune --distill_from=runs/a_ft10 --random_init --encoder_name=resnet18 --output_dir=student

Writes <output_dir>/result.json (validation-selected accuracy, test accuracy of that epoch, label
count, config) and <output_dir>/classifier.keras (images [B,S,S,3] in [0,1] -> logits; a teacher for
--distill_from, and an encoder source for --encoder).
"""
from absl import flags

import tfssl.cli  # noqa: F401  (quiet TF logs before TensorFlow loads)
from tfssl.cli._common import run_main
import tfssl.config
from tfssl.config import define_flags, from_flags
from tfssl.finetune.config import FineTuneConfig

# "encoder" is a path here, not the architecture enum of tfssl-train.
flags.DEFINE_string("encoder", "", FineTuneConfig.__dataclass_fields__["encoder"].metadata["help"])
define_flags(flags.FLAGS, cls=FineTuneConfig, exclude=("encoder",))
flags.adopt_module_key_flags(tfssl.config)  # so --helpshort lists them
FLAGS = flags.FLAGS


def main(_):
    from tfssl.finetune import fine_tune

    config = from_flags(FLAGS, FineTuneConfig)
    result = fine_tune(config)
    print(f"Wrote {result['result_path']} and {result['classifier_path']}")


def run():
    run_main("tfssl-finetune", main)


if __name__ == "__main__":
    run()
