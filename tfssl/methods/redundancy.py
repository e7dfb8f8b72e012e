"""The shared shape of the redundancy-reduction methods: encoder f -> projector g, one loss on both views.

Barlow Twins (Zbontar et al. 2021, fig. 1) and VICReg (Bardes et al. 2022, fig. 1) use no predictor,
no target network and no negatives: collapse is prevented by a loss on the statistics of the global
batch (`tfssl.losses.redundancy`). Each subclass only names its loss and its loss components.
"""
import dataclasses

import keras
import tensorflow as tf

from tfssl.heads import ProjectionHead
from tfssl.methods.base import Loss, SSLMethod
from tfssl.methods.registry import MethodOptions, option


@keras.saving.register_keras_serializable(package="tfssl")
class RedundancyMethod(SSLMethod):
    """Base of Barlow Twins and VICReg: a projector ("expander") on the encoder, a symmetric batch loss.

    Subclasses list their loss components in `metric_names` (between "loss" and "collapse_std") and
    implement `pair_loss(z1, z2)` returning `(global loss, {component: global value})`.

    Args:
      encoder: backbone, images -> `[B, D]`.
      projector: `ProjectionHead`, `[B, D]` -> `[B, d]` (both papers: 3 layers of 8192).
      **kwargs: `SSLMethod` arguments (augment, num_classes, linear_probe, seed, name).
    """

    metric_names = ("loss", "collapse_std")
    keras_parts = ("encoder", "projector")

    def __init__(self, encoder, projector, **kwargs):
        super().__init__(encoder, **kwargs)
        self.projector = projector
        if not projector.built:  # optimizer slots and checkpoints need every variable before step 1
            projector.build((None, int(encoder.output.shape[-1])))

    def pair_loss(self, z1, z2):
        """`(loss, {component: value})` of `[n, d]` projections (global-batch statistics); defined by subclasses."""
        raise NotImplementedError

    def embed(self, view):
        """One view `[n, S, S, 3]` -> `(h [n, D], z [n, d])`; each view gets its own BN statistics."""
        h = self.encoder(view, training=True)
        return h, self.projector(h, training=True)

    def compute_loss(self, views, batch):
        view1, view2 = views
        h1, z1 = self.embed(view1)
        _, z2 = self.embed(view2)
        # Batch statistics in float32 even under a mixed policy: 8192^2 correlations overflow bf16 precision.
        z1, z2 = tf.cast(z1, tf.float32), tf.cast(z2, tf.float32)
        loss, components = self.pair_loss(z1, z2)
        return Loss(loss, h1, {"collapse_std": self.collapse_std(tf.concat([z1, z2], 0)), **components})


@dataclasses.dataclass
class RedundancyOptions(MethodOptions):
    """Projector ("expander") sizes shared by Barlow Twins and VICReg (both papers: 3 x 8192)."""

    ARCHITECTURE = ("proj_layers", "proj_dim", "proj_hidden_dim")

    proj_layers: int = option(3, "Projector depth (both papers: 3).")
    proj_dim: int = option(8192, "Projector output width (both papers: 8192).")
    proj_hidden_dim: int = option(8192, "Projector hidden width; 0 = the encoder's output width.")

    def validate(self, train, num_replicas=1):
        self.check_positive("proj_layers", "proj_dim")
        self.check_range("proj_hidden_dim", 0, float("inf"))

    def augment(self, train):
        """BYOL's asymmetric pair, which both papers reuse."""
        from tfssl.augment import byol_views

        return byol_views(train.image_size, color_jitter_strength=train.color_jitter_strength,
                          blur=train.resolved_blur())

    def projector(self, train):
        # Both papers end the projector with a plain Dense: the loss itself standardises / regularises.
        return ProjectionHead(num_layers=self.proj_layers, output_dim=self.proj_dim,
                              hidden_dim=self.proj_hidden_dim or None, last_bn=False, sync_bn=train.sync_bn,
                              name="projector")
