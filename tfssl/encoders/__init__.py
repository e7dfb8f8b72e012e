"""Backbone encoders: images [B, S, S, C] -> pooled features [B, D] (ResNet v1.5 family, RegNetX/Y, ViT)."""

from tfssl.encoders.resnet import (
    ENDPOINTS,
    RESNET_SPECS,
    encoder_output_dim,
    endpoint_model,
    scaled_channels,
)
from tfssl.encoders import resnet as _resnet
from tfssl.encoders.vit import VIT_SPECS, build_vit, check_vit_args
from tfssl.encoders.regnet import REGNET_SPECS, build_regnet
from tfssl.encoders.amdim import AMDIM_PRESETS, amdim_representation_model, build_amdim_encoder
from tfssl.encoders.resnet_ln import build_resnet_ln
from tfssl.encoders.flexible import any_size

ENCODERS = tuple(RESNET_SPECS) + tuple(REGNET_SPECS) + tuple(VIT_SPECS)


def build_encoder(
    name: str,
    image_size: int,
    channels: int = 3,
    width_multiplier: float = 1.0,
    cifar_stem: bool | None = None,
    sync_bn: bool = False,
    zero_init_residual: bool = False,
    name_prefix: str = "encoder",
    patch_size: int = 16,
    freeze_patch_embed: bool = False,
):
    """Builds the encoder called `name` (see `ENCODERS`): images -> float32 features [B, D].

    ResNets take `width_multiplier`, `cifar_stem`, `sync_bn` and `zero_init_residual` (see
    `tfssl.encoders.resnet.build_encoder`); RegNets take the same but refuse a width multiplier other
    than 1 (see `tfssl.encoders.regnet.build_regnet`); ViTs take `patch_size` and `freeze_patch_embed` (see
    `tfssl.encoders.vit.build_vit`) and refuse a width multiplier other than 1.

    Raises:
        ValueError: one line naming the bad argument and what would be right.
    """
    if name in VIT_SPECS:
        check_vit_args(name, image_size, patch_size, width_multiplier)
        return build_vit(name, image_size, channels=channels, patch_size=patch_size,
                         freeze_patch_embed=freeze_patch_embed, name_prefix=name_prefix)
    if name in REGNET_SPECS:
        return build_regnet(name, image_size, channels=channels, cifar_stem=cifar_stem, sync_bn=sync_bn,
                            zero_init_residual=zero_init_residual, name_prefix=name_prefix,
                            width_multiplier=width_multiplier)
    if name not in RESNET_SPECS:
        raise ValueError(f"Unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}.")
    return _resnet.build_encoder(name, image_size, channels=channels, width_multiplier=width_multiplier,
                                 cifar_stem=cifar_stem, sync_bn=sync_bn, zero_init_residual=zero_init_residual,
                                 name_prefix=name_prefix)


__all__ = [
    "AMDIM_PRESETS",
    "amdim_representation_model",
    "build_amdim_encoder",
    "build_resnet_ln",
    "ENCODERS",
    "ENDPOINTS",
    "REGNET_SPECS",
    "RESNET_SPECS",
    "VIT_SPECS",
    "any_size",
    "build_encoder",
    "build_regnet",
    "build_vit",
    "encoder_output_dim",
    "endpoint_model",
    "scaled_channels",
]
