"""The method template: what every self-supervised method shares, and the hooks a method fills in.

A method writes `compute_loss(views, batch) -> Loss` -- the paper's pseudocode from views to loss --
and only the hooks it needs:

    param_groups()       variables with their own optimizer or frozen for the first steps
    momentum_pairs()     (online, target) variables of an EMA target; `target_momentum(step)` its schedule
    after_step(state)    queues, memory banks, centres: updated from `Loss.state` after the gradient step
    representation()     the sub-model evaluation, export and fine-tuning use (default: the encoder)

`SSLMethod.train_step` owns the rest, written once: views from the batch (host- or device-made), the
tape, the division by the replica count (losses are global-batch means, i.e. this replica's share of
one), the online probe, mixed-precision loss scaling, gradient clipping, the EMA and the metrics.
"""
import collections

import keras
import tensorflow as tf

from tfssl.augment import deserialize_augment, serialize_augment, to_float_rgb
from tfssl.augment.recipes import as_view_recipe
from tfssl.distribute import cross_replica_concat, replica_id_and_count
from tfssl.encoders.flexible import any_size


class Loss(collections.namedtuple("Loss", ["value", "features", "metrics", "state"], defaults=((), ()))):
    """What `compute_loss` returns.

    Fields:
      value: float32 scalar, the loss as a mean over this replica's examples (for losses of global-batch
        statistics, the global value): the base divides it by the replica count for the gradient sum.
      features: `[n, D]` encoder features of this replica's first view, for the online probe (None: none).
      metrics: `{name: scalar}` logged beside the loss (names listed in `metric_names`).
      state: `{name: tensor}` handed to `after_step` (keys to enqueue, features for a bank, ...).
    """


class ParamGroup(collections.namedtuple("ParamGroup", ["variables", "optimizer", "frozen_steps"],
                                        defaults=(None, 0))):
    """Trainable variables updated together.

    Fields:
      variables: the group's variables.
      optimizer: its own optimizer (e.g. SimSiam's fixed-rate predictor); None = the model's optimizer.
      frozen_steps: for optimizer steps < this, the group's gradients are dropped and its weights held
        (SwAV's prototypes, DINO's last layer); its optimizer slots see zero gradients meanwhile.
    """


