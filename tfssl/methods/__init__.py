"""Self-supervised methods: each a `keras.Model` with its own `train_step`, built from shared parts."""
from tfssl.methods.barlow_twins import BarlowTwins
from tfssl.methods.base import SSLMethod
from tfssl.methods.byol import BYOL
from tfssl.methods.instdis import InstDis
from tfssl.methods.moco import MoCo
from tfssl.methods.moco_v3 import MoCoV3
from tfssl.methods.redundancy import RedundancyMethod
from tfssl.methods.siamese import SiameseMethod
from tfssl.methods.simclr import SimCLR
from tfssl.methods.simsiam import SimSiam
from tfssl.methods.vicreg import VICReg

METHODS = {"simclr": SimCLR, "moco_v1": MoCo, "moco_v2": MoCo, "moco_v3": MoCoV3, "byol": BYOL, "simsiam": SimSiam,
           "instdis": InstDis, "barlow_twins": BarlowTwins, "vicreg": VICReg}

__all__ = ["BYOL", "BarlowTwins", "InstDis", "METHODS", "MoCo", "MoCoV3", "RedundancyMethod", "SSLMethod",
           "SiameseMethod", "SimCLR", "SimSiam", "VICReg", "build_augment", "build_method", "build_encoder_from_config"]


def build_encoder_from_config(config, channels=3):
    """The encoder named by a `TrainConfig` (architecture fields only; weights freshly initialised)."""
    from tfssl.encoders import build_encoder

    return build_encoder(config.encoder, image_size=config.image_size, channels=channels,
                         width_multiplier=config.width_multiplier, cifar_stem=config.resolved_cifar_stem(),
                         sync_bn=config.sync_bn, zero_init_residual=config.zero_init_residual,
                         patch_size=config.patch_size,
                         freeze_patch_embed=config.freeze_patch_embed)


def build_augment(config):
    """The view recipe of a `TrainConfig`'s method (used on the host or on the device).

    BYOL, MoCo v3, Barlow Twins and VICReg (whose papers reuse BYOL's recipe) get the asymmetric
    pair (blur p 1.0 / 0.1, solarize p 0 / 0.2). MoCo v1: crops of 20-100% area, colour jitter always
    applied, grayscale p 0.2, no blur (its hue range is the SimCLR recipe's 0.2 * s, not MoCo's 0.4);
    InstDis (whose recipe MoCo v1 took over) gets the same. MoCo v2: SimCLR's recipe with 20-100% crops
    and blur. SimCLR and SimSiam (whose paper uses SimCLR's recipe): one `SimCLRAugment` for both views.
    """
    from tfssl.augment import as_view_recipe

    return as_view_recipe(_per_image_augment(config), METHODS[config.method].default_views)


def _per_image_augment(config):
    from tfssl.augment import SimCLRAugment, byol_views

    if config.method in ("byol", "moco_v3", "barlow_twins", "vicreg"):
        return byol_views(config.image_size, color_jitter_strength=config.color_jitter_strength,
                          blur=config.resolved_blur())
    if config.method in ("moco_v1", "instdis"):
        return SimCLRAugment(config.image_size, color_jitter_strength=config.color_jitter_strength, blur=False,
                             crop_area=(0.2, 1.0), jitter_prob=1.0)
    if config.method == "moco_v2":
        return SimCLRAugment(config.image_size, color_jitter_strength=config.color_jitter_strength,
                             blur=config.resolved_blur(), crop_area=(0.2, 1.0))
    return SimCLRAugment(config.image_size, color_jitter_strength=config.color_jitter_strength,
                         blur=config.resolved_blur())


