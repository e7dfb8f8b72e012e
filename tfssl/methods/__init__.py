"""Self-supervised methods, each a `keras.Model` on the method template (`tfssl.methods.base`), registered by name.

Adding a method: write `tfssl/methods/<name>.py` (the `SSLMethod` subclass with its `compute_loss` and hooks,
and its `MethodOptions` dataclass), add its loss / head parts, one `register` line below and its flagfiles.
"""
from tfssl.methods.amdim import AMDIM, AMDIMOptions
from tfssl.methods.barlow_twins import BarlowTwins, BarlowTwinsOptions
from tfssl.methods.base import Loss, ParamGroup, SSLMethod
from tfssl.methods.byol import BYOL, BYOLOptions
from tfssl.methods.cmc import CMC, CMCOptions
from tfssl.methods.cpc_v2 import CPCv2, CPCv2Options
from tfssl.methods.dino import DINO, DINOOptions
from tfssl.methods.instdis import InstDis, InstDisOptions
from tfssl.methods.invaspread import InvaSpread, InvaSpreadOptions
from tfssl.methods.moco import MoCo, MoCoV2Options
from tfssl.methods.moco_v1 import MoCoV1Options
from tfssl.methods.moco_v3 import MoCoV3, MoCoV3Options
from tfssl.methods.redundancy import RedundancyMethod
from tfssl.methods.registry import REGISTRY, BuildContext, MethodOptions, method_class, register
from tfssl.methods.siamese import SiameseMethod
from tfssl.methods.simclr import SimCLR, SimCLROptions
from tfssl.methods.simsiam import SimSiam, SimSiamOptions
from tfssl.methods.swav import SwAV, SwAVOptions
from tfssl.methods.vicreg import VICReg, VICRegOptions
from tfssl.methods.yadim import YADIM, YADIMOptions

register("simclr", SimCLR, SimCLROptions)
register("moco_v1", MoCo, MoCoV1Options)
register("moco_v2", MoCo, MoCoV2Options)
register("moco_v3", MoCoV3, MoCoV3Options)
register("byol", BYOL, BYOLOptions)
register("simsiam", SimSiam, SimSiamOptions)
register("instdis", InstDis, InstDisOptions)
register("barlow_twins", BarlowTwins, BarlowTwinsOptions)
register("vicreg", VICReg, VICRegOptions)
register("swav", SwAV, SwAVOptions)
register("dino", DINO, DINOOptions)
register("invaspread", InvaSpread, InvaSpreadOptions)
register("cmc", CMC, CMCOptions)
register("amdim", AMDIM, AMDIMOptions)
register("yadim", YADIM, YADIMOptions)
register("cpc_v2", CPCv2, CPCv2Options)

# name -> method class (several names may share one class, e.g. moco_v1 / moco_v2).
METHODS = {name: cls for name, (cls, _) in REGISTRY.items()}

__all__ = ["AMDIM", "BYOL", "BarlowTwins", "BuildContext", "CMC", "CPCv2", "DINO", "InstDis", "InvaSpread", "Loss",
           "METHODS", "MethodOptions", "MoCo", "MoCoV3", "ParamGroup", "REGISTRY", "RedundancyMethod", "SSLMethod",
           "SiameseMethod", "SimCLR", "SimSiam", "SwAV", "VICReg", "YADIM", "build_augment", "build_encoder_from_config",
           "build_method", "register"]


def build_encoder_from_config(config, channels=3, name="encoder"):
    """The encoder named by a `TrainConfig` (architecture fields only; weights freshly initialised), taking
    `channels` input channels, as a model called `name` (CMC builds two: 1- and 2-channel views)."""
    from tfssl.encoders import build_encoder

    return build_encoder(config.encoder, image_size=config.image_size, channels=channels,
                         width_multiplier=config.width_multiplier, cifar_stem=config.resolved_cifar_stem(),
                         sync_bn=config.sync_bn, zero_init_residual=config.zero_init_residual,
                         patch_size=config.patch_size, freeze_patch_embed=config.freeze_patch_embed,
                         name_prefix=name)


def build_augment(config):
    """The `ViewRecipe` of a `TrainConfig`'s method (used on the host or on the device)."""
    from tfssl.augment import as_view_recipe

    return as_view_recipe(config.options().augment(config), method_class(config.method).default_views)


def build_method(config, num_classes=None, total_steps=None, num_examples=None, steps_per_epoch=None):
    """Builds the method of a `TrainConfig` from its registered options: encoder, views and heads.

    Args:
      config: `tfssl.config.TrainConfig`.
      num_classes: classes of the online probe (None: no probe).
      total_steps, steps_per_epoch, num_examples: the run's length and data size, for schedules, freezing
        and memory banks (`BuildContext`); None when the model is only rebuilt to evaluate or export.

    Returns:
      An `SSLMethod` whose variables all exist.
    """
    options = config.options()
    common = dict(augment=build_augment(config) if config.augment_on == "device" else None,
                  num_classes=num_classes if config.linear_probe else None,
                  linear_probe=config.linear_probe, seed=config.seed, name=config.method)
    context = BuildContext(num_classes=num_classes, total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                           num_examples=num_examples)
    encoder = None if options.OWN_ENCODER else build_encoder_from_config(config)
    model = options.build(config, encoder, context, **common)
    model.build_heads()
    return model
