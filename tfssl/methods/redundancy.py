"""The shared shape of the redundancy-reduction methods: encoder f -> projector g, one loss on both views.

Barlow Twins (Zbontar et al. 2021, fig. 1) and VICReg (Bardes et al. 2022, fig. 1) use no predictor,
no target network and no negatives: collapse is prevented by a loss on the statistics of the global
batch (`tfssl.losses.redundancy`). Each subclass only names its loss and its loss components.
"""
import keras
import tensorflow as tf

from tfssl.distribute import replica_id_and_count
from tfssl.methods.base import SSLMethod


@keras.saving.register_keras_serializable(package="tfssl")
class RedundancyMethod(SSLMethod):
    """Base of Barlow Twins and VICReg: a projector ("expander") on the encoder, a symmetric batch loss.

    Subclasses list their loss components in `metric_names` (between "loss" and "collapse_std") and
    implement `pair_loss(z1, z2)` returning `(loss divided by the replica count, {component: global value})`.

    Args:
      encoder: backbone, images -> `[B, D]`.
      projector: `ProjectionHead`, `[B, D]` -> `[B, d]` (both papers: 3 layers of 8192).
      **kwargs: `SSLMethod` arguments (augment, num_classes, linear_probe, seed, name).
    """

    metric_names = ("loss", "collapse_std")
    keras_parts = ("encoder", "projector")

    def __init__(self, encoder, projector, **kwargs):
        super().__init__(encoder, **kwargs)
        self.projector = projector
        if not projector.built:  # optimizer slots and checkpoints need every variable before step 1
            projector.build((None, int(encoder.output.shape[-1])))

    def pair_loss(self, z1, z2):
        """`(loss / num_replicas, {component: value})` of `[n, d]` projections; defined by subclasses."""
        raise NotImplementedError

    def embed(self, view):
        """One view `[n, S, S, 3]` -> `(h [n, D], z [n, d])`; each view gets its own BN statistics."""
        h = self.encoder(view, training=True)
        return h, self.projector(h, training=True)

    def train_step(self, data):
        view1, view2, labels = self.views(data)
        with tf.GradientTape() as tape:
            h1, z1 = self.embed(view1)
            _, z2 = self.embed(view2)
            # Batch statistics in float32 even under a mixed policy: 8192^2 correlations overflow bf16 precision.
            z1, z2 = tf.cast(z1, tf.float32), tf.cast(z2, tf.float32)
            loss, components = self.pair_loss(z1, z2)
            total = loss + self.probe_loss(h1, labels)
        self.apply_gradients(tape, total)
        _, num_replicas = replica_id_and_count()
        # The loss comes divided by the replica count (summed gradients = global gradient); log the plain value.
        return self.update_metrics(loss=loss * tf.cast(num_replicas, loss.dtype),
                                   collapse_std=self.collapse_std(tf.concat([z1, z2], 0)), **components)

    def get_config(self):
        config = super().get_config()
        config.update(projector=keras.saving.serialize_keras_object(self.projector))
        return config
