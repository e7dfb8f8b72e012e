"""InstDis: non-parametric instance discrimination with a memory bank.

Wu, Xiong, Yu, Lin, "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR
2018. Every training image is its own class. Encoder f -> linear projection to 128-d -> L2
normalisation gives v_i; a memory bank holds one normalised feature per training image (random unit
vectors at first) and plays the part of the classifier weights. Each step compares the batch's
features with their own bank rows (positives) and with K bank rows drawn uniformly from the N
training images (negatives), at temperature 0.07, through NCE (sec. 3.2, the paper's main objective)
or the non-parametric softmax; after the gradient step the batch's rows move towards the new
features (sec. 3.4: proximal update with momentum 0.5, then renormalised).

Choices made here, stated because they are not forced by the paper:
- The K negatives are drawn once per step, from the stateless seed (seed, optimizer step), and shared
  by the whole global batch (every replica draws the same indices). As in the paper's sampling, a
  negative may coincide with an example's own positive (not excluded: with K << N it is rare).
- NCE's normaliser Z is estimated once, from the first step's global batch (Z = N * mean of exp(s)
  over its positive and negative logits, as the paper's code does), and then frozen; it is a
  non-trainable, checkpointed variable (0 = not estimated yet).
- The bank momentum is 0.5 (the paper's proximal setting), the loss the local mean divided by the
  number of replicas; the bank math runs in float32 even under mixed precision.
"""
import numbers

import keras
import tensorflow as tf

from tfssl.augment import to_float_rgb, view_recipe
from tfssl.distribute import replica_id_and_count
from tfssl.heads import MemoryBank
from tfssl.losses import check_instdis_loss, check_temperature, estimate_nce_normalizer, instdis_logits, instdis_loss
from tfssl.methods.base import SSLMethod

# Folded into the negatives' seed so that their stream differs from the augmentation's (seed, counter).
_NEGATIVES_SALT = 0x1D15


def _is_count(value):
    """True for an integer >= 1 (python or numpy, not bool)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


@keras.saving.register_keras_serializable(package="tfssl")
class InstDis(SSLMethod):
    """Instance discrimination: one view -> encoder f -> linear projection -> L2 norm -> bank loss.

    Batches are `(views float [B, S, S, 3], labels [B], index [B])` when augmented on the host
    (`augment=None`) or `(images uint8/float [B, H, W, C], labels, index)` augmented here; `index`
    is each example's position in the training split, in [0, num_examples).

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

    num_views = 1
    needs_index = True
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
        self.projector = projector
        self.num_examples = None if num_examples is None else int(num_examples)
        self.temperature = float(temperature)
        self.num_negatives = int(num_negatives)
        self.bank_momentum = float(bank_momentum)
        self.objective = loss  # not `self.loss`: keras.Model.compile owns that attribute
        self.bank = None
        self.normalizer = None
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

    # ---- pieces of train_step -----------------------------------------------------------------
    def view(self, data):
        """Returns `(view [B, S, S, 3] float32, labels, index)` from a host- or device-augmented batch."""
        if len(data) != 3:
            raise ValueError(f"InstDis batches are (view or images, labels, index) triples, got {len(data)} "
                             "elements: the pipeline must keep each example's index")
        images, labels, index = data
        if self.augment is None:
            return tf.cast(images, tf.float32), labels, index
        replica_id, num_replicas = replica_id_and_count()
        # One view per image: a fresh, reproducible seed per (step, replica), as in SSLMethod.views.
        counter = tf.cast(self.optimizer.iterations, tf.int32) * num_replicas + replica_id
        view = view_recipe(self.augment, 0)(to_float_rgb(images), tf.stack([self.seed, counter]))
        return view, labels, index

    def negative_indices(self, step):
        """The K negatives of optimizer step `step`: int64 `[K]`, uniform on [0, N) with replacement.

        A stateless function of (seed, step), so every replica draws the same indices and a resumed
        run draws what the uninterrupted run would have. A draw may be the index of an example in the
        batch, i.e. that example's own positive; as in the paper this is not excluded.
        """
        seed = tf.stack([tf.cast(self.seed, tf.int64), tf.cast(step, tf.int64)])
        # Philox named explicitly: "auto_select" picks a different generator under XLA (jit_compile),
        # which would change the negatives of a run with the compile flag.
        seed = tf.random.experimental.stateless_fold_in(seed, _NEGATIVES_SALT, alg="philox")
        return tf.random.stateless_uniform([self.num_negatives], seed, minval=0, maxval=self.num_examples,
                                           dtype=tf.int64, alg="philox")

    def frozen_normalizer(self, features, positives, negatives):
        """NCE's Z: estimated from this global batch if not set yet (then stored), else the stored value."""
        logits = instdis_logits(tf.stop_gradient(features), positives, negatives, self.temperature)
        estimate = estimate_nce_normalizer(logits, self.num_examples)
        stored = tf.convert_to_tensor(self.normalizer.value)
        normalizer = tf.where(stored > 0.0, stored, estimate)
        self.normalizer.assign(normalizer)
        return normalizer

    def train_step(self, data):
        if self.bank is None:
            raise ValueError("InstDis was built without num_examples, so it has no memory bank and cannot train: "
                             "pass num_examples = the size of the training split")
        view, labels, index = self.view(data)
        negatives = self.bank.lookup(self.negative_indices(self.optimizer.iterations))
        positives = self.bank.lookup(index)
        with tf.GradientTape() as tape:
            h = self.encoder(view, training=True)
            z = self.projector(h, training=True)
            f = tf.math.l2_normalize(tf.cast(z, tf.float32), axis=1)
            normalizer = self.frozen_normalizer(f, positives, negatives) if self.objective == "nce" else None
            loss = instdis_loss(f, positives, negatives, self.temperature, self.objective,
                                num_data=self.num_examples, normalizer=normalizer).loss
            total = loss + self.probe_loss(h, labels)
        self.apply_gradients(tape, total)
        # The bank stores this step's features (computed before the update), after the gradient step.
        self.bank.update(index, f)
        _, num_replicas = replica_id_and_count()
        # The loss was divided by the replica count for the gradient sum; report the plain mean.
        return self.update_metrics(loss=loss * num_replicas, collapse_std=self.collapse_std(z))

    def get_config(self):
        config = super().get_config()
        config.update(projector=keras.saving.serialize_keras_object(self.projector),
                      num_examples=self.num_examples, temperature=self.temperature,
                      num_negatives=self.num_negatives, bank_momentum=self.bank_momentum, loss=self.objective)
        return config
