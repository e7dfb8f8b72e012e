"""Every shipped flagfile parses with tfssl-train's flags and passes validation."""
import glob
import os

import pytest
from absl import flags

from tfssl.config import TrainConfig, define_flags, from_flags

FLAG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "flags")


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(FLAG_DIR, "*.flags"))))
def test_flagfile_is_valid(path):
    values = flags.FlagValues()
    define_flags(values)
    values(["prog", f"--flagfile={path}", "--model_dir=/tmp/x"])
    config = from_flags(values, TrainConfig)
    replicas = 8 if config.strategy in ("mirrored", "tpu") else 1
    config.validate(num_replicas=replicas)
    with open(path) as f:
        header = f.readline()
    assert header.startswith("#"), "each flagfile opens with a comment saying what it reproduces"


def test_published_recipes():
    def load(name):
        values = flags.FlagValues()
        define_flags(values)
        values(["prog", f"--flagfile={os.path.join(FLAG_DIR, name)}"])
        return from_flags(values, TrainConfig)

    cifar = load("simclr_cifar10.flags")
    assert (cifar.encoder, cifar.resolved_cifar_stem(), cifar.batch_size, cifar.temperature,
            cifar.color_jitter_strength, cifar.resolved_blur(), cifar.optimizer) == (
        "resnet18", True, 512, 0.5, 0.5, False, "lars")
    imagenet = load("simclr_imagenet.flags")
    assert (imagenet.encoder, imagenet.batch_size, imagenet.temperature, imagenet.lr_scaling,
            imagenet.learning_rate) == ("resnet50", 4096, 0.1, "sqrt", 0.075)
