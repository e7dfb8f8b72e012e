"""Barlow Twins: make the cross-correlation matrix of the two views' projections the identity.

Zbontar, Jing, Misra, LeCun, Deny. "Barlow Twins: Self-Supervised Learning via Redundancy Reduction",
ICML 2021, eq. (1)-(2) and sec. 2-3: projector 3 x 8192 (Dense-BN-ReLU twice, then a plain Dense; the
loss standardises each feature itself), lambda = 0.0051, LARS, batch 2048, 1000 epochs.
"""
import dataclasses

import keras

from tfssl.losses import barlow_twins_loss
from tfssl.methods.redundancy import RedundancyMethod, RedundancyOptions
from tfssl.methods.registry import option


@keras.saving.register_keras_serializable(package="tfssl")
class BarlowTwins(RedundancyMethod):
    """Barlow Twins.

    Args:
      encoder: backbone, images -> `[B, D]`.
      projector: `ProjectionHead` without BN on its output (paper: 3 layers of 8192).
      lambd: weight >= 0 of the off-diagonal (redundancy) term; 0.0051 in the paper.
      scale: factor > 0 on the whole loss (1 = the paper's loss).
      **kwargs: `SSLMethod` arguments.
    """

    metric_names = ("loss", "on_diagonal", "off_diagonal", "collapse_std")
    config_fields = ("lambd", "scale")

    def __init__(self, encoder, projector, lambd=0.0051, scale=1.0, **kwargs):
        if not isinstance(lambd, (int, float)) or lambd < 0:
            raise ValueError(f"lambd must be a number >= 0 (paper: 0.0051), got {lambd!r}")
        if not isinstance(scale, (int, float)) or scale <= 0:
            raise ValueError(f"scale must be a number > 0 (paper: 1.0), got {scale!r}")
        super().__init__(encoder, projector, **kwargs)
        self.lambd = float(lambd)
        self.scale = float(scale)

    def pair_loss(self, z1, z2):
        """`barlow_twins_loss` of the two views' `[n, d]` projections (global batch statistics)."""
        return barlow_twins_loss(z1, z2, lambd=self.lambd, scale=self.scale)


@dataclasses.dataclass
class BarlowTwinsOptions(RedundancyOptions):
    """Barlow Twins' options; defaults: the paper's ImageNet setting."""

    NAME = "barlow_twins"
    LEGACY = {"lambd": "bt_lambda"}

    lambd: float = option(0.0051, "Weight of the off-diagonal (redundancy) term (paper: 0.0051).")

    def validate(self, train, num_replicas=1):
        super().validate(train, num_replicas)
        self.check_range("lambd", 0.0, float("inf"), paper=0.0051)

    def build(self, train, encoder, context, **common):
        return BarlowTwins(encoder, self.projector(train), lambd=self.lambd, **common)
