"""SimSiam: one network on two views, a predictor on one side, stop-gradient on the other.

Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021, Algorithm 1:
    z1, z2 = g(f(x1)), g(f(x2));  p1, p2 = q(z1), q(z2)
    L = D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2,  D = negative cosine similarity.
No negatives, no momentum encoder: the stop-gradient is what prevents collapse (sec. 4.1).
"""
import dataclasses

import keras

from tfssl.losses import negative_cosine_loss
from tfssl.methods.base import Loss, ParamGroup
from tfssl.methods.registry import option
from tfssl.methods.siamese import SiameseMethod, SiameseOptions


@keras.saving.register_keras_serializable(package="tfssl")
class SimSiam(SiameseMethod):
    """SimSiam.

    Args:
      encoder: backbone, images -> `[B, D]`.
      projector: `ProjectionHead` g ending in a BN without scale or shift (reference code:
        BatchNorm1d(affine=False); paper: 3 layers of 2048 on ImageNet, 2 on CIFAR).
      predictor: bottleneck predictor q (paper: 2048 -> 512 -> 2048, `tfssl.heads.predictor_head`).
      fix_predictor_lr: train the predictor at the schedule's peak rate, constant, while encoder and
        projector follow the schedule (paper sec. 4.4: "fix lr for predictor", used in its ImageNet
        recipe). The predictor then has its own optimizer (same class and settings), created in
        `compile` and checkpointed with the model.
      **kwargs: `SSLMethod` arguments.
    """

    config_fields = ("fix_predictor_lr",)

    def __init__(self, encoder, projector, predictor, fix_predictor_lr=False, **kwargs):
        super().__init__(encoder, projector, predictor, **kwargs)
        self.fix_predictor_lr = bool(fix_predictor_lr)
        self.predictor_optimizer = None

    def compile(self, optimizer="rmsprop", **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        if self.fix_predictor_lr:
            from tfssl.optim import constant_rate_copy, peak_learning_rate

            inner = getattr(self.optimizer, "inner_optimizer", self.optimizer)  # under a LossScaleOptimizer
            self.predictor_optimizer = constant_rate_copy(inner, peak_learning_rate(inner))

    def compile_from_config(self, config):
        # Keras skips restoring the compile state of models whose `compile` is overridden unless this is too.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.build_optimizers()

    def param_groups(self):
        """One group, or with `fix_predictor_lr` the predictor apart, at its constant-rate optimizer."""
        if not self.fix_predictor_lr:
            return super().param_groups()
        predictor = {id(v) for v in self.predictor.trainable_variables}
        rest = [v for v in self.trainable_variables if id(v) not in predictor]
        return [ParamGroup(rest), ParamGroup(list(self.predictor.trainable_variables), self.predictor_optimizer)]

    @staticmethod
    def symmetric_loss(p1, p2, z1, z2):
        """D(p1, z2) / 2 + D(p2, z1) / 2; the z side is a constant (stop-gradient inside the loss)."""
        return 0.5 * negative_cosine_loss(p1, z2) + 0.5 * negative_cosine_loss(p2, z1)

    def compute_loss(self, views, batch):
        view1, view2 = views
        h1, z1, p1 = self.online(view1)
        _, z2, p2 = self.online(view2)
        return Loss(self.symmetric_loss(p1, p2, z1, z2), h1, self.monitors(z1, z2))


@dataclasses.dataclass
class SimSiamOptions(SiameseOptions):
    """SimSiam's options; defaults: the paper's ImageNet setting (3 x 2048 projector, 512 bottleneck)."""

    NAME = "simsiam"

    proj_layers: int = option(3, "Projector depth (paper: 3 on ImageNet, 2 on CIFAR).")
    proj_dim: int = option(2048, "Projection width.")
    proj_hidden_dim: int = option(2048, "Projector hidden width; 0 = the encoder's output width.")
    pred_hidden_dim: int = option(512, "Predictor bottleneck width; 0 = proj_dim // 4.")
    fix_predictor_lr: bool = option(True, "Train the predictor at the constant peak rate (paper, ImageNet).")

    last_bn = True

    def augment(self, train):
        """SimCLR's recipe, as the paper uses."""
        from tfssl.augment import SimCLRAugment

        return SimCLRAugment(train.image_size, color_jitter_strength=train.color_jitter_strength,
                             blur=train.resolved_blur())

    def predictor_hidden(self, proj_hidden):
        return self.pred_hidden_dim or max(1, self.proj_dim // 4)

    def build(self, train, encoder, context, **common):
        projector, predictor = self.heads(train, encoder)
        return SimSiam(encoder, projector, predictor, fix_predictor_lr=self.fix_predictor_lr, **common)
