"""What every self-supervised method shares: views, the online probe, metrics, gradients, EMA.

A method subclass owns only its own parts and its `train_step`, which should read like the paper's
pseudocode: make views -> encode -> extract representations -> loss -> `apply_gradients`.
"""
import keras
import tensorflow as tf

from tfssl.augment import deserialize_augment, serialize_augment, to_float_rgb, view_recipe
from tfssl.distribute import cross_replica_concat, replica_id_and_count


@keras.saving.register_keras_serializable(package="tfssl")
class SSLMethod(keras.Model):
    """Base class of all tfssl methods.

    Input batches are either `(view1, view2, labels)` (augmented on the host, in tf.data) or
    `(images, labels)` (augmented here, on the device, with `augment`). Labels are int, -1 when
    unlabelled; they feed only the online linear probe, which sees stop-gradient encoder features
    (Chen et al. 2020, appendix B.6), so it measures the representation without shaping it.

    Args:
      encoder: backbone `keras.Model`, images `[B, S, S, C]` in [0, 1] -> features `[B, D]`; this is
        what `tfssl-export` exports.
      augment: view recipe `augment(images, seed) -> views` (or a `tfssl.augment.ViewPair`, one recipe
        per view) for device-side augmentation, or None when views arrive already augmented.
      num_classes: classes of the online probe (None or 0: no probe).
      linear_probe: train the online stop-gradient linear probe when labels exist.
      seed: base seed of the device-side augmentation.

    A subclass that lists "collapse_std" in `metric_names` reports `collapse_std(z)` of its embeddings
    (see there); `keras_parts` names the constructor arguments that are Keras layers in `get_config`.
    """

    metric_names = ("loss",)
    keras_parts = ("encoder", "projector")
    # What the input pipeline must deliver: views per image (host augmentation) and the example index.
    num_views = 2
    needs_index = False

    def __init__(self, encoder, augment=None, num_classes=None, linear_probe=True, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.augment = augment
        self.num_classes = num_classes or None
        self.linear_probe = bool(linear_probe and self.num_classes)
        self.seed = int(seed)
        self.probe = keras.layers.Dense(self.num_classes, name="probe") if self.linear_probe else None
        names = list(self.metric_names) + (["probe_loss", "probe_acc"] if self.linear_probe else [])
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, images, training=False):
        """Embeds images with the encoder (what `predict` returns)."""
        return self.encoder(images, training=training)

    def build_heads(self):
        """Creates every variable (so checkpoints restore and optimizers build before step 1)."""
        dim = int(self.encoder.output.shape[-1])
        if self.probe is not None and not self.probe.built:
            self.probe.build((None, dim))
        # Marked built so that Keras saving restores every part's weights and the optimizer state.
        self.built = True

    # ---- views -------------------------------------------------------------------------------
    def views(self, data):
        """Returns `(view1, view2, labels)` from a host- or device-augmented batch."""
        if len(data) == 3:
            view1, view2, labels = data
            return view1, view2, labels
        images, labels = data
        if self.augment is None:
            raise ValueError("batches of (images, labels) need an `augment` recipe for device-side augmentation")
        images = to_float_rgb(images)
        replica_id, num_replicas = replica_id_and_count()
        # A fresh, reproducible seed per (step, replica, view): resuming at step s replays the same views.
        counter = (tf.cast(self.optimizer.iterations, tf.int32) * num_replicas + replica_id) * 2
        view1 = view_recipe(self.augment, 0)(images, tf.stack([self.seed, counter]))
        view2 = view_recipe(self.augment, 1)(images, tf.stack([self.seed, counter + 1]))
        return view1, view2, labels

    # ---- shared pieces of train_step -----------------------------------------------------------
    def probe_loss(self, features, labels):
        """Cross-entropy of the online linear probe on stop-gradient `features` `[n, D]`.

        Unlabelled examples (label < 0) are masked out. Scaled like the contrastive loss (divided by
        the number of replicas) so that summed replica gradients equal the global-batch gradient.
        """
        if self.probe is None:
            return tf.constant(0.0)
        labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        logits = tf.cast(self.probe(tf.stop_gradient(features)), tf.float32)
        labelled = tf.cast(labels >= 0, tf.float32)
        per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.maximum(labels, 0), logits=logits) * labelled
        _, num_replicas = replica_id_and_count()
        loss = tf.reduce_sum(per_example) / tf.cast(tf.size(labels) * num_replicas, tf.float32)
        hits = tf.cast(tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), labels), tf.float32)
        count = tf.reduce_sum(labelled)
        self.trackers["probe_acc"].update_state(
            tf.math.divide_no_nan(tf.reduce_sum(hits * labelled), count), sample_weight=count)
        self.trackers["probe_loss"].update_state(
            tf.math.divide_no_nan(tf.reduce_sum(per_example), count), sample_weight=count)
        return loss

    def gradients(self, tape, loss, variables):
        """Gradients of `loss` (loss-scaled under mixed float16; the optimizer unscales them)."""
        # d(scale * loss) = scale * d(loss): seeding backprop with the loss scale needs nothing recorded
        # on the (already closed) tape. The scale is 1 unless the optimizer is a LossScaleOptimizer.
        scale = tf.cast(self.optimizer.scale_loss(tf.constant(1.0)), loss.dtype)
        return tape.gradient(loss, variables, output_gradients=scale)

    def apply_gradients(self, tape, loss, variables=None):
        """Backpropagates `loss` and applies one optimizer step."""
        variables = self.trainable_variables if variables is None else variables
        self.optimizer.apply_gradients(zip(self.gradients(tape, loss, variables), variables))

    def build_optimizers(self):
        """Creates the optimizer slots of every trainable variable (before a checkpoint restore)."""
        self.optimizer.build(self.trainable_variables)

    def update_metrics(self, **values):
        """Updates the named trackers and returns every tracker's current result."""
        for name, value in values.items():
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    @staticmethod
    def collapse_std(embeddings):
        """Collapse monitor: mean over dimensions of the per-dimension std of L2-normalised embeddings.

        Chen & He 2021 (SimSiam), sec. 4.1 / fig. 2: for d-dimensional outputs spread over the sphere
        this is about 1/sqrt(d); it falls to 0 when every input maps to the same vector. Computed over
        the global batch (gathered from all replicas, no gradient), so it does not depend on how the
        batch is split.

        Args:
          embeddings: `[n, d]` local embeddings.

        Returns:
          float32 scalar.
        """
        z = tf.stop_gradient(tf.cast(embeddings, tf.float32))
        z = tf.math.l2_normalize(cross_replica_concat(z), axis=1)
        return tf.reduce_mean(tf.math.reduce_std(z, axis=0))

    @staticmethod
    def momentum_update(online_variables, target_variables, momentum):
        """EMA update `target <- momentum * target + (1 - momentum) * online` (MoCo, BYOL)."""
        for online, target in zip(online_variables, target_variables):
            target.assign(momentum * target + (1.0 - momentum) * tf.cast(online, target.dtype))

    @staticmethod
    def make_target(network, input_shape, name):
        """A target (momentum) copy of `network`: same architecture and initial weights, never trained.

        Its variables are marked non-trainable one by one, so they stay out of `trainable_variables`
        (no optimizer slots, no gradients), while the layers themselves stay trainable: Keras 3 runs a
        BatchNormalization whose layer is frozen in inference mode, but BYOL's target normalises with
        batch statistics like the online network (Grill et al. 2020, appendix B).

        Args:
          network: a built Keras layer or model (encoder, projection head).
          input_shape: its input shape, e.g. `(None, D)`.
          name: the copy's name.

        Returns:
          The copy (update it with `momentum_update` over `ema_pairs(network, copy)`).
        """
        config = keras.saving.serialize_keras_object(network)
        config["config"]["name"] = name
        target = keras.saving.deserialize_keras_object(config)
        if not target.built:
            target.build(input_shape)
        SSLMethod.ema_pairs(network, target)  # checks the two match weight for weight
        for online, copy in zip(network.weights, target.weights):
            copy.assign(online)
            copy.trainable = False
        return target

    @staticmethod
    def ema_pairs(network, target):
        """`(online, target)` pairs of the weights an EMA updates: those trainable in `network`.

        Batch-norm moving statistics are left out: the target's own forward passes update them.
        """
        if len(target.weights) != len(network.weights):
            raise ValueError(f"target {target.name} has {len(target.weights)} weights, {network.name} has "
                             f"{len(network.weights)}: it must be a copy of the same architecture")
        pairs = []
        for online, copy in zip(network.weights, target.weights):
            if tuple(online.shape) != tuple(copy.shape):
                raise ValueError(f"target weight {copy.path} {tuple(copy.shape)} does not match "
                                 f"{online.path} {tuple(online.shape)}")
            if online.trainable:
                pairs.append((online, copy))
        return pairs

    def get_config(self):
        return {
            "name": self.name,
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "augment": serialize_augment(self.augment),
            "num_classes": self.num_classes,
            "linear_probe": self.linear_probe,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["augment"] = deserialize_augment(config.get("augment"))
        for part in cls.keras_parts:
            if config.get(part) is not None:
                config[part] = keras.saving.deserialize_keras_object(config[part])
        model = cls(**config)
        model.build_heads()  # heads must exist before load_model assigns the saved weights
        return model
