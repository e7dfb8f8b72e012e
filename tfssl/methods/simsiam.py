"""SimSiam: one network on two views, a predictor on one side, stop-gradient on the other.

Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021, Algorithm 1:
    z1, z2 = g(f(x1)), g(f(x2));  p1, p2 = q(z1), q(z2)
    L = D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2,  D = negative cosine similarity.
No negatives, no momentum encoder: the stop-gradient is what prevents collapse (sec. 4.1).
"""
import keras
import tensorflow as tf

from tfssl.losses import negative_cosine_loss
from tfssl.methods.siamese import SiameseMethod


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

    def _variable_groups(self):
        """`(scheduled variables, predictor variables)` when the predictor's rate is fixed."""
        predictor = {id(v) for v in self.predictor.trainable_variables}
        rest = [v for v in self.trainable_variables if id(v) not in predictor]
        return rest, list(self.predictor.trainable_variables)

    def build_optimizers(self):
        if not self.fix_predictor_lr:
            return super().build_optimizers()
        rest, predictor = self._variable_groups()
        self.optimizer.build(rest)
        self.predictor_optimizer.build(predictor)

    @staticmethod
    def symmetric_loss(p1, p2, z1, z2):
        """D(p1, z2) / 2 + D(p2, z1) / 2; the z side is a constant (stop-gradient inside the loss)."""
        return 0.5 * negative_cosine_loss(p1, z2) + 0.5 * negative_cosine_loss(p2, z1)

    def train_step(self, data):
        view1, view2, labels = self.views(data)
        with tf.GradientTape() as tape:
            h1, z1, p1 = self.online(view1)
            _, z2, p2 = self.online(view2)
            loss = self.symmetric_loss(p1, p2, z1, z2)
            total = loss + self.probe_loss(h1, labels)
        if self.fix_predictor_lr:
            rest, predictor = self._variable_groups()
            grads = self.gradients(tape, total, rest + predictor)
            self.optimizer.apply_gradients(zip(grads[:len(rest)], rest))
            # The main optimizer unscales its gradients under mixed float16; the copy is a plain optimizer.
            unscale = 1.0 / tf.cast(self.optimizer.scale_loss(tf.constant(1.0)), tf.float32)
            self.predictor_optimizer.apply_gradients(
                [(g * tf.cast(unscale, g.dtype), v) for g, v in zip(grads[len(rest):], predictor)])
        else:
            self.apply_gradients(tape, total)
        return self.report(loss, z1, z2)

    def get_config(self):
        config = super().get_config()
        config.update(fix_predictor_lr=self.fix_predictor_lr)
        return config

