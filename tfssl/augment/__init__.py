"""Batched image augmentations with per-image stateless randomness (SimCLR recipe).

Public API: `SimCLRAugment`, `to_float_rgb`, `center_resize`, and the individual ops (also
available as `tfssl.augment.ops`).
"""
from tfssl.augment import ops
from tfssl.augment.ops import *  # noqa: F401,F403  (the op namespace is re-exported on purpose)
from tfssl.augment.ops import __all__ as _ops_all
from tfssl.augment.preprocess import center_resize, to_float_rgb
from tfssl.augment.simclr import SimCLRAugment

__all__ = ["SimCLRAugment", "center_resize", "ops", "to_float_rgb", *_ops_all]
