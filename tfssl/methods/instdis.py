"""InstDis: non-parametric instance discrimination with a memory bank.

Wu, Xiong, Yu, Lin, "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR
2018. Every training image is its own class. Encoder f -> linear projection to 128-d -> L2
normalisation gives v_i; a memory bank holds one normalised feature per training image (random unit
vectors at first) and plays the part of the classifier weights. Each step compares the batch's
features with their own bank rows (positives) and with K bank rows drawn uniformly from the N
training images (negatives), at temperature 0.07, through NCE (sec. 3.2, the paper's main objective)
or the non-parametric softmax; after the gradient step the batch's rows move towards the new
features (sec. 3.4: proximal update with momentum 0.5, then renormalised).

Choices not forced by the paper: the K negatives are shared by the global batch and drawn per step
(`MemoryBank.sample`); NCE's Z is estimated from the first step's global batch and then frozen
(`frozen_nce_normalizer`, a checkpointed variable); the bank math runs in float32.
"""
import dataclasses
import numbers

import keras
import tensorflow as tf

from tfssl.heads import MemoryBank, ProjectionHead
from tfssl.losses import (INSTDIS_LOSSES, check_instdis_loss, check_temperature, frozen_nce_normalizer,
                          instdis_logits, instdis_loss)
from tfssl.methods.base import Loss, SSLMethod
from tfssl.methods.registry import MethodOptions, option


