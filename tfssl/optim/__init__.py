"""Optimisation for self-supervised pre-training: LARS, warmup + cosine schedule, LR scaling, factory."""
from tfssl.optim.factory import NO_DECAY_PATTERN, OPTIMIZERS, build_optimizer, constant_rate_copy, peak_learning_rate
from tfssl.optim.lars import LARS
from tfssl.optim.momentum import cosine_momentum
from tfssl.optim.schedules import LR_SCALINGS, WarmupCosine, scale_learning_rate

__all__ = [
    "LARS",
    "LR_SCALINGS",
    "NO_DECAY_PATTERN",
    "OPTIMIZERS",
    "WarmupCosine",
    "build_optimizer",
    "constant_rate_copy",
    "cosine_momentum",
    "peak_learning_rate",
    "scale_learning_rate",
]
