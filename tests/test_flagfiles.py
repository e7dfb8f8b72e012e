"""Every shipped flagfile parses with tfssl-train's flags and passes validation."""
import glob
import os

import pytest
from absl import flags

from tfssl.config import TrainConfig, define_flags, from_flags

FLAG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "flags")


def _load(name):
    values = flags.FlagValues()
    define_flags(values)
    values(["prog", f"--flagfile={os.path.join(FLAG_DIR, name)}"])
    return from_flags(values, TrainConfig)


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
    cifar = _load("simclr_cifar10.flags")
    assert (cifar.encoder, cifar.resolved_cifar_stem(), cifar.batch_size, cifar.temperature,
            cifar.color_jitter_strength, cifar.resolved_blur(), cifar.optimizer) == (
        "resnet18", True, 512, 0.5, 0.5, False, "lars")
    imagenet = _load("simclr_imagenet.flags")
    assert (imagenet.encoder, imagenet.batch_size, imagenet.temperature, imagenet.lr_scaling,
            imagenet.learning_rate) == ("resnet50", 4096, 0.1, "sqrt", 0.075)


def test_published_byol_and_simsiam_recipes():
    byol = _load("byol_imagenet.flags")
    # Grill et al. 2020: LARS, lr 0.2 x B/256 at B = 4096, wd 1.5e-6, tau 0.996, 4096 -> 256 heads.
    assert (byol.method, byol.encoder, byol.batch_size, byol.optimizer, byol.learning_rate, byol.lr_scaling,
            byol.weight_decay, byol.tau_base, byol.proj_hidden_dim, byol.proj_dim, byol.pred_hidden_dim) == (
        "byol", "resnet50", 4096, "lars", 0.2, "linear", 1.5e-6, 0.996, 4096, 256, 4096)
    simsiam = _load("simsiam_cifar10.flags")
    # Chen & He 2021, appendix D: SGD lr 0.03 x B/256, wd 5e-4, batch 512, 2-layer 2048 projector, 512 bottleneck.
    assert (simsiam.method, simsiam.optimizer, simsiam.learning_rate, simsiam.weight_decay, simsiam.batch_size,
            simsiam.proj_layers, simsiam.proj_dim, simsiam.pred_hidden_dim, simsiam.resolved_cifar_stem()) == (
        "simsiam", "sgd", 0.03, 5e-4, 512, 2, 2048, 512, True)
    for name in ("byol_fashion_mnist.flags", "simsiam_fashion_mnist.flags"):
        small, simclr = _load(name), _load("simclr_fashion_mnist.flags")
        # Same encoder and budget as the SimCLR Fashion-MNIST run, so the README table compares like for like.
        assert (small.encoder, small.width_multiplier, small.image_size, small.batch_size, small.epochs) == (
            simclr.encoder, simclr.width_multiplier, simclr.image_size, simclr.batch_size, simclr.epochs)


def test_published_barlow_twins_and_vicreg_recipes():
    barlow = _load("barlow_twins_imagenet.flags")
    # Zbontar et al. 2021: ResNet-50, batch 2048, LARS lr 0.2 x B/256 (weights), wd 1.5e-6, 3 x 8192, lambda 0.0051.
    assert (barlow.method, barlow.encoder, barlow.batch_size, barlow.optimizer, barlow.learning_rate,
            barlow.lr_scaling, barlow.weight_decay, barlow.proj_layers, barlow.proj_hidden_dim, barlow.proj_dim,
            barlow.bt_lambda, barlow.epochs) == (
        "barlow_twins", "resnet50", 2048, "lars", 0.2, "linear", 1.5e-6, 3, 8192, 8192, 0.0051, 1000)
    vicreg = _load("vicreg_imagenet.flags")
    # Bardes et al. 2022: LARS lr 0.2 x B/256 at B = 2048, wd 1e-6, 3 x 8192 expander, weights 25 / 25 / 1.
    assert (vicreg.method, vicreg.encoder, vicreg.batch_size, vicreg.optimizer, vicreg.learning_rate,
            vicreg.lr_scaling, vicreg.weight_decay, vicreg.proj_layers, vicreg.proj_hidden_dim, vicreg.proj_dim,
            vicreg.vicreg_sim_weight, vicreg.vicreg_var_weight, vicreg.vicreg_cov_weight, vicreg.epochs) == (
        "vicreg", "resnet50", 2048, "lars", 0.2, "linear", 1e-6, 3, 8192, 8192, 25.0, 25.0, 1.0, 1000)
    for name in ("barlow_twins_fashion_mnist.flags", "vicreg_fashion_mnist.flags"):
        small, simclr = _load(name), _load("simclr_fashion_mnist.flags")
        assert (small.encoder, small.width_multiplier, small.image_size, small.batch_size, small.epochs) == (
            simclr.encoder, simclr.width_multiplier, simclr.image_size, simclr.batch_size, simclr.epochs)


