"""SwAV: predict the cluster code of one crop from every other crop.

Caron, Misra, Mairal, Goyal, Bojanowski, Joulin, "Unsupervised Learning of Visual Features by Contrasting
Cluster Assignments", NeurIPS 2020 (reference: facebookresearch/swav `main_swav.py`). Every crop ->
encoder -> MLP head -> L2 norm -> z; scores = z . prototypes (rows L2-normalised before every step, no
gradient for the first iterations). Codes of the large crops come from Sinkhorn-Knopp on the global
batch (`tfssl.losses.sinkhorn_knopp`, optionally with a queue of past embeddings prepended); the loss
is the swapped prediction over all crops (`tfssl.losses.swav_loss`).

The queue (`tfssl.heads.EmbeddingQueue`) holds the *global* batch's embeddings of each large crop, the
same on every replica; each replica prepends its own share to its Sinkhorn input, so the cross-replica
sums see every queued row once and 2 replicas give the codes of 1 device (the reference keeps one
queue per GPU instead, which a different replica count changes).
"""
import dataclasses

import keras
import tensorflow as tf

from tfssl.heads import EmbeddingQueue, ProjectionHead, Prototypes
from tfssl.losses import sinkhorn_knopp, swav_loss
from tfssl.methods.base import Loss, ParamGroup, SSLMethod
from tfssl.methods.registry import MethodOptions, option


@keras.saving.register_keras_serializable(package="tfssl")
class SwAV(SSLMethod):
    """SwAV with multi-crop and an optional queue.

    Args:
      encoder: backbone, images -> `[B, D]`.
      projector: `ProjectionHead` (paper: 2048 hidden with BN, 128 out, no output BN).
      prototypes: `tfssl.heads.Prototypes` (paper: 3000).
      queue: `tfssl.heads.EmbeddingQueue` of the coded crops, or None.
      temperature: softmax temperature of the swapped prediction (0.1).
      epsilon, sinkhorn_iterations: Sinkhorn-Knopp regularisation (0.05) and iterations (3).
      coded_crops: the first this many crops get codes (2: the large ones).
      freeze_prototypes_steps: optimizer steps during which the prototypes get no update.
      **kwargs: `SSLMethod` arguments.
    """

    metric_names = ("loss", "collapse_std")
    keras_parts = ("encoder", "projector", "prototypes", "queue")
    config_fields = ("temperature", "epsilon", "sinkhorn_iterations", "coded_crops", "freeze_prototypes_steps")

    def __init__(self, encoder, projector, prototypes, queue=None, temperature=0.1, epsilon=0.05,
                 sinkhorn_iterations=3, coded_crops=2, freeze_prototypes_steps=0, **kwargs):
        super().__init__(encoder, **kwargs)
        self.projector, self.prototypes, self.queue = projector, prototypes, queue
        self.temperature, self.epsilon = float(temperature), float(epsilon)
        self.sinkhorn_iterations, self.coded_crops = int(sinkhorn_iterations), int(coded_crops)
        self.freeze_prototypes_steps = int(freeze_prototypes_steps)
        if not projector.built:
            projector.build((None, int(encoder.output.shape[-1])))
        if not prototypes.built:
            prototypes.build((None, projector.output_dim))

    def param_groups(self):
        frozen = {id(v) for v in self.prototypes.trainable_variables}
        rest = [v for v in self.trainable_variables if id(v) not in frozen]
        return [ParamGroup(rest), ParamGroup(list(self.prototypes.trainable_variables),
                                             frozen_steps=self.freeze_prototypes_steps)]

    def codes(self, scores, crop):
        """Sinkhorn codes of coded crop `crop` from its `[n, K]` scores (with this replica's queue share)."""
        plain = sinkhorn_knopp(scores, self.epsilon, self.sinkhorn_iterations)
        if self.queue is None:
            return plain
        mine = self.queue.local_slice(crop)
        queued = tf.cast(self.prototypes(mine), tf.float32)
        both = sinkhorn_knopp(tf.concat([queued, tf.cast(scores, tf.float32)], 0), self.epsilon,
                              self.sinkhorn_iterations)[tf.shape(mine)[0]:]
        return tf.where(self.queue.full(), both, plain)

    def compute_loss(self, views, batch):
        self.prototypes.normalize()  # outside the gradient, before the forward pass
        features = self.encode(self.encoder, views)
        # One head call over every crop, as the reference (its BN sees all crops together).
        z = tf.math.l2_normalize(self.projector(tf.concat(features, 0), training=True), axis=1)
        scores = tf.split(tf.cast(self.prototypes(z), tf.float32), len(views), axis=0)
        codes = [self.codes(scores[i], i) for i in range(self.coded_crops)]
        loss = swav_loss(scores, codes, self.temperature)
        large = tf.split(z, len(views), axis=0)[:self.coded_crops]
        return Loss(loss, features[0], {"collapse_std": self.collapse_std(large[0])}, {"embeddings": large})

    def after_step(self, state, step):
        if self.queue is not None:
            self.queue.push(state["embeddings"], step)


