"""InvaSpread: invariant and spreading instance features, with the batch as the dictionary.

Ye, Zhang, Yuen, Chang, "Unsupervised Embedding Learning via Invariant and Spreading Instance Feature",
CVPR 2019. Two views of every image -> shared encoder -> linear embedding to 128-d -> L2 normalisation;
each view must pick its own other view out of the global batch (invariance) and stay away from every
other image's views (spreading): `tfssl.losses.invaspread_loss`, temperature 0.1, no memory bank.
"""
import dataclasses

import keras
import tensorflow as tf

from tfssl.heads import ProjectionHead
from tfssl.losses import check_temperature, invaspread_loss
from tfssl.methods.base import Loss, SSLMethod
from tfssl.methods.registry import MethodOptions, option


@keras.saving.register_keras_serializable(package="tfssl")
class InvaSpread(SSLMethod):
    """Two views -> encoder -> `projector` (one linear layer in the paper) -> InvaSpread loss at `temperature`.

    `**kwargs`: `SSLMethod` arguments (augment, num_classes, linear_probe, seed, name).
    """

    metric_names = ("loss", "collapse_std", "positive_acc")
    config_fields = ("temperature",)

    def __init__(self, encoder, projector, temperature=0.1, **kwargs):
        super().__init__(encoder, **kwargs)
        check_temperature(temperature)
        self.projector, self.temperature = projector, float(temperature)

    def build_heads(self):
        if not self.projector.built:
            self.projector.build((None, int(self.encoder.output.shape[-1])))
        super().build_heads()

    def compute_loss(self, views, batch):
        view1, view2 = views
        n = tf.shape(view1)[0]
        # One encoder pass over both views, as the paper's siamese network shares its batch statistics.
        h = self.encoder(tf.concat([view1, view2], axis=0), training=True)
        z = tf.cast(self.projector(h, training=True), tf.float32)
        z1, z2 = tf.split(z, 2, axis=0)
        out = invaspread_loss(z1, z2, self.temperature)
        # The positive among the other 2N - 1 candidates (the anchor itself excluded).
        self_mask = tf.one_hot(tf.concat([out.labels[n:], out.labels[:n]], 0), tf.shape(out.logits)[1])
        guess = tf.argmax(out.logits - 1e9 * self_mask, axis=1, output_type=tf.int32)
        hits = tf.reduce_mean(tf.cast(tf.equal(guess, tf.cast(out.labels, tf.int32)), tf.float32))
        return Loss(out.loss, h[:n], {"collapse_std": self.collapse_std(z1), "positive_acc": hits})


@dataclasses.dataclass
class InvaSpreadOptions(MethodOptions):
    """InvaSpread's options; defaults: the paper's CIFAR-10 setting (128-d linear embedding, T 0.1)."""

    NAME = "invaspread"
    ARCHITECTURE = ("proj_dim",)

    temperature: float = option(0.1, "Temperature tau (paper: 0.1).")
    proj_dim: int = option(128, "Embedding width of the linear head (paper: 128).")

    def validate(self, train, num_replicas=1):
        self.check_positive("temperature", "proj_dim")

    def augment(self, train):
        """The paper's views: crops of 20-100% area, colour jitter (always), grayscale p 0.2, flip; no blur."""
        from tfssl.augment import SimCLRAugment

        return SimCLRAugment(train.image_size, color_jitter_strength=train.color_jitter_strength, blur=False,
                             crop_area=(0.2, 1.0), jitter_prob=1.0)

    def build(self, train, encoder, context, **common):
        projector = ProjectionHead(num_layers=1, output_dim=self.proj_dim, use_bn=False, name="projector")
        return InvaSpread(encoder, projector, temperature=self.temperature, **common)