def test_published_moco_and_instdis_recipes():
    v1, v2 = _load("moco_v1_imagenet.flags"), _load("moco_v2_imagenet.flags")
    # He et al. 2019 / Chen et al. 2020: ResNet-50, batch 256, SGD lr 0.03, wd 1e-4, K 65536, m 0.999,
    # T 0.07 (v1) / 0.2 (v2), linear (v1) / 2048-hidden MLP (v2) 128-d head, blur only in v2.
    for config, temperature in ((v1, 0.07), (v2, 0.2)):
        assert (config.encoder, config.batch_size, config.optimizer, config.learning_rate, config.weight_decay,
                config.moco_queue_size, config.moco_momentum, config.temperature, config.proj_dim) == (
            "resnet50", 256, "sgd", 0.03, 1e-4, 65536, 0.999, temperature, 128)
    assert (v1.resolved_blur(), v2.resolved_blur(), v2.proj_hidden_dim) == (False, True, 2048)
    v3 = _load("moco_v3_imagenet.flags")
    assert (v3.method, v3.batch_size, v3.optimizer, v3.learning_rate, v3.weight_decay, v3.temperature, v3.tau_base,
            v3.proj_hidden_dim, v3.proj_dim, v3.pred_hidden_dim, v3.sync_bn) == (
        "moco_v3", 4096, "lars", 0.3, 1.5e-6, 1.0, 0.99, 4096, 256, 4096, True)
    vit = _load("moco_v3_vit_imagenet.flags")
    # Chen, Xie, He 2021, ViT-S/16: AdamW lr 1.5e-4 x B/256, wd 0.1, 40 warm-up of 300 epochs, T 0.2, frozen
    # patch projection, 3-layer projector / 2-layer predictor (4096 hidden, 256 out).
    assert (vit.encoder, vit.patch_size, vit.freeze_patch_embed, vit.batch_size, vit.optimizer, vit.learning_rate,
            vit.weight_decay, vit.warmup_epochs, vit.epochs, vit.temperature, vit.tau_base, vit.proj_layers,
            vit.proj_hidden_dim, vit.proj_dim, vit.pred_hidden_dim) == (
        "vit_small", 16, True, 4096, "adamw", 1.5e-4, 0.1, 40, 300, 0.2, 0.99, 3, 4096, 256, 4096)
    instdis = _load("instdis_imagenet.flags")
    # Wu et al. 2018: 128-d, T 0.07, 4096 NCE negatives, bank momentum 0.5.
    assert (instdis.method, instdis.temperature, instdis.instdis_negatives, instdis.instdis_momentum,
            instdis.instdis_loss, instdis.proj_dim) == ("instdis", 0.07, 4096, 0.5, "nce", 128)
    assert _load("simsiam_cifar10.flags").fix_predictor_lr


@pytest.mark.parametrize("method", ["simclr", "moco_v1", "moco_v2", "moco_v3", "byol", "simsiam", "instdis",
                                    "barlow_twins", "vicreg"])
def test_every_method_has_a_fashion_mnist_recipe_at_simclr_budget(method):
    small, simclr = _load(f"{method}_fashion_mnist.flags"), _load("simclr_fashion_mnist.flags")
    assert small.method == method
    assert (small.encoder, small.width_multiplier, small.image_size, small.batch_size, small.epochs) == (
        simclr.encoder, simclr.width_multiplier, simclr.image_size, simclr.batch_size, simclr.epochs)


# The reference code's weight decay per paper recipe: (resolved mode, exclusion, zero_init_residual, sync_bn).
# torch.optim.SGD (MoCo v1/v2, InstDis, SimSiam) couples L2 and decays every parameter; MoCo v3's ViT AdamW
# decays every parameter; the LARS references spare biases and BN.
REFERENCE_DECAY = {
    "moco_v1_imagenet.flags": ("coupled", "none", False, False),
    "moco_v2_imagenet.flags": ("coupled", "none", False, False),
    "instdis_imagenet.flags": ("coupled", "none", False, False),
    "simsiam_cifar10.flags": ("coupled", "none", True, True),
    "moco_v3_imagenet.flags": ("coupled", "norm_and_bias", True, True),
    "moco_v3_vit_imagenet.flags": ("decoupled", "none", False, True),
    "simclr_imagenet.flags": ("coupled", "norm_and_bias", False, True),
    "byol_imagenet.flags": ("coupled", "norm_and_bias", False, True),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_DECAY))
def test_paper_recipes_decay_as_their_reference_code(name):
    from tfssl.optim import resolve_weight_decay

    config = _load(name)
    mode = resolve_weight_decay(config.optimizer, config.weight_decay_mode, config.weight_decay_exclude)
    assert (mode, config.weight_decay_exclude, config.zero_init_residual, config.sync_bn) == REFERENCE_DECAY[name]


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(FLAG_DIR, "*.flags"))))
def test_every_header_states_its_weight_decay_semantics(path):
    with open(path) as f:
        text = f.read()
    header = " ".join(line for line in text.splitlines() if line.startswith("#"))
    assert "Weight decay" in header and ("coupled" in header or "decoupled" in header), path
    # ... and the flags say it explicitly, so a changed default can never change a recipe.
    assert "--weight_decay_mode=" in text and "--weight_decay_exclude=" in text, path
