"""CMC: contrastive multiview coding of an image's channel groups, with one encoder and one memory bank per view.

Tian, Krishnan, Isola, "Contrastive Multiview Coding", ECCV 2020 (HobbitLong/CMC). One augmented crop per
image is split into two views (`tfssl.augment.ChannelViews`): Lab's L (1 channel) and ab (2 channels), or,
for grayscale data, L and its Sobel gradient (d/dx, d/dy), since ab is zero there. Each view has its own
encoder (v1: half-width ResNets) -> linear 128-d embedding -> L2 norm, and its own memory bank (momentum
0.5); features of L are contrasted with the ab bank and vice versa (`tfssl.losses.cmc_bank_loss`, K sampled
negatives, T 0.07, NCE with Z frozen after the first step, or the softmax). The representation is the two
encoders' features concatenated: `self.encoder`, a Keras model images -> split -> both encoders -> concat.

Choices not forced by the paper: the K negatives are shared by the global batch and drawn per step.
"""
import dataclasses

import keras
import tensorflow as tf

from tfssl.augment.channel_views import CHANNEL_VIEWS, ChannelViews
from tfssl.heads import MemoryBank, ProjectionHead
from tfssl.losses import INSTDIS_LOSSES, check_temperature, cmc_bank_loss, frozen_nce_normalizer
from tfssl.losses.cmc import cmc_logits
from tfssl.methods.base import Loss, SSLMethod
from tfssl.methods.registry import MethodOptions, option

GRAYSCALE_DATASETS = ("fashion_mnist", "mnist", "kmnist", "emnist")


def cmc_encoder(encoder_1, encoder_2, views="lab", name="encoder"):
    """The representation: RGB images `[B, S, S, 3]` in [0, 1] -> `ChannelViews` -> (encoder_1 on the 1-channel
    view, encoder_2 on the 2-channel view) -> concatenated features `[B, D1 + D2]` (float32)."""
    inputs = keras.Input(tuple(encoder_1.input.shape[1:3]) + (3,), name="images")
    view_1, view_2 = ChannelViews(views, name="channel_views")(inputs)
    features = keras.layers.Concatenate(dtype="float32", name="features")([encoder_1(view_1), encoder_2(view_2)])
    return keras.Model(inputs, features, name=name)


@keras.saving.register_keras_serializable(package="tfssl")
class CMC(SSLMethod):
    """One view -> channel split -> two encoders -> two linear heads -> L2 norm -> two-bank CMC loss.

    Args:
      encoder: `cmc_encoder(...)`, the representation (its two sub-encoders are trained).
      projector_1, projector_2: `ProjectionHead`s of the two views (the paper: one linear layer to 128).
      num_examples: N, rows of each memory bank; None builds no banks (a model only evaluated or exported).
      temperature, num_negatives, bank_momentum: T (0.07), K (16384), bank momentum (0.5).
      objective: "nce" (the paper's, Z frozen after step 1 per direction) or "softmax".
      **kwargs: `SSLMethod` arguments (augment, num_classes, linear_probe, seed, name).
    """

    needs_index = True
    default_views = 1
    metric_names = ("loss", "loss_1_to_2", "loss_2_to_1", "collapse_std")
    keras_parts = ("encoder", "projector_1", "projector_2")
    config_fields = ("num_examples", "temperature", "num_negatives", "bank_momentum", "objective")

    def __init__(self, encoder, projector_1, projector_2, num_examples=None, temperature=0.07,
                 num_negatives=16384, bank_momentum=0.5, objective="nce", **kwargs):
        super().__init__(encoder, **kwargs)
        check_temperature(temperature)
        if objective not in INSTDIS_LOSSES:
            raise ValueError(f"unknown CMC objective {objective!r}; choose one of {', '.join(INSTDIS_LOSSES)}")
        if isinstance(num_negatives, bool) or not isinstance(num_negatives, int) or num_negatives < 1:
            raise ValueError(f"num_negatives must be an integer >= 1, got {num_negatives!r}")
        if projector_1.output_dim != projector_2.output_dim:
            raise ValueError(f"both views need the same embedding width, got {projector_1.output_dim} and "
                             f"{projector_2.output_dim}")
        self.projector_1, self.projector_2 = projector_1, projector_2
        self.num_examples = None if num_examples is None else int(num_examples)
        self.temperature, self.num_negatives = float(temperature), int(num_negatives)
        self.bank_momentum, self.objective = float(bank_momentum), objective
        self.bank_1 = self.bank_2 = self.normalizer_1_to_2 = self.normalizer_2_to_1 = None
        if num_examples is not None:
            dim = projector_1.output_dim
            self.bank_1 = MemoryBank(self.num_examples, dim, self.bank_momentum, seed=self.seed, name="bank_1")
            self.bank_2 = MemoryBank(self.num_examples, dim, self.bank_momentum, seed=self.seed + 1, name="bank_2")
            self.normalizer_1_to_2, self.normalizer_2_to_1 = (
                self.add_weight(shape=(), initializer="zeros", dtype="float32", trainable=False, name=name,
                                aggregation="only_first_replica") for name in ("normalizer_1_to_2", "normalizer_2_to_1"))

    def parts(self):
        """`(channel split, encoder of view 1, encoder of view 2)` inside the representation."""
        split = next(layer for layer in self.encoder.layers if isinstance(layer, ChannelViews))
        nets = {int(layer.input.shape[-1]): layer for layer in self.encoder.layers if isinstance(layer, keras.Model)}
        return split, nets[1], nets[2]

    def build_heads(self):
        _, encoder_1, encoder_2 = self.parts()
        for projector, network in ((self.projector_1, encoder_1), (self.projector_2, encoder_2)):
            if not projector.built:
                projector.build((None, int(network.output.shape[-1])))
        super().build_heads()

    def embed(self, views):
        """Features `(h1, h2)` and L2-normalised float32 embeddings `(f1, f2)` of one batch of RGB views."""
        split, encoder_1, encoder_2 = self.parts()
        view_1, view_2 = split(views)
        h1, h2 = encoder_1(view_1, training=True), encoder_2(view_2, training=True)
        z1, z2 = self.projector_1(h1, training=True), self.projector_2(h2, training=True)
        return (h1, h2), tuple(tf.math.l2_normalize(tf.cast(z, tf.float32), axis=1) for z in (z1, z2))

    def compute_loss(self, views, batch):
        if self.bank_1 is None:
            raise ValueError("CMC was built without num_examples, so it has no memory banks and cannot train: "
                             "pass num_examples = the size of the training split")
        if "index" not in batch:
            raise ValueError("CMC batches need each example's 'index' in the training split (the bank row)")
        (view,), index = views, batch["index"]
        (h1, h2), (f1, f2) = self.embed(view)
        seed = tf.stack([tf.cast(self.seed, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)])
        negatives = self.bank_1.sample(self.num_negatives, seed)
        normalizers = None
        if self.objective == "nce":
            logits = cmc_logits(tf.stop_gradient(f1), tf.stop_gradient(f2), self.bank_1.lookup(index),
                                self.bank_2.lookup(index), self.bank_1.lookup(negatives),
                                self.bank_2.lookup(negatives), self.temperature)
            normalizers = tuple(frozen_nce_normalizer(variable, part, self.num_examples) for variable, part in
                                zip((self.normalizer_1_to_2, self.normalizer_2_to_1), logits))
        out = cmc_bank_loss(self.bank_1, self.bank_2, f1, f2, index, negatives, self.temperature, self.objective,
                            normalizers)
        features = tf.concat([tf.cast(h1, tf.float32), tf.cast(h2, tf.float32)], axis=1)
        metrics = {"loss_1_to_2": out.loss_l_to_ab, "loss_2_to_1": out.loss_ab_to_l,
                   "collapse_std": self.collapse_std(f1)}
        return Loss(out.loss, features, metrics, {"index": index, "features_1": f1, "features_2": f2})

    def after_step(self, state, step):
        # Each bank stores its own view's features of this step (computed before the gradient step).
        self.bank_1.update(state["index"], state["features_1"])
        self.bank_2.update(state["index"], state["features_2"])


