"""VICReg: variance, invariance and covariance terms on the two views' expander outputs.

Bardes, Ponce, LeCun. "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", ICLR 2022, eq. (1)-(6) and sec. 4.1: expander 3 x 8192 (Dense-BN-ReLU twice, then a plain
Dense), weights lambda = mu = 25, nu = 1, LARS lr 0.2 x B/256, weight decay 1e-6, batch 2048.
"""
import dataclasses

import keras

from tfssl.losses import vicreg_loss
from tfssl.methods.redundancy import RedundancyMethod, RedundancyOptions
from tfssl.methods.registry import option


@keras.saving.register_keras_serializable(package="tfssl")
class VICReg(RedundancyMethod):
    """VICReg.

    Args:
      encoder: backbone, images -> `[B, D]`.
      projector: the expander, a `ProjectionHead` without BN on its output (paper: 3 layers of 8192).
      sim_weight: lambda >= 0 on the invariance (mean squared distance) term; 25 in the paper.
      var_weight: mu >= 0 on the variance hinge; 25 in the paper.
      cov_weight: nu >= 0 on the covariance term; 1 in the paper.
      **kwargs: `SSLMethod` arguments.
    """

    metric_names = ("loss", "invariance", "variance", "covariance", "collapse_std")
    config_fields = ("sim_weight", "var_weight", "cov_weight")

    def __init__(self, encoder, projector, sim_weight=25.0, var_weight=25.0, cov_weight=1.0, **kwargs):
        for name, value in (("sim_weight", sim_weight), ("var_weight", var_weight), ("cov_weight", cov_weight)):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0 (paper: 25 / 25 / 1), got {value!r}")
        super().__init__(encoder, projector, **kwargs)
        self.sim_weight = float(sim_weight)
        self.var_weight = float(var_weight)
        self.cov_weight = float(cov_weight)

    def pair_loss(self, z1, z2):
        """`vicreg_loss` of the two views' `[n, d]` expander outputs (global batch statistics)."""
        return vicreg_loss(z1, z2, sim_weight=self.sim_weight, var_weight=self.var_weight,
                           cov_weight=self.cov_weight)


@dataclasses.dataclass
class VICRegOptions(RedundancyOptions):
    """VICReg's options; defaults: the paper's ImageNet setting."""

    NAME = "vicreg"
    LEGACY = {"sim_weight": "vicreg_sim_weight", "var_weight": "vicreg_var_weight",
              "cov_weight": "vicreg_cov_weight"}

    sim_weight: float = option(25.0, "Weight lambda of the invariance term (paper: 25).")
    var_weight: float = option(25.0, "Weight mu of the variance term (paper: 25).")
    cov_weight: float = option(1.0, "Weight nu of the covariance term (paper: 1).")

    def validate(self, train, num_replicas=1):
        super().validate(train, num_replicas)
        for name in ("sim_weight", "var_weight", "cov_weight"):
            self.check_range(name, 0.0, float("inf"))

    def build(self, train, encoder, context, **common):
        return VICReg(encoder, self.projector(train), sim_weight=self.sim_weight, var_weight=self.var_weight,
                      cov_weight=self.cov_weight, **common)