@dataclasses.dataclass
class SwAVOptions(MethodOptions):
    """SwAV's options; defaults: the paper's ImageNet multi-crop recipe (2 x 224 + 6 x 96)."""

    NAME = "swav"
    ARCHITECTURE = ("proj_hidden_dim", "proj_dim", "prototypes", "queue_length")

    proj_hidden_dim: int = option(2048, "Head hidden width (BN, ReLU); 0 = the encoder's output width.")
    proj_dim: int = option(128, "Embedding width.")
    prototypes: int = option(3000, "Number of prototypes K.")
    temperature: float = option(0.1, "Temperature of the swapped prediction.")
    epsilon: float = option(0.05, "Sinkhorn-Knopp entropy regularisation (the authors' remedy for collapse: 0.03).")
    sinkhorn_iterations: int = option(3, "Sinkhorn-Knopp iterations.")
    freeze_prototypes_epochs: float = option(1.0, "Epochs during which the prototypes are not updated.")
    queue_length: int = option(0, "Queued embeddings per large crop, a multiple of the global batch (0: none; "
                                  "batch 256: 3840).")
    queue_start_epoch: float = option(15.0, "Epoch from which embeddings are queued.")
    large_crops: int = option(2, "Large (coded) crops per image, of --image_size px.")
    large_min_area: float = option(0.14, "Smallest area fraction of a large crop.")
    small_crops: int = option(6, "Small crops per image (0: two-crop SwAV).")
    small_size: int = option(96, "Side of the small crops in px.")
    small_area: str = option("0.05,0.14", "Area fraction range min,max of a small crop.")

    def validate(self, train, num_replicas=1):
        self.check_positive("proj_dim", "prototypes", "temperature", "epsilon", "sinkhorn_iterations",
                            "large_crops", "small_size", "large_min_area")
        for name in ("proj_hidden_dim", "freeze_prototypes_epochs", "queue_length", "queue_start_epoch",
                     "small_crops"):
            self.check_range(name, 0, float("inf"))
        self.check_range("large_min_area", 0.0, 1.0)
        self.area_range("small_area")
        if self.large_crops + self.small_crops < 2:
            raise ValueError("SwAV needs >= 2 crops per image: set --swav_large_crops + --swav_small_crops >= 2")
        if self.queue_length % train.batch_size or self.queue_length % num_replicas:
            raise ValueError(f"{self.flag('queue_length')}={self.queue_length} must be a multiple of --batch_size="
                             f"{train.batch_size} (and of the {num_replicas} replicas)")

    def augment(self, train):
        from tfssl.augment import CropGroup, SimCLRAugment, ViewRecipe

        def crops(size, area):
            return SimCLRAugment(size, color_jitter_strength=train.color_jitter_strength, blur=train.resolved_blur(),
                                 crop_area=area)

        groups = [CropGroup(crops(train.image_size, (self.large_min_area, 1.0)), self.large_crops)]
        if self.small_crops:
            groups.append(CropGroup(crops(self.small_size, self.area_range("small_area")), self.small_crops))
        return ViewRecipe(groups)

    def build(self, train, encoder, context, **common):
        projector = ProjectionHead(num_layers=2, output_dim=self.proj_dim, hidden_dim=self.proj_hidden_dim or None,
                                   last_bn=False, sync_bn=train.sync_bn, name="projector")
        per_epoch = context.steps_per_epoch or 0
        queue = EmbeddingQueue(self.large_crops, self.queue_length, self.proj_dim,
                               start_step=int(round(self.queue_start_epoch * per_epoch)),
                               name="queue") if self.queue_length else None
        return SwAV(encoder, projector, Prototypes(self.prototypes, name="prototypes"), queue=queue,
                    temperature=self.temperature, epsilon=self.epsilon, sinkhorn_iterations=self.sinkhorn_iterations,
                    coded_crops=self.large_crops, freeze_prototypes_steps=int(round(self.freeze_prototypes_epochs
                                                                                    * per_epoch)), **common)

