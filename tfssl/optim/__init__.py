"""Optimisation for self-supervised pre-training: LARS, warmup + cosine schedule, LR scaling, factory."""
from tfssl.optim.coupled_sgd import CoupledSGD
from tfssl.optim.factory import (LARS_UNADAPTED, NO_DECAY_PATTERN, OPTIMIZERS, WEIGHT_DECAY_EXCLUDES,
                                 WEIGHT_DECAY_MODES, build_optimizer, constant_rate_copy, peak_learning_rate,
                                 resolve_weight_decay)
from tfssl.optim.lars import LARS
from tfssl.optim.momentum import cosine_momentum
from tfssl.optim.schedules import LR_SCALINGS, WarmupCosine, scale_learning_rate

__all__ = [
    "CoupledSGD",
    "LARS",
    "LARS_UNADAPTED",
    "LR_SCALINGS",
    "NO_DECAY_PATTERN",
    "OPTIMIZERS",
    "WEIGHT_DECAY_EXCLUDES",
    "WEIGHT_DECAY_MODES",
    "WarmupCosine",
    "build_optimizer",
    "constant_rate_copy",
    "cosine_momentum",
    "peak_learning_rate",
    "resolve_weight_decay",
    "scale_learning_rate",
]