def _is_count(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


@keras.saving.register_keras_serializable(package="tfssl")
class InstDis(SSLMethod):
    """Instance discrimination: one view -> encoder f -> linear projection -> L2 norm -> bank loss.

    One view per image; batches carry "index", each example's position in the training split, in
    [0, num_examples) (the bank row).

    Args:
      encoder: backbone, images -> `[B, D]`.
      projector: `ProjectionHead`, `[B, D]` -> `[B, d]` (the paper: one linear layer to d = 128).
      num_examples: N, the number of training examples = rows of the memory bank; None builds no bank
        (a model rebuilt only to evaluate or export), and such a model cannot train.
      temperature: tau > 0 (0.07 in the paper).
      num_negatives: K >= 1 negatives per step (4096 in the paper).
      bank_momentum: m in [0, 1) of the bank update (0.5 in the paper).
      loss: "nce" (the paper's main objective) or "softmax" (non-parametric softmax).
      **kwargs: `SSLMethod` arguments (augment, num_classes, linear_probe, seed, name).
    """

    needs_index = True
    default_views = 1
    metric_names = ("loss", "collapse_std")
    keras_parts = ("encoder", "projector")

    def __init__(self, encoder, projector, num_examples=None, temperature=0.07, num_negatives=4096,
                 bank_momentum=0.5, loss="nce", **kwargs):
        super().__init__(encoder, **kwargs)
        check_temperature(temperature)
        check_instdis_loss(loss)
        if not _is_count(num_negatives):
            raise ValueError(f"num_negatives must be an integer >= 1, got {num_negatives!r}")
        if not isinstance(bank_momentum, (int, float)) or not 0.0 <= bank_momentum < 1.0:
            raise ValueError(f"bank_momentum must be in [0, 1) (0.5 in the paper), got {bank_momentum!r}")
        if num_examples is not None and not _is_count(num_examples):
            raise ValueError(f"num_examples must be None (no memory bank) or an integer >= 1, got {num_examples!r}")
        self.projector, self.num_examples = projector, None if num_examples is None else int(num_examples)
        self.temperature, self.num_negatives = float(temperature), int(num_negatives)
        self.bank_momentum, self.bank, self.normalizer = float(bank_momentum), None, None
        self.objective = loss  # not `self.loss`: keras.Model.compile owns that attribute
        if num_examples is not None:
            self.bank = MemoryBank(self.num_examples, projector.output_dim, momentum=self.bank_momentum,
                                   seed=self.seed, name="memory_bank")
            # NCE's Z: 0 until the first step estimates it. Every replica computes the same value.
            self.normalizer = self.add_weight(shape=(), initializer="zeros", dtype="float32", trainable=False,
                                              name="nce_normalizer", aggregation="only_first_replica")

    def build_heads(self):
        # The memory bank creates its weight in its constructor, so only the projector is left to build.
        if not self.projector.built:
            self.projector.build((None, int(self.encoder.output.shape[-1])))
        super().build_heads()

    def negative_indices(self, step):
        """The K negatives of optimizer step `step`: int64 `[K]`, a stateless draw shared by every replica."""
        return self.bank.sample(self.num_negatives, tf.stack([tf.cast(self.seed, tf.int64), tf.cast(step, tf.int64)]))

    def frozen_normalizer(self, features, positives, negatives):
        logits = instdis_logits(tf.stop_gradient(features), positives, negatives, self.temperature)
        return frozen_nce_normalizer(self.normalizer, logits, self.num_examples)

    def compute_loss(self, views, batch):
        if self.bank is None:
            raise ValueError("InstDis was built without num_examples, so it has no memory bank and cannot train: "
                             "pass num_examples = the size of the training split")
        if "index" not in batch:
            raise ValueError("InstDis batches need each example's 'index' in the training split (the bank row)")
        (view,), index = views, batch["index"]
        negatives = self.bank.lookup(self.negative_indices(self.optimizer.iterations))
        positives = self.bank.lookup(index)
        h = self.encoder(view, training=True)
        z = self.projector(h, training=True)
        f = tf.math.l2_normalize(tf.cast(z, tf.float32), axis=1)
        normalizer = self.frozen_normalizer(f, positives, negatives) if self.objective == "nce" else None
        loss = instdis_loss(f, positives, negatives, self.temperature, self.objective,
                            num_data=self.num_examples, normalizer=normalizer).loss
        return Loss(loss, h, {"collapse_std": self.collapse_std(z)}, {"index": index, "features": f})

    def after_step(self, state, step):
        # The bank stores this step's features (computed before the update), after the gradient step.
        self.bank.update(state["index"], state["features"])

    def get_config(self):
        config = super().get_config()
        config.update(projector=keras.saving.serialize_keras_object(self.projector),
                      num_examples=self.num_examples, temperature=self.temperature,
                      num_negatives=self.num_negatives, bank_momentum=self.bank_momentum, loss=self.objective)
        return config


@dataclasses.dataclass
class InstDisOptions(MethodOptions):
    """InstDis' options; defaults: the paper's ImageNet setting."""

    NAME = "instdis"
    ARCHITECTURE = ("proj_dim", "head_bn")
    LEGACY = {"negatives": "instdis_negatives", "momentum": "instdis_momentum", "loss": "instdis_loss",
              "head_bn": "instdis_head_bn"}

    temperature: float = option(0.07, "Temperature tau (paper: 0.07).")
    proj_dim: int = option(128, "Feature dimension of the linear head (paper: 128).")
    negatives: int = option(4096, "Negatives drawn from the memory bank per step (paper: 4096).")
    momentum: float = option(0.5, "Memory-bank update momentum (paper: 0.5).")
    loss: str = option("nce", "nce (the paper's NCE, Z frozen after step 1) or softmax.", choices=INSTDIS_LOSSES)
    head_bn: bool = option(False, "Batch norm on the linear head's output (the paper has none; small encoders "
                                  "need it, see flags/instdis_fashion_mnist.flags).")

    def validate(self, train, num_replicas=1):
        self.check_positive("temperature", "proj_dim", "negatives")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"{self.flag('momentum')} must be in [0, 1) (paper: 0.5), got {self.momentum}")

    def augment(self, train):
        """MoCo v1's recipe (which it took over from InstDis): 20-100% crops, jitter always, no blur."""
        from tfssl.augment import SimCLRAugment

        return SimCLRAugment(train.image_size, color_jitter_strength=train.color_jitter_strength, blur=False,
                             crop_area=(0.2, 1.0), jitter_prob=1.0)

    def build(self, train, encoder, context, **common):
        # The paper's head: one linear layer, then L2 normalisation (in the method); optionally
        # batch-normalised, which keeps a small encoder's nearly parallel random-init features apart.
        projector = ProjectionHead(num_layers=1, output_dim=self.proj_dim, use_bn=self.head_bn, name="projector")
        return InstDis(encoder, projector, num_examples=context.num_examples, temperature=self.temperature,
                       num_negatives=self.negatives, bank_momentum=self.momentum, loss=self.loss, **common)
