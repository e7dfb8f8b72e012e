"""Every shipped flagfile parses with tfssl-train's flags and passes validation; the paper recipes say what
the papers say (method settings read from the run's options: `config.options()`)."""
import dataclasses
import glob
import os

import pytest
from absl import flags

from tfssl.config import TrainConfig, define_flags, define_method_flags, load_flagfile
from tfssl.methods.registry import method_names, options_class

FLAG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "flags")
IMAGENET_TRAIN = 1281167  # images in ILSVRC-2012's train split


def _load(name):
    return load_flagfile(os.path.join(FLAG_DIR, name))


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(FLAG_DIR, "*.flags"))))
def test_flagfile_is_valid(path):
    config = load_flagfile(path, model_dir="/tmp/x")
    replicas = 8 if config.strategy in ("mirrored", "tpu") else 1
    config.validate(num_replicas=replicas)
    with open(path) as f:
        header = f.readline()
    assert header.startswith("#"), "each flagfile opens with a comment saying what it reproduces"


def test_published_recipes():
    cifar = _load("simclr_cifar10.flags")
    assert (cifar.encoder, cifar.resolved_cifar_stem(), cifar.batch_size, cifar.options().temperature,
            cifar.color_jitter_strength, cifar.resolved_blur(), cifar.optimizer) == (
        "resnet18", True, 512, 0.5, 0.5, False, "lars")
    imagenet = _load("simclr_imagenet.flags")
    assert (imagenet.encoder, imagenet.batch_size, imagenet.options().temperature, imagenet.lr_scaling,
            imagenet.learning_rate) == ("resnet50", 4096, 0.1, "sqrt", 0.075)


def test_published_byol_and_simsiam_recipes():
    byol = _load("byol_imagenet.flags")
    heads = byol.options()
    # Grill et al. 2020: LARS, lr 0.2 x B/256 at B = 4096, wd 1.5e-6, tau 0.996, 4096 -> 256 heads.
    assert (byol.method, byol.encoder, byol.batch_size, byol.optimizer, byol.learning_rate, byol.lr_scaling,
            byol.weight_decay, heads.tau_base, heads.proj_hidden_dim, heads.proj_dim, heads.pred_hidden_dim) == (
        "byol", "resnet50", 4096, "lars", 0.2, "linear", 1.5e-6, 0.996, 4096, 256, 4096)
    simsiam = _load("simsiam_cifar10.flags")
    heads = simsiam.options()
    # Chen & He 2021, appendix D: SGD lr 0.03 x B/256, wd 5e-4, batch 512, 2-layer 2048 projector, 512 bottleneck.
    assert (simsiam.method, simsiam.optimizer, simsiam.learning_rate, simsiam.weight_decay, simsiam.batch_size,
            heads.proj_layers, heads.proj_dim, heads.pred_hidden_dim, simsiam.resolved_cifar_stem()) == (
        "simsiam", "sgd", 0.03, 5e-4, 512, 2, 2048, 512, True)
    for name in ("byol_fashion_mnist.flags", "simsiam_fashion_mnist.flags"):
        small, simclr = _load(name), _load("simclr_fashion_mnist.flags")
        # Same encoder and budget as the SimCLR Fashion-MNIST run, so the README table compares like for like.
        assert (small.encoder, small.width_multiplier, small.image_size, small.batch_size, small.epochs) == (
            simclr.encoder, simclr.width_multiplier, simclr.image_size, simclr.batch_size, simclr.epochs)


