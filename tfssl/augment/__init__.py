"""Batched image augmentations with per-image stateless randomness (SimCLR and BYOL recipes).

Public API: `SimCLRAugment`, `BYOLAugment`, `ViewPair` (one recipe per view), `byol_views`,
`view_recipe`, `to_float_rgb`, `center_resize`, and the individual ops (also `tfssl.augment.ops`).
"""
from tfssl.augment import ops
from tfssl.augment.ops import *  # noqa: F401,F403  (the op namespace is re-exported on purpose)
from tfssl.augment.ops import __all__ as _ops_all
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

__all__ = ["BYOLAugment", "CropGroup", "PatchGridAugment", "flatten_patches", "patch_grid", "unflatten_patches", "SimCLRAugment", "ViewRecipe", "as_view_recipe", "batch_seed", "epoch_seed", "view_seed", "ViewPair", "byol_views", "center_resize", "deserialize_augment",
           "ops", "serialize_augment", "to_float_rgb", "view_recipe", *_ops_all]
