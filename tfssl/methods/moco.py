"""MoCo v1 / v2: a query encoder learns to pick its momentum-encoded key out of a queue of old keys.

He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR
2020, Algorithm 1; Chen, Fan, Girshick, He, "Improved Baselines with Momentum Contrastive Learning"
(MoCo v2), 2020. v1 and v2 share this class: v2 only changes the parts (2-layer MLP head instead of a
linear one, SimCLR's augmentation with blur, temperature 0.2, cosine learning rate); v1's options are in
`tfssl/methods/moco_v1.py`.

Shuffled BN (MoCo sec. 3.3) is `tfssl.encoders.shuffled_bn`: keys are encoded in shuffled BN groups (the
replicas, times `bn_splits` per replica -- the Fashion-MNIST flagfiles set it, one device having one
group otherwise); `--sync_bn` would re-open the leak and is refused (MoCo v3 uses sync BN, as its paper).
"""
import dataclasses

import keras
import tensorflow as tf

from tfssl.encoders.shuffled_bn import grouped_apply, shuffled_apply
from tfssl.heads import KeyQueue, ProjectionHead
from tfssl.losses import infonce_loss
from tfssl.methods.base import Loss, SSLMethod
from tfssl.methods.registry import MethodOptions, option


@keras.saving.register_keras_serializable(package="tfssl")
class MoCo(SSLMethod):
    """MoCo v1 / v2 with a FIFO queue of keys and shuffled BN in the key encoder.

    Args:
      encoder: query backbone f_q, images -> `[B, D]`.
      projector: query head (`ProjectionHead`: v1 one linear layer to 128, v2 Dense 2048 -> ReLU -> Dense 128,
        both without BN, as in the papers).
      queue_size: K, keys in the queue (65536 in the papers).
      momentum: m of the key encoder update f_k <- m f_k + (1 - m) f_q (0.999 in the papers).
      temperature: tau of the InfoNCE logits (0.07 in v1, 0.2 in v2).
      bn_splits: BN groups per replica (see the module docstring); the local batch must divide by it.
      **kwargs: `SSLMethod` arguments (augment, num_classes, linear_probe, seed, name).
    """

    metric_names = ("loss", "collapse_std", "key_acc")
    config_fields = ("queue_size", "momentum", "temperature", "bn_splits")

    def __init__(self, encoder, projector, queue_size=65536, momentum=0.999, temperature=0.07, bn_splits=1,
                 **kwargs):
        super().__init__(encoder, **kwargs)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1] (MoCo: 0.999), got {momentum}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1 (MoCo: 65536), got {queue_size}")
        if bn_splits < 1:
            raise ValueError(f"bn_splits must be >= 1, got {bn_splits}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0 (MoCo v1: 0.07, v2: 0.2), got {temperature}")
        self.projector = projector
        self.queue_size, self.momentum = int(queue_size), float(momentum)
        self.temperature, self.bn_splits = float(temperature), int(bn_splits)
        if not projector.built:
            projector.build((None, int(encoder.output.shape[-1])))
        # f_k starts as a copy of f_q (Alg. 1: f_k.params = f_q.params) and is never given gradients.
        self.key_encoder = self.make_target(encoder, encoder.input_shape, "key_encoder")
        self.key_projector = self.make_target(projector, (None, int(encoder.output.shape[-1])), "key_projector")
        self.queue = KeyQueue(self.queue_size, projector.output_dim, seed=self.seed, name="queue")

    def key_pairs(self):
        """`(query, key)` variable pairs of the momentum update (trainable weights of encoder and head)."""
        return self.ema_pairs(self.encoder, self.key_encoder) + self.ema_pairs(self.projector, self.key_projector)

    def _key_network(self, images, training=True):
        return self.key_projector(self.key_encoder(images, training=training), training=training)

    def keys(self, view, step):
        """Keys `[n, d]` of this replica's `view`, encoded in BN groups shuffled over replicas and splits."""
        return shuffled_apply(self._key_network, view, self.bn_splits, tf.stack([self.seed, tf.cast(step, tf.int32)]))

    def compute_loss(self, views, batch):
        view1, view2 = views
        # Keys with f_k before this step's update (Alg. 1); no gradient reaches the key encoder.
        keys = self.keys(view2, self.optimizer.iterations)
        # Queries go through the encoder's BN in the same groups as the keys' replicas/splits, unshuffled
        # (the MoCo heads have no BN, so the head sees the whole batch at once).
        h = grouped_apply(self.encoder, view1, self.bn_splits)
        q = self.projector(h, training=True)
        output = infonce_loss(q, keys, self.queue.read(), self.temperature)
        hits = tf.cast(tf.equal(tf.argmax(output.logits, axis=1, output_type=tf.int32), output.labels), tf.float32)
        return Loss(output.loss, h, {"collapse_std": self.collapse_std(q), "key_acc": tf.reduce_mean(hits)},
                    {"keys": keys})

    def momentum_pairs(self):
        return self.key_pairs()

    def target_momentum(self, step):
        return tf.constant(self.momentum, tf.float32)

    def after_step(self, state, step):
        self.queue.enqueue(tf.math.l2_normalize(tf.cast(state["keys"], tf.float32), axis=1))