def test_published_barlow_twins_and_vicreg_recipes():
    barlow = _load("barlow_twins_imagenet.flags")
    options = barlow.options()
    # Zbontar et al. 2021: ResNet-50, batch 2048, LARS lr 0.2 x B/256 (weights), wd 1.5e-6, 3 x 8192, lambda 0.0051.
    assert (barlow.method, barlow.encoder, barlow.batch_size, barlow.optimizer, barlow.learning_rate,
            barlow.lr_scaling, barlow.weight_decay, options.proj_layers, options.proj_hidden_dim, options.proj_dim,
            options.lambd, barlow.epochs) == (
        "barlow_twins", "resnet50", 2048, "lars", 0.2, "linear", 1.5e-6, 3, 8192, 8192, 0.0051, 1000)
    vicreg = _load("vicreg_imagenet.flags")
    options = vicreg.options()
    # Bardes et al. 2022: LARS lr 0.2 x B/256 at B = 2048, wd 1e-6, 3 x 8192 expander, weights 25 / 25 / 1.
    assert (vicreg.method, vicreg.encoder, vicreg.batch_size, vicreg.optimizer, vicreg.learning_rate,
            vicreg.lr_scaling, vicreg.weight_decay, options.proj_layers, options.proj_hidden_dim, options.proj_dim,
            options.sim_weight, options.var_weight, options.cov_weight, vicreg.epochs) == (
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
        options = config.options()
        assert (config.encoder, config.batch_size, config.optimizer, config.learning_rate, config.weight_decay,
                options.queue_size, options.momentum, options.temperature, options.proj_dim) == (
            "resnet50", 256, "sgd", 0.03, 1e-4, 65536, 0.999, temperature, 128)
    assert (v1.resolved_blur(), v2.resolved_blur(), v2.options().proj_hidden_dim) == (False, True, 2048)
    assert (v1.options().proj_layers, v2.options().proj_layers) == (1, 2)
    v3 = _load("moco_v3_imagenet.flags")
    heads = v3.options()
    assert (v3.method, v3.batch_size, v3.optimizer, v3.learning_rate, v3.weight_decay, heads.temperature,
            heads.tau_base, heads.proj_hidden_dim, heads.proj_dim, heads.pred_hidden_dim, v3.sync_bn) == (
        "moco_v3", 4096, "lars", 0.3, 1.5e-6, 1.0, 0.99, 4096, 256, 4096, True)
    vit = _load("moco_v3_vit_imagenet.flags")
    heads = vit.options()
    # Chen, Xie, He 2021, ViT-S/16: AdamW lr 1.5e-4 x B/256, wd 0.1, 40 warm-up of 300 epochs, T 0.2, frozen
    # patch projection, 3-layer projector / 2-layer predictor (4096 hidden, 256 out).
    assert (vit.encoder, vit.patch_size, vit.freeze_patch_embed, vit.batch_size, vit.optimizer, vit.learning_rate,
            vit.weight_decay, vit.warmup_epochs, vit.epochs, heads.temperature, heads.tau_base, heads.proj_layers,
            heads.proj_hidden_dim, heads.proj_dim, heads.pred_hidden_dim) == (
        "vit_small", 16, True, 4096, "adamw", 1.5e-4, 0.1, 40, 300, 0.2, 0.99, 3, 4096, 256, 4096)
    instdis = _load("instdis_imagenet.flags")
    options = instdis.options()
    # Wu et al. 2018: 128-d, T 0.07, 4096 NCE negatives, bank momentum 0.5.
    assert (instdis.method, options.temperature, options.negatives, options.momentum, options.loss,
            options.proj_dim) == ("instdis", 0.07, 4096, 0.5, "nce", 128)
    assert _load("simsiam_cifar10.flags").options().fix_predictor_lr


def test_published_swav_and_dino_recipes():
    swav = _load("swav_imagenet.flags")
    options = swav.options()
    # Caron et al. 2020, the reference's "SwAV 800 ep" script: ResNet-50, batch 64 x 64 GPUs, LARS lr 4.8 with
    # 10 warm-up epochs, wd 1e-6, sync BN, 2048 -> 128 head, 3000 prototypes, eps 0.05, 3 Sinkhorn
    # iterations, T 0.1, no queue, 2 x 224 px crops of 14-100% + 6 x 96 px crops of 5-14%.
    assert (swav.method, swav.encoder, swav.image_size, swav.batch_size, swav.optimizer, swav.learning_rate,
            swav.lr_scaling, swav.warmup_epochs, swav.weight_decay, swav.epochs, swav.sync_bn) == (
        "swav", "resnet50", 224, 4096, "lars", 4.8, "none", 10, 1e-6, 800, True)
    assert (options.proj_hidden_dim, options.proj_dim, options.prototypes, options.epsilon,
            options.sinkhorn_iterations, options.temperature, options.queue_length) == (
        2048, 128, 3000, 0.05, 3, 0.1, 0)
    assert (options.large_crops, options.large_min_area, options.small_crops, options.small_size,
            options.area_range("small_area")) == (2, 0.14, 6, 96, (0.05, 0.14))
    vit = _load("dino_vit_imagenet.flags")
    options = vit.options()
    # Caron et al. 2021, ViT-S/16 (the reference README's full checkpoint): AdamW lr 5e-4 x B/256 at B = 1024,
    # 10 warm-up of 800 epochs, head 2048 -> 256 -> 65536, teacher momentum 0.996, teacher temperature 0.04 ->
    # 0.07 over 30 epochs, student 0.1, last layer frozen in epoch 0, 2 global crops of 25-100% + 10 local
    # 96 px crops of 5-25%.
    assert (vit.method, vit.encoder, vit.patch_size, vit.batch_size, vit.optimizer, vit.learning_rate,
            vit.lr_scaling, vit.warmup_epochs, vit.epochs) == (
        "dino", "vit_small", 16, 1024, "adamw", 5e-4, "linear", 10, 800)
    assert (options.hidden_dim, options.bottleneck_dim, options.out_dim, options.use_bn, options.tau_base,
            options.warmup_teacher_temperature, options.teacher_temperature, options.warmup_teacher_epochs,
            options.student_temperature, options.freeze_last_layer_epochs) == (
        2048, 256, 65536, False, 0.996, 0.04, 0.07, 30, 0.1, 1)
    assert (options.global_crops, options.global_min_area, options.local_crops, options.local_size,
            options.area_range("local_area")) == (2, 0.25, 10, 96, (0.05, 0.25))
    resnet = _load("dino_resnet_imagenet.flags")
    options = resnet.options()
    # The reference README's ResNet-50 command: SGD lr 0.03, wd 1e-4, global crops 14-100%, local 5-14%.
    assert (resnet.encoder, resnet.optimizer, resnet.learning_rate, resnet.weight_decay, resnet.sync_bn,
            options.global_min_area, options.area_range("local_area"), options.local_crops) == (
        "resnet50", "sgd", 0.03, 1e-4, True, 0.14, (0.05, 0.14), 8)


def test_swav_imagenet_freezes_the_prototypes_for_the_reference_313_iterations():
    # The reference's --freeze_prototypes_niters 313 at batch 4096: the paper's "first epoch".
    config = _load("swav_imagenet.flags")
    steps_per_epoch = IMAGENET_TRAIN / config.batch_size
    assert round(config.options().freeze_prototypes_epochs * steps_per_epoch) == 313


@pytest.mark.parametrize("method", method_names())
def test_every_method_has_a_fashion_mnist_recipe_at_simclr_budget(method):
    small, simclr = _load(f"{method}_fashion_mnist.flags"), _load("simclr_fashion_mnist.flags")
    assert small.method == method
    assert (small.image_size, small.batch_size, small.epochs) == (simclr.image_size, simclr.batch_size, simclr.epochs)
    if not small.options().reads_encoder_flags():  # CPC's patch ResNet, AMDIM's encoder: --encoder not set
        assert (small.encoder, small.width_multiplier) == (TrainConfig.encoder, TrainConfig.width_multiplier)
    else:
        assert (small.encoder, small.width_multiplier) == (simclr.encoder, simclr.width_multiplier)


# The reference code's weight decay per paper recipe: (resolved mode, exclusion, zero_init_residual, sync_bn).
# torch.optim.SGD (MoCo v1/v2, InstDis, SimSiam) couples L2 and decays every parameter; MoCo v3's ViT AdamW
# decays every parameter; the LARS references spare biases and BN.
REFERENCE_DECAY = {
    "moco_v1_imagenet.flags": ("coupled", "none", False, False),
    "moco_v2_imagenet.flags": ("coupled", "none", False, False),
    "instdis_imagenet.flags": ("coupled", "none", False, False),
    "simsiam_cifar10.flags": ("coupled", "none", True, True),
    "invaspread_cifar10.flags": ("coupled", "none", False, False),
    "moco_v3_imagenet.flags": ("coupled", "norm_and_bias", True, True),
    "moco_v3_vit_imagenet.flags": ("decoupled", "none", False, True),
    "simclr_imagenet.flags": ("coupled", "norm_and_bias", False, True),
    "byol_imagenet.flags": ("coupled", "norm_and_bias", False, True),
    # main_dino.py: get_params_groups spares biases and norm parameters for every optimizer (here AdamW).
    "dino_vit_imagenet.flags": ("decoupled", "norm_and_bias", False, False),
    # main_swav.py: SGD under LARC decays every parameter; our LARS spares biases and BN as every LARS reference
    # (a stated difference: README "Differences from the papers", the flagfile header).
    "swav_imagenet.flags": ("coupled", "norm_and_bias", False, True),
    # main_dino.py with --optimizer sgd: the same get_params_groups (biases and norm parameters undecayed).
    "dino_resnet_imagenet.flags": ("coupled", "norm_and_bias", False, True),
}
@pytest.mark.parametrize("name", sorted(REFERENCE_DECAY))
def test_paper_recipes_decay_as_their_reference_code(name):
    from tfssl.optim import resolve_weight_decay

    config = _load(name)
    mode = resolve_weight_decay(config.optimizer, config.weight_decay_mode, config.weight_decay_exclude)
    want = REFERENCE_DECAY[name]
    assert (mode, config.weight_decay_exclude, config.zero_init_residual, config.sync_bn) == want


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(FLAG_DIR, "*.flags"))))
def test_every_header_states_its_weight_decay_semantics(path):
    with open(path) as f:
        text = f.read()
    header = " ".join(line for line in text.splitlines() if line.startswith("#"))
    assert "Weight decay" in header and ("coupled" in header or "decoupled" in header), path
    # ... and the flags say it explicitly, so a changed default can never change a recipe.
    assert "--weight_decay_mode=" in text and "--weight_decay_exclude=" in text, path


def test_method_flags_are_grouped_per_method_for_helpfull():
    """tfssl-train --helpfull lists each method's --<method>_<field> flags under tfssl.methods.<method>."""
    values = flags.FlagValues()
    define_flags(values)
    define_method_flags(values)
    by_module = {module: {flag.name for flag in module_flags}
                 for module, module_flags in values.flags_by_module_dict().items()}
    assert "swav_prototypes" in by_module["tfssl.methods.swav"]
    for method in method_names():
        fields = {f"{method}_{field.name}" for field in dataclasses.fields(options_class(method))}
        assert by_module[f"tfssl.methods.{method}"] == fields, method
    # The run's own settings stay in tfssl.config, apart from every method's.
    assert {"method", "batch_size", "learning_rate"} <= by_module["tfssl.config"]
    assert not by_module["tfssl.config"] & set().union(*(by_module[f"tfssl.methods.{m}"] for m in method_names()))
    assert "tfssl.methods.swav:" in values.get_help()
