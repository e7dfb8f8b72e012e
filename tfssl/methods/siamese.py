"""The online branch BYOL, SimSiam (and MoCo v3) share: encoder f -> projector g -> predictor q.

Grill et al. 2020 (BYOL), fig. 2; Chen & He 2021 (SimSiam), fig. 1. Each method file adds what makes
it particular: the target branch (an EMA copy, or the same network behind a stop-gradient) and the loss.
"""
import dataclasses

import keras
import tensorflow as tf

from tfssl.heads import ProjectionHead, predictor_head
from tfssl.methods.base import SSLMethod
from tfssl.methods.registry import MethodOptions, option


@keras.saving.register_keras_serializable(package="tfssl")
class SiameseMethod(SSLMethod):
    """Base of the predictor methods: builds and serialises encoder, projector and predictor.

    Args:
      encoder: backbone, images -> `[B, D]`.
      projector: `ProjectionHead` g, `[B, D]` -> `[B, d]`.
      predictor: head q, `[B, d]` -> `[B, d]` (its output width must equal the projector's).
      **kwargs: `SSLMethod` arguments (augment, num_classes, linear_probe, seed, name).
    """

    metric_names = ("loss", "collapse_std")
    keras_parts = ("encoder", "projector", "predictor")

    def __init__(self, encoder, projector, predictor, **kwargs):
        super().__init__(encoder, **kwargs)
        self.projector = projector
        self.predictor = predictor
        if predictor.output_dim != projector.output_dim:
            raise ValueError(f"predictor output_dim {predictor.output_dim} must equal the projector's "
                             f"output_dim {projector.output_dim}: the prediction regresses a projection")
        # Built now, not lazily: target copies and optimizer slots need every variable before step 1.
        if not projector.built:
            projector.build((None, self.feature_dim))
        if not predictor.built:
            predictor.build((None, projector.output_dim))

    @property
    def feature_dim(self):
        """Width D of the encoder output."""
        return int(self.encoder.output.shape[-1])

    def online(self, view):
        """Online branch of one view `[n, S, S, 3]`: returns `(h [n, D], z [n, d], p [n, d])`.

        Views go through the networks one at a time, so batch norm normalises each view with its own
        statistics, as both papers' implementations do.
        """
        h = self.encoder(view, training=True)
        z = self.projector(h, training=True)
        return h, z, self.predictor(z, training=True)

    def monitors(self, z1, z2):
        """The collapse monitor over both views' projections."""
        return {"collapse_std": self.collapse_std(tf.concat([z1, z2], 0))}



def default_heads(feature_dim, proj_layers, proj_dim, proj_hidden_dim, pred_hidden_dim, last_bn, sync_bn=False,
                  pred_last_bn=False):
    """Projector and predictor of a `SiameseMethod`, sized like the flags say.

    Args:
      feature_dim: encoder output width D (the projector's hidden width when proj_hidden_dim is 0).
      proj_layers: projector depth (BYOL 2, SimSiam 3 on ImageNet / 2 on CIFAR).
      proj_dim: projection width d (BYOL 256, SimSiam 2048).
      proj_hidden_dim: projector hidden width (BYOL 4096, SimSiam 2048); 0 = D.
      pred_hidden_dim: predictor hidden width (BYOL 4096, SimSiam 512).
      last_bn: batch norm on the projector output, without scale or shift (SimSiam and MoCo v3 yes, BYOL
        no).
      sync_bn: synchronise batch-norm statistics across replicas.
      pred_last_bn: end the predictor with such a BN too (MoCo v3 with a ViT).

    Returns:
      `(projector, predictor)`.
    """
    projector = ProjectionHead(num_layers=proj_layers, output_dim=proj_dim, hidden_dim=proj_hidden_dim or None,
                               last_bn=last_bn, last_bn_scale=False, sync_bn=sync_bn, name="projector")
    predictor = predictor_head(proj_dim, pred_hidden_dim, sync_bn=sync_bn, name="predictor", last_bn=pred_last_bn)
    return projector, predictor


@dataclasses.dataclass
class SiameseOptions(MethodOptions):
    """Head sizes shared by BYOL, SimSiam and MoCo v3 (defaults: BYOL's ImageNet setting)."""

    ARCHITECTURE = ("proj_layers", "proj_dim", "proj_hidden_dim", "pred_hidden_dim")

    proj_layers: int = option(2, "Projector depth.")
    proj_dim: int = option(256, "Projection (and prediction) width.")
    proj_hidden_dim: int = option(4096, "Projector hidden width; 0 = the encoder's output width.")
    pred_hidden_dim: int = option(0, "Predictor hidden width; 0 = the projector's hidden width.")

    # The projector ends with a BN without scale or shift (SimSiam, MoCo v3), or a plain Dense (BYOL).
    last_bn = False

    def validate(self, train, num_replicas=1):
        self.check_positive("proj_layers", "proj_dim")
        self.check_range("proj_hidden_dim", 0, float("inf"))
        self.check_range("pred_hidden_dim", 0, float("inf"))

    def augment(self, train):
        """BYOL's asymmetric pair (blur p 1.0 / 0.1, solarise p 0 / 0.2); MoCo v3 adopts it."""
        from tfssl.augment import byol_views

        return byol_views(train.image_size, color_jitter_strength=train.color_jitter_strength,
                          blur=train.resolved_blur())

    def predictor_hidden(self, proj_hidden):
        return self.pred_hidden_dim or proj_hidden

    def heads(self, train, encoder, pred_last_bn=False):
        """`(projector, predictor)` sized by these options."""
        feature_dim = int(encoder.output.shape[-1])
        proj_hidden = self.proj_hidden_dim or feature_dim
        return default_heads(feature_dim, self.proj_layers, self.proj_dim, proj_hidden,
                             self.predictor_hidden(proj_hidden), last_bn=self.last_bn, sync_bn=train.sync_bn,
                             pred_last_bn=pred_last_bn)
