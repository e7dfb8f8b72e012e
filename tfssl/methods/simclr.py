"""SimCLR v1 / v2.

Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020 (v1);
Chen et al., "Big Self-Supervised Models are Strong Semi-Supervised Learners", NeurIPS 2020 (v2: deeper
projection head with BN, fine-tuning from a middle head layer). v1 and v2 differ only in the head, so
both are this class: `proj_layers=2` is v1, `proj_layers=3` with `keep_proj_layer=1` is v2.
"""
import dataclasses

import keras
import tensorflow as tf

from tfssl.heads import ProjectionHead
from tfssl.losses import check_temperature, contrastive_accuracy_and_entropy, nt_xent_loss
from tfssl.methods.base import Loss, SSLMethod
from tfssl.methods.registry import MethodOptions, option


@keras.saving.register_keras_serializable(package="tfssl")
class SimCLR(SSLMethod):
    """SimCLR: two views -> shared encoder f -> projection g -> NT-Xent over the global batch.

    Args:
      encoder: backbone, images -> `[B, D]`.
      projector: `ProjectionHead` g.
      temperature: NT-Xent temperature (0.5 for CIFAR-10, 0.1 for ImageNet in the paper).
      **kwargs: `SSLMethod` arguments (augment, num_classes, linear_probe, seed, name).
    """

    metric_names = ("loss", "contrast_acc", "contrast_entropy")
    config_fields = ("temperature",)

    def __init__(self, encoder, projector=None, temperature=0.5, **kwargs):
        super().__init__(encoder, **kwargs)
        check_temperature(temperature)
        self.projector = projector if projector is not None else ProjectionHead(name="projector")
        self.temperature = float(temperature)

    def build_heads(self):
        if not self.projector.built:
            self.projector.build((None, int(self.encoder.output.shape[-1])))
        super().build_heads()

    def compute_loss(self, views, batch):
        view1, view2 = views
        n = tf.shape(view1)[0]
        # One encoder pass over both views, so batch norm sees all 2n images (as in the paper).
        h = self.encoder(tf.concat([view1, view2], axis=0), training=True)
        z1, z2 = tf.split(self.projector(h, training=True), 2, axis=0)
        contrastive = nt_xent_loss(z1, z2, self.temperature)
        acc, entropy = contrastive_accuracy_and_entropy(contrastive.logits, contrastive.labels)
        return Loss(contrastive.loss, h[:n], {"contrast_acc": acc, "contrast_entropy": entropy})

    def fine_tune_model(self):
        """Encoder plus the head layers SimCLRv2 keeps for fine-tuning (`projector.keep_layer`)."""
        self.build_heads()
        h = self.encoder.output
        out = self.projector.kept_output(h, training=False) if self.projector.keep_layer else h
        return keras.Model(self.encoder.input, out, name="fine_tune_model")


@dataclasses.dataclass
class SimCLROptions(MethodOptions):
    """SimCLR's options; defaults: the paper's ImageNet setting (v1 head)."""

    NAME = "simclr"
    ARCHITECTURE = ("proj_layers", "proj_dim", "proj_hidden_dim")

    temperature: float = option(0.1, "NT-Xent temperature (paper: 0.1 ImageNet, 0.5 CIFAR-10).")
    proj_layers: int = option(2, "Projection-head depth (v1: 2, v2: 3).")
    proj_dim: int = option(128, "Projection output dimension.")
    proj_hidden_dim: int = option(0, "Projection hidden width; 0 = the encoder's output width.")
    keep_proj_layer: int = option(0, "Head layers kept for fine-tuning (v2: 1; 0 = encoder output only).")

    def validate(self, train, num_replicas=1):
        self.check_positive("temperature", "proj_layers", "proj_dim")
        self.check_range("proj_hidden_dim", 0, float("inf"))
        self.check_range("keep_proj_layer", 0, self.proj_layers)

    def augment(self, train):
        from tfssl.augment import SimCLRAugment

        return SimCLRAugment(train.image_size, color_jitter_strength=train.color_jitter_strength,
                             blur=train.resolved_blur())

    def build(self, train, encoder, context, **common):
        projector = ProjectionHead(num_layers=self.proj_layers, output_dim=self.proj_dim,
                                   hidden_dim=self.proj_hidden_dim or None, keep_layer=self.keep_proj_layer,
                                   sync_bn=train.sync_bn, name="projector")
        return SimCLR(encoder, projector=projector, temperature=self.temperature, **common)