@keras.saving.register_keras_serializable(package="tfssl")
class SSLMethod(keras.Model):
    """Base class of all tfssl methods.

    A batch is a dict: `{"views": (view, ...), "labels": [B]}` when augmented on the host (tf.data), or
    `{"images": [B, H, W, C], "seed": [B, 2], "labels": [B]}` when augmented here, on the device, with
    `augment` (every row of "seed" holds the batch's `tfssl.augment.recipes.batch_seed`); plus "index"
    `[B]` (position in the training split) for methods with `needs_index`. Labels are int, -1 when
    unlabelled; they feed only the online linear probe, which sees stop-gradient encoder features
    (Chen et al. 2020, appendix B.6), so it measures the representation without shaping it.

    Args:
      encoder: backbone `keras.Model`, images `[B, S, S, C]` in [0, 1] -> features `[B, D]`.
      augment: `tfssl.augment.ViewRecipe` for device-side augmentation (a `ViewPair` or a single per-image
        recipe is converted, the latter to `default_views` views of it), or None when views arrive made.
      num_classes: classes of the online probe (None or 0: no probe).
      linear_probe: train the online stop-gradient linear probe when labels exist.
      seed: seed of the method's own randomness (MoCo's shuffles, InstDis' negatives).
      clip_norm: clip each gradient to this L2 norm (0: no clipping; DINO: 3.0).

    A subclass that lists "collapse_std" in `metric_names` reports `collapse_std(z)` of its embeddings
    (see there); `keras_parts` names the constructor arguments that are Keras layers and `config_fields`
    the plain ones, each stored under its own name as an attribute: `get_config` serialises both.
    """

    metric_names = ("loss",)
    keras_parts = ("encoder", "projector")
    config_fields = ()
    # Views a bare per-image recipe makes, and whether batches must carry each example's index.
    default_views = 2
    needs_index = False

    def __init__(self, encoder, augment=None, num_classes=None, linear_probe=True, seed=0, clip_norm=0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.augment = as_view_recipe(augment, self.default_views)
        self.num_classes = num_classes or None
        self.linear_probe = bool(linear_probe and self.num_classes)
        self.seed = int(seed)
        if not clip_norm >= 0:
            raise ValueError(f"clip_norm must be >= 0 (0 = no clipping), got {clip_norm}")
        self.clip_norm = float(clip_norm)
        self.probe = keras.layers.Dense(self.num_classes, name="probe") if self.linear_probe else None
        names = list(self.metric_names) + (["probe_loss", "probe_acc"] if self.linear_probe else [])
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, images, training=False):
        """Embeds images with the representation (what `predict` returns)."""
        return self.representation()(images, training=training)

    def representation(self):
        """The network whose features evaluation, export and fine-tuning use."""
        return self.encoder

    def build_heads(self):
        """Creates every variable (so checkpoints restore and optimizers build before step 1)."""
        dim = int(self.encoder.output.shape[-1])
        if self.probe is not None and not self.probe.built:
            self.probe.build((None, dim))
        # Marked built so that Keras saving restores every part's weights and the optimizer state.
        self.built = True

    # ---- the hooks a method fills in ----------------------------------------------------------
    def compute_loss(self, views, batch):
        """`Loss` of one step from the batch's views (tuple of `[n, S_v, S_v, 3]`); see the module docstring."""
        raise NotImplementedError(f"{type(self).__name__} must implement compute_loss(views, batch)")

    def param_groups(self):
        """The `ParamGroup`s of the trainable variables (default: one group, the model's optimizer)."""
        return [ParamGroup(self.trainable_variables)]

    def momentum_pairs(self):
        """`(online, target)` variable pairs the base moves by EMA after each step (default: none)."""
        return []

    def target_momentum(self, step):
        """EMA decay at optimizer step `step` for `momentum_pairs` (float32 scalar)."""
        raise NotImplementedError(f"{type(self).__name__} has momentum pairs and must define target_momentum")

    def after_step(self, state, step):
        """Updates non-trainable state from `Loss.state` after the gradient step (default: nothing)."""
        del state, step  # a body AutoGraph can convert

    # ---- views ------------------------------------------------------------------------------
    def views(self, batch):
        """The tuple of views of a host- or device-augmented batch dict."""
        if "views" in batch:
            return tuple(batch["views"])
        if self.augment is None:
            raise ValueError("a batch of images needs an `augment` view recipe for device-side augmentation")
        return self.augment(to_float_rgb(batch["images"]), batch["seed"][0])

    @staticmethod
    def encode(network, views):
        """`network` (an encoder) over views of any sizes, one call per run of equal-size views (their BN
        statistics shared, as multi-crop implementations do); returns one output per view."""
        flexible = any_size(network)
        nominal = network.input.shape[1]
        outputs, sizes = [], [int(v.shape[1]) if v.shape[1] is not None else -1 for v in views]
        start = 0
        while start < len(views):
            stop = start + 1
            while stop < len(views) and sizes[stop] == sizes[start]:
                stop += 1
            run = network if sizes[start] == nominal else flexible
            out = run(tf.concat(views[start:stop], axis=0), training=True)
            outputs += tf.split(out, stop - start, axis=0) if stop - start > 1 else [out]
            start = stop
        return outputs

    # ---- the step -----------------------------------------------------------------------------
    def train_step(self, batch):
        views = self.views(batch)
        step = tf.identity(self.optimizer.iterations)  # the step this update is, before it increments
        _, num_replicas = replica_id_and_count()
        with tf.GradientTape() as tape:
            out = self.compute_loss(views, batch)
            probe = self.probe_loss(out.features, batch["labels"])
            # Losses are means over this replica's share of the global batch: divided once by the replica
            # count, the gradients the strategy sums are those of the global-batch mean.
            total = (tf.cast(out.value, tf.float32) + probe) / num_replicas
        self.apply_param_groups(tape, total, step)
        pairs = self.momentum_pairs()
        if pairs:
            self.momentum_update([o for o, _ in pairs], [t for _, t in pairs], self.target_momentum(step))
        self.after_step(dict(out.state), step)
        return self.update_metrics(loss=out.value, **dict(out.metrics))

    def apply_param_groups(self, tape, total, step):
        """One optimizer step for every `ParamGroup`: one gradient computation, clipping, frozen groups."""
        groups = self.param_groups()
        variables = [v for group in groups for v in group.variables]
        grads = self.gradients(tape, total, variables)
        scale = tf.cast(self.optimizer.scale_loss(tf.constant(1.0)), tf.float32)  # 1 unless mixed float16
        if self.clip_norm:
            # Clipped at the loss-scaled norm, i.e. clip_norm on the true gradient.
            grads = [None if g is None else tf.clip_by_norm(g, self.clip_norm * tf.cast(scale, g.dtype))
                     for g in grads]
        main, others, held, start = [], [], [], 0
        for group in groups:
            pairs = list(zip(grads[start:start + len(group.variables)], group.variables))
            start += len(group.variables)
            if group.frozen_steps:
                frozen = step < group.frozen_steps
                pairs = [(None if g is None else tf.where(frozen, tf.zeros_like(g), g), v) for g, v in pairs]
                held += [(v, tf.identity(v), frozen) for _, v in pairs]
            if group.optimizer is None:
                main += pairs
            else:
                # The main optimizer unscales its gradients under mixed float16; another one is a plain optimizer.
                others.append((group.optimizer, [(None if g is None else g / tf.cast(scale, g.dtype), v)
                                                 for g, v in pairs]))
        self.optimizer.apply_gradients(main)
        for optimizer, pairs in others:
            optimizer.apply_gradients(pairs)
        for variable, before, frozen in held:  # weight decay must not move a frozen group either
            variable.assign(tf.where(frozen, before, variable))

    # ---- shared pieces ------------------------------------------------------------------------
    def probe_loss(self, features, labels):
        """Cross-entropy of the online linear probe on stop-gradient `features` `[n, D]` (local mean).

        Unlabelled examples (label < 0) are masked out; the mean is over all n rows, so that divided by the
        replica count (as `train_step` does) the summed gradients are the global-batch gradient.
        """
        if self.probe is None or features is None:
            return tf.constant(0.0)
        labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        logits = tf.cast(self.probe(tf.stop_gradient(features)), tf.float32)
        labelled = tf.cast(labels >= 0, tf.float32)
        per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.maximum(labels, 0), logits=logits) * labelled
        loss = tf.reduce_sum(per_example) / tf.cast(tf.size(labels), tf.float32)
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

    def build_optimizers(self):
        """Creates the optimizer slots of every trainable variable (before a checkpoint restore)."""
        for group in self.param_groups():
            if group.optimizer is not None:
                group.optimizer.build(group.variables)
        self.optimizer.build([v for g in self.param_groups() if g.optimizer is None for v in g.variables])

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
            "clip_norm": self.clip_norm,
            **{part: keras.saving.serialize_keras_object(getattr(self, part)) for part in self.keras_parts[1:]},
            **{field: getattr(self, field) for field in self.config_fields},
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
