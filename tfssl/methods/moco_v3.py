"""MoCo v3: BYOL's online / momentum networks with a contrastive loss over the global batch instead of a queue.

Chen, Xie, He, "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV 2021, Algorithm 1:
    q1, q2 = predictor(projector(f_q(x1))), predictor(projector(f_q(x2)))
    k1, k2 = projector_k(f_k(x1)), projector_k(f_k(x2))       # momentum encoder, no gradient
    loss = ctr(q1, k2) + ctr(q2, k1),  ctr = 2 * tau * cross-entropy over the keys of the whole batch
The keys are gathered from all replicas (every other image of the global batch is a negative); the
momentum rises from its base (0.99 for ResNet-50) to 1 on a cosine, as in BYOL; batch norm is sync BN
in the paper's ResNet setting (`--sync_bn`). Views: BYOL's asymmetric recipe, which the paper adopts.
Backbones: ResNets, or the paper's ViT (`--encoder=vit_small --patch_size=16 --freeze_patch_embed`, see
`tfssl/encoders/vit.py` and flags/moco_v3_vit_imagenet.flags), whose projector has 3 layers instead of 2.
"""
import dataclasses

import keras
import tensorflow as tf

from tfssl.losses import symmetric_contrastive_loss
from tfssl.methods.byol import BYOL, BYOLOptions
from tfssl.methods.registry import option


@keras.saving.register_keras_serializable(package="tfssl")
class MoCoV3(BYOL):
    """MoCo v3 (ResNet or ViT backbone).

    Args:
      encoder: backbone, images -> `[B, D]`.
      projector: online projector (paper: 2 layers for ResNet, 3 for ViT; 4096 hidden, 256 out, BN on every
        layer, the last without scale or shift as in the reference code).
      predictor: online predictor (paper: 2 layers, 4096 hidden; ends with a parameter-free BN for a ViT, with
        a Dense for a ResNet).
      temperature: tau of the contrastive loss (1.0 for ResNet-50 in the paper's code, 0.2 for ViT).
      tau_base: momentum at step 0 (0.99), rising to 1 over `total_steps` on a cosine.
      total_steps: length of the momentum schedule; None keeps it at tau_base.
      **kwargs: `SSLMethod` arguments.

    Everything but the loss -- momentum copies, schedule, no-gradient target, per-view BN -- is BYOL's.
    """

    metric_names = ("loss", "collapse_std", "key_acc")
    config_fields = BYOL.config_fields + ("temperature",)

    def __init__(self, encoder, projector, predictor, temperature=1.0, tau_base=0.99, total_steps=None, **kwargs):
        super().__init__(encoder, projector, predictor, tau_base=tau_base, total_steps=total_steps, **kwargs)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0 (MoCo v3 ResNet: 1.0, ViT: 0.2), got {temperature}")
        self.temperature = float(temperature)

    def pair_loss(self, p1, p2, target1, target2):
        """ctr(q1, k2) + ctr(q2, k1) over the gathered global batch, and the top-1 accuracy of the keys."""
        output = symmetric_contrastive_loss(p1, p2, target1, target2, temperature=self.temperature)
        predicted = tf.argmax(output.logits, axis=1, output_type=tf.int32)
        return output.loss, {"key_acc": tf.reduce_mean(tf.cast(tf.equal(predicted, output.labels), tf.float32))}


@dataclasses.dataclass
class MoCoV3Options(BYOLOptions):
    """MoCo v3's options; defaults: the paper's ResNet-50 setting (ViT: 3 projector layers, temperature 0.2)."""

    NAME = "moco_v3"

    pred_hidden_dim: int = option(4096, "Predictor hidden width; 0 = the projector's hidden width.")
    temperature: float = option(1.0, "Contrastive temperature (ResNet-50: 1.0, ViT: 0.2).")
    tau_base: float = option(0.99, "Momentum at step 0, rising to 1 on a cosine (paper: 0.99).")

    last_bn = True

    def validate(self, train, num_replicas=1):
        super().validate(train, num_replicas)
        self.check_positive("temperature")

    def build(self, train, encoder, context, **common):
        # The ViT predictor ends with a parameter-free BN too (reference code).
        projector, predictor = self.heads(train, encoder, pred_last_bn=train.encoder.startswith("vit_"))
        return MoCoV3(encoder, projector, predictor, temperature=self.temperature, tau_base=self.tau_base,
                      total_steps=context.total_steps, **common)