@dataclasses.dataclass
class CMCOptions(MethodOptions):
    """CMC's options; defaults: the paper's ImageNet setting (Lab views, 128-d, 16384 NCE negatives, T 0.07)."""

    NAME = "cmc"
    ARCHITECTURE = ("views", "proj_dim", "head_bn")
    OWN_ENCODER = True  # two encoders, on 1- and 2-channel views (each --encoder at --width_multiplier)

    views: str = option("lab", "lab: L vs ab (the paper, colour data); luminance_gradient: L vs its Sobel "
                               "gradient (grayscale data, where ab is empty).", choices=CHANNEL_VIEWS)
    temperature: float = option(0.07, "Temperature T (paper: 0.07).")
    proj_dim: int = option(128, "Embedding width of each view's linear head (paper: 128).")
    negatives: int = option(16384, "Negatives sampled from the memory banks per step (paper: 16384).")
    momentum: float = option(0.5, "Memory-bank update momentum (paper: 0.5).")
    loss: str = option("nce", "nce (the paper's, Z frozen after step 1) or softmax.", choices=INSTDIS_LOSSES)
    head_bn: bool = option(False, "Batch norm on each linear head's output (the paper has none).")

    def reads_encoder_flags(self):
        return True  # both encoders are --encoder at --width_multiplier

    def validate(self, train, num_replicas=1):
        if self.views not in CHANNEL_VIEWS:
            raise ValueError(f"{self.flag('views')}={self.views!r} is not one of {', '.join(CHANNEL_VIEWS)}")
        self.check_positive("temperature", "proj_dim", "negatives")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"{self.flag('momentum')} must be in [0, 1) (paper: 0.5), got {self.momentum}")
        if self.views == "lab" and train.dataset in GRAYSCALE_DATASETS:
            raise ValueError(f"{self.flag('views')}=lab needs colour images, {train.dataset} is grayscale (ab is "
                             f"zero): use {self.flag('views')}=luminance_gradient")

    def augment(self, train):
        """One crop of 20-100% area + flip; no colour jitter or grayscale (colour is the view)."""
        from tfssl.augment import SimCLRAugment

        return SimCLRAugment(train.image_size, color_jitter_strength=0.0, blur=False, crop_area=(0.2, 1.0),
                             jitter_prob=0.0, grayscale_prob=0.0)

    def build(self, train, encoder, context, **common):
        from tfssl.methods import build_encoder_from_config

        # The run's --encoder at --width_multiplier, on the 1- and 2-channel views, under their own names.
        encoder_1, encoder_2 = (build_encoder_from_config(train, channels=channels, name=name)
                                for channels, name in ((1, "encoder_1"), (2, "encoder_2")))
        heads = [ProjectionHead(num_layers=1, output_dim=self.proj_dim, use_bn=self.head_bn, name=f"projector_{v}")
                 for v in (1, 2)]
        return CMC(cmc_encoder(encoder_1, encoder_2, self.views), *heads, num_examples=context.num_examples,
                   temperature=self.temperature, num_negatives=self.negatives, bank_momentum=self.momentum,
                   objective=self.loss, **common)
