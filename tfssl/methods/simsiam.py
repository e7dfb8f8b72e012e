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
      projector: `ProjectionHead` g with BN on its output (paper: 3 layers of 2048 on ImageNet, 2 on CIFAR).
      predictor: bottleneck predictor q (paper: 2048 -> 512 -> 2048, `tfssl.heads.predictor_head`).
      **kwargs: `SSLMethod` arguments.
    """

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
        self.apply_gradients(tape, total)
        return self.report(loss, z1, z2)