@dataclasses.dataclass
class MoCoV2Options(MethodOptions):
    """MoCo v2's options; defaults: the paper's ImageNet setting (2-layer head, temperature 0.2)."""

    NAME = "moco_v2"
    ARCHITECTURE = ("proj_layers", "proj_dim", "proj_hidden_dim", "queue_size")
    LEGACY = {"queue_size": "moco_queue_size", "momentum": "moco_momentum", "bn_splits": "moco_bn_splits"}

    queue_size: int = option(65536, "Keys in the queue of negatives (paper: 65536).")
    momentum: float = option(0.999, "Key-encoder EMA momentum m (paper: 0.999).")
    temperature: float = option(0.2, "InfoNCE temperature (v1: 0.07, v2: 0.2).")
    bn_splits: int = option(1, "Shuffled-BN groups per replica (> 1 on one device blocks the BN leak; see "
                               "tfssl/encoders/shuffled_bn.py).")
    proj_layers: int = option(2, "Head depth (v2: Dense -> ReLU -> Dense).")
    proj_dim: int = option(128, "Key / query dimension.")
    proj_hidden_dim: int = option(0, "Head hidden width; 0 = the encoder's output width (2048 for a ResNet-50).")

    def validate(self, train, num_replicas=1):
        if train.sync_bn:
            raise ValueError("--sync_bn re-opens the batch-norm leak that MoCo v1/v2's shuffled BN closes; "
                             "leave it off for this method")
        self.check_positive("queue_size", "bn_splits", "temperature", "proj_layers", "proj_dim")
        self.check_range("momentum", 0.0, 1.0, paper=0.999)
        self.check_range("proj_hidden_dim", 0, float("inf"))
        local = train.batch_size // max(num_replicas, 1)
        if local % self.bn_splits:
            raise ValueError(f"{self.flag('bn_splits')}={self.bn_splits} must divide the per-replica batch {local}")

    def augment(self, train):
        """SimCLR's recipe with blur and crops of 20-100% area (MoCo v2, sec. 3)."""
        from tfssl.augment import SimCLRAugment

        return SimCLRAugment(train.image_size, color_jitter_strength=train.color_jitter_strength,
                             blur=train.resolved_blur(), crop_area=(0.2, 1.0))

    def head(self):
        """MoCo v2's head: Dense(hidden) -> ReLU -> Dense(128), no BN (v1 overrides: one linear layer)."""
        return ProjectionHead(num_layers=self.proj_layers, output_dim=self.proj_dim,
                              hidden_dim=self.proj_hidden_dim or None, use_bn=False, name="projector")

    def build(self, train, encoder, context, **common):
        return MoCo(encoder, self.head(), queue_size=self.queue_size, momentum=self.momentum,
                    temperature=self.temperature, bn_splits=self.bn_splits, **common)
