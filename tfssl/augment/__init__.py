"""Batched image augmentations with per-image stateless randomness (SimCLR and BYOL recipes).

Public API: `SimCLRAugment`, `BYOLAugment`, `ViewPair` (one recipe per view), `byol_views`,
`view_recipe`, `to_float_rgb`, `center_resize`, and the individual ops (also `tfssl.augment.ops`).
"""
from tfssl.augment import ops
from tfssl.augment.amdim_views import AMDIMAugment  # (its import also registers it for serialisation)
from tfssl.augment.ops import *  # noqa: F401,F403  (the op namespace is re-exported on purpose)
from tfssl.augment.ops import __all__ as _ops_all
from tfssl.augment.channel_views import CHANNEL_VIEWS, ChannelViews, lab_views, luminance_gradient_views, rgb_to_lab
from tfssl.augment.patches import PatchGridAugment, flatten_patches, patch_grid, unflatten_patches
from tfssl.augment.preprocess import center_resize, to_float_rgb
from tfssl.augment.recipes import CropGroup, ViewRecipe, as_view_recipe, batch_seed, epoch_seed, view_seed
from tfssl.augment.simclr import SimCLRAugment
from tfssl.augment.views import (
    BYOLAugment,
    ViewPair,
    byol_views,
    deserialize_augment,
    serialize_augment,
    view_recipe,
)

__all__ = ["AMDIMAugment", "BYOLAugment", "CHANNEL_VIEWS", "ChannelViews", "CropGroup", "PatchGridAugment", "SimCLRAugment",
           "ViewPair", "ViewRecipe", "as_view_recipe", "batch_seed", "byol_views", "center_resize", "deserialize_augment",
           "epoch_seed", "flatten_patches", "lab_views", "luminance_gradient_views", "ops", "patch_grid", "rgb_to_lab",
           "serialize_augment", "to_float_rgb", "unflatten_patches", "view_recipe", "view_seed", *_ops_all]
