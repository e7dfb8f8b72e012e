"""BYOL: an online network regresses a slowly moving average of itself.

Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning", NeurIPS 2020.
Online: encoder f, projector g, predictor q. Target: EMA copy of f and g, tau rising from tau_base to 1
on a cosine over training (sec. 3.2). Loss: normalised MSE between q(z) and the target's projection of
the other view, symmetrised (eq. 2). Views: the asymmetric recipe `tfssl.augment.byol_views`.
"""
import dataclasses

import keras
import tensorflow as tf

from tfssl.losses import normalized_mse_loss
from tfssl.methods.base import Loss
from tfssl.methods.registry import option
from tfssl.methods.siamese import SiameseMethod, SiameseOptions
from tfssl.optim.momentum import cosine_momentum


@keras.saving.register_keras_serializable(package="tfssl")
class BYOL(SiameseMethod):
    """BYOL with an EMA target network.

    Args:
      encoder: backbone, images -> `[B, D]`.
      projector: online projector g (`ProjectionHead`, BYOL: 4096 hidden, 256 out, no output BN).
      predictor: online predictor q (`tfssl.heads.predictor_head`).
      tau_base: target decay at step 0, in [0, 1] (0.996 in the paper).
      total_steps: length K of the cosine schedule of tau; None keeps tau = tau_base (e.g. a model
        rebuilt only for evaluation or export).
      **kwargs: `SSLMethod` arguments.
    """

    config_fields = ("tau_base", "total_steps")

    def __init__(self, encoder, projector, predictor, tau_base=0.996, total_steps=None, **kwargs):
        super().__init__(encoder, projector, predictor, **kwargs)
        if not 0.0 <= tau_base <= 1.0:
            raise ValueError(f"tau_base must be in [0, 1], got {tau_base}")
        if total_steps is not None and total_steps <= 0:
            raise ValueError(f"total_steps must be > 0 or None (constant tau), got {total_steps}")
        self.tau_base = float(tau_base)
        self.total_steps = None if total_steps is None else int(total_steps)
        # The target starts as an exact copy of the online encoder and projector (paper, sec. 3.2).
        self.target_encoder = self.make_target(encoder, encoder.input_shape, "target_encoder")
        self.target_projector = self.make_target(self.projector, (None, self.feature_dim), "target_projector")

    def target_momentum(self, step):
        """tau at optimizer step `step`: cosine from tau_base to 1 over `total_steps` (constant if None)."""
        if self.total_steps is None:
            return tf.constant(self.tau_base, tf.float32)
        return cosine_momentum(step, self.total_steps, base=self.tau_base, final=1.0)

    def target_pairs(self):
        """`(online, target)` variable pairs the EMA updates (trainable weights of f and g)."""
        return (self.ema_pairs(self.encoder, self.target_encoder)
                + self.ema_pairs(self.projector, self.target_projector))

    def target_projection(self, view):
        """Target branch z' `[n, d]` of one view; a constant for the optimiser."""
        h = self.target_encoder(view, training=True)
        return tf.stop_gradient(self.target_projector(h, training=True))

    @staticmethod
    def symmetric_loss(p1, p2, target1, target2):
        """Symmetric BYOL loss: nmse(q(z1), z'2) + nmse(q(z2), z'1), each 2 - 2 cos (eq. 2)."""
        return normalized_mse_loss(p1, target2) + normalized_mse_loss(p2, target1)

    def compute_loss(self, views, batch):
        view1, view2 = views
        # The target branch is a constant for the optimiser (stop-gradient, non-trainable weights).
        target1, target2 = self.target_projection(view1), self.target_projection(view2)
        h1, z1, p1 = self.online(view1)
        _, z2, p2 = self.online(view2)
        loss, extra = self.pair_loss(p1, p2, target1, target2)
        return Loss(loss, h1, {**self.monitors(z1, z2), **extra})

    def momentum_pairs(self):
        return self.target_pairs()

    def pair_loss(self, p1, p2, target1, target2):
        """`(loss, extra metrics)` of the predictions against the target projections (MoCo v3 overrides)."""
        return self.symmetric_loss(p1, p2, target1, target2), {}


@dataclasses.dataclass
class BYOLOptions(SiameseOptions):
    """BYOL's options; defaults: the paper's ImageNet setting."""

    NAME = "byol"

    tau_base: float = option(0.996, "Target EMA decay at step 0, rising to 1 on a cosine (paper: 0.996).")

    def validate(self, train, num_replicas=1):
        super().validate(train, num_replicas)
        self.check_range("tau_base", 0.0, 1.0, paper=0.996)

    def build(self, train, encoder, context, **common):
        projector, predictor = self.heads(train, encoder)
        return BYOL(encoder, projector, predictor, tau_base=self.tau_base, total_steps=context.total_steps,
                    **common)
