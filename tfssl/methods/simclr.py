"""SimCLR v1 / v2.

Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020 (v1);
Chen et al., "Big Self-Supervised Models are Strong Semi-Supervised Learners", NeurIPS 2020 (v2: deeper
projection head with BN, fine-tuning from a middle head layer). v1 and v2 differ only in the head, so
both are this class: `proj_layers=2` is v1, `proj_layers=3` with `keep_proj_layer=1` is v2.
"""
import keras
import tensorflow as tf

from tfssl.distribute import replica_id_and_count
from tfssl.heads import ProjectionHead
from tfssl.losses import check_temperature, contrastive_accuracy_and_entropy, nt_xent_loss
from tfssl.methods.base import SSLMethod


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

    def __init__(self, encoder, projector=None, temperature=0.5, **kwargs):
        super().__init__(encoder, **kwargs)
        check_temperature(temperature)
        self.projector = projector if projector is not None else ProjectionHead(name="projector")
        self.temperature = float(temperature)

    def build_heads(self):
        if not self.projector.built:
            self.projector.build((None, int(self.encoder.output.shape[-1])))
        super().build_heads()

    def train_step(self, data):
        view1, view2, labels = self.views(data)
        n = tf.shape(view1)[0]
        with tf.GradientTape() as tape:
            # One encoder pass over both views, so batch norm sees all 2n images (as in the paper).
            h = self.encoder(tf.concat([view1, view2], axis=0), training=True)
            z1, z2 = tf.split(self.projector(h, training=True), 2, axis=0)
            contrastive = nt_xent_loss(z1, z2, self.temperature)
            loss = contrastive.loss + self.probe_loss(h[:n], labels)
        self.apply_gradients(tape, loss)
        acc, entropy = contrastive_accuracy_and_entropy(contrastive.logits, contrastive.labels)
        _, num_replicas = replica_id_and_count()
        # The loss was divided by the replica count for the gradient sum; report the plain mean.
        return self.update_metrics(loss=contrastive.loss * num_replicas, contrast_acc=acc,
                                   contrast_entropy=entropy)

    def fine_tune_model(self):
        """Encoder plus the head layers SimCLRv2 keeps for fine-tuning (`projector.keep_layer`)."""
        self.build_heads()
        h = self.encoder.output
        out = self.projector.kept_output(h, training=False) if self.projector.keep_layer else h
        return keras.Model(self.encoder.input, out, name="fine_tune_model")

    def get_config(self):
        config = super().get_config()
        config.update(projector=keras.saving.serialize_keras_object(self.projector),
                      temperature=self.temperature)
        return config