def _siamese_heads(config, feature_dim):
    from tfssl.methods.siamese import default_heads

    proj_hidden = config.proj_hidden_dim or feature_dim
    if config.pred_hidden_dim:
        pred_hidden = config.pred_hidden_dim
    elif config.method == "simsiam":
        pred_hidden = max(1, config.proj_dim // 4)  # SimSiam's bottleneck: 2048 -> 512 -> 2048
    else:
        pred_hidden = proj_hidden  # BYOL: predictor as wide as the projector's hidden layer
    # BYOL ends its projector with a plain Dense; SimSiam and MoCo v3 end it with a BN without scale or
    # shift (reference code: BatchNorm1d(affine=False)), and MoCo v3's ViT predictor ends with one too.
    last_bn = config.method in ("simsiam", "moco_v3")
    return default_heads(feature_dim, config.proj_layers, config.proj_dim, proj_hidden, pred_hidden,
                         last_bn=last_bn, sync_bn=config.sync_bn,
                         pred_last_bn=config.method == "moco_v3" and config.encoder.startswith("vit_"))


def build_method(config, num_classes=None, total_steps=None, num_examples=None):
    """Builds the method of a `TrainConfig`: encoder, view recipe and heads, ready to compile.

    Args:
      config: `tfssl.config.TrainConfig`.
      num_classes: classes of the online probe (None: no probe).
      total_steps: optimizer steps of the whole run, for schedules that live in the method (BYOL's
        target momentum); None when the model is only rebuilt to evaluate or export.
      num_examples: size of the pre-training split (InstDis' memory bank has one row per example); None
        when the model is only rebuilt to evaluate or export.

    Returns:
      An `SSLMethod` whose variables all exist.
    """
    from tfssl.heads import ProjectionHead

    encoder = build_encoder_from_config(config)
    common = dict(encoder=encoder,
                  augment=build_augment(config) if config.augment_on == "device" else None,
                  num_classes=num_classes if config.linear_probe else None,
                  linear_probe=config.linear_probe, seed=config.seed, name=config.method)
    if config.method == "simclr":
        projector = ProjectionHead(num_layers=config.proj_layers, output_dim=config.proj_dim,
                                   hidden_dim=config.proj_hidden_dim or None, keep_layer=config.keep_proj_layer,
                                   sync_bn=config.sync_bn, name="projector")
        model = SimCLR(projector=projector, temperature=config.temperature, **common)
    elif config.method in ("moco_v1", "moco_v2"):
        # v1: one linear layer to 128; v2: Dense(hidden) -> ReLU -> Dense(128); neither has BN in the head.
        layers = 1 if config.method == "moco_v1" else config.proj_layers
        projector = ProjectionHead(num_layers=layers, output_dim=config.proj_dim,
                                   hidden_dim=config.proj_hidden_dim or None, use_bn=False, name="projector")
        model = MoCo(projector=projector, queue_size=config.moco_queue_size, momentum=config.moco_momentum,
                     temperature=config.temperature, bn_splits=config.moco_bn_splits, **common)
    elif config.method in ("byol", "simsiam", "moco_v3"):
        projector, predictor = _siamese_heads(config, int(encoder.output.shape[-1]))
        if config.method == "byol":
            model = BYOL(projector=projector, predictor=predictor, tau_base=config.tau_base,
                         total_steps=total_steps, **common)
        elif config.method == "moco_v3":
            model = MoCoV3(projector=projector, predictor=predictor, temperature=config.temperature,
                           tau_base=config.tau_base, total_steps=total_steps, **common)
        else:
            model = SimSiam(projector=projector, predictor=predictor, fix_predictor_lr=config.fix_predictor_lr,
                            **common)
    elif config.method == "instdis":
        # The paper's head: one linear layer to 128-d, then L2 normalisation (in the method); optionally
        # batch-normalised, which keeps a small encoder's nearly parallel random-init features apart.
        projector = ProjectionHead(num_layers=1, output_dim=config.proj_dim, use_bn=config.instdis_head_bn,
                                   name="projector")
        model = InstDis(projector=projector, num_examples=num_examples, temperature=config.temperature,
                        num_negatives=config.instdis_negatives, bank_momentum=config.instdis_momentum,
                        loss=config.instdis_loss, **common)
    elif config.method in ("barlow_twins", "vicreg"):
        # Both papers end the projector with a plain Dense: the loss itself standardises / regularises.
        projector = ProjectionHead(num_layers=config.proj_layers, output_dim=config.proj_dim,
                                   hidden_dim=config.proj_hidden_dim or None, last_bn=False,
                                   sync_bn=config.sync_bn, name="projector")
        if config.method == "barlow_twins":
            model = BarlowTwins(projector=projector, lambd=config.bt_lambda, **common)
        else:
            model = VICReg(projector=projector, sim_weight=config.vicreg_sim_weight,
                           var_weight=config.vicreg_var_weight, cov_weight=config.vicreg_cov_weight, **common)
    else:  # pragma: no cover - METHODS and this factory grow together
        raise ValueError(f"unknown method {config.method!r}; choose one of {', '.join(sorted(METHODS))}")
    model.build_heads()
    return model
