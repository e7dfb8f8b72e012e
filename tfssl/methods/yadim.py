"""YADIM: Yet Another DIM (Falcon & Cho, "A Framework for Contrastive Self-Supervised Learning and Designing a
New Approach", arXiv 2009.00104, 2020), as a composition of existing parts: the union of the CPC and AMDIM
augmentations applied to whole images (`AMDIMAugment` with a random resized crop and CPC's colour drop),
AMDIM's encoder, its last feature map only (r1, 1x1: no multiscale comparisons), a dot-product
similarity and the NCE of the paper (`tfssl.losses.yadim_nce`, the positive in the denominator).
"""
import dataclasses

import keras
import tensorflow as tf

from tfssl.losses.nt_xent import check_temperature, nt_xent_loss
from tfssl.losses.yadim import YADIM_SIMILARITIES, yadim_nce
from tfssl.methods.amdim import AMDIM, AMDIMEncoderOptions
from tfssl.methods.base import Loss
from tfssl.methods.registry import option

PIPELINES = ("union", "amdim", "cpc", "simclr")
BACKBONES = ("amdim", "config")
LOSSES = ("nce", "nt_xent")


@keras.saving.register_keras_serializable(package="tfssl")
class YADIM(AMDIM):
    """Two views -> AMDIM encoder -> last map r1 -> `yadim_nce(similarity, temperature, clip)`.

    `loss="nt_xent"` swaps the loss for SimCLR's NT-Xent on the same r1 (cosine / temperature, all 2N - 1
    other views as candidates; `similarity` and `clip` are then unused): the ablation's loss arm.
    """

    metric_names = ("loss", "positive_acc")
    config_fields = ("similarity", "temperature", "clip", "loss")

    def __init__(self, encoder, similarity="dot", temperature=1.0, clip=None, loss="nce", **kwargs):
        super().__init__(encoder, clip=clip, penalty_weight=0.0, **kwargs)
        if similarity not in YADIM_SIMILARITIES:
            raise ValueError(f"unknown similarity {similarity!r}; choose one of {', '.join(YADIM_SIMILARITIES)}")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
        check_temperature(temperature)
        self.similarity, self.temperature, self.loss = similarity, float(temperature), loss

    def compute_loss(self, views, batch):
        a, b = self.endpoints(views)
        features = tf.reshape(a["r1"], [-1, a["r1"].shape[-1]])
        if self.loss == "nt_xent":
            out = nt_xent_loss(features, tf.reshape(b["r1"], tf.shape(features)), self.temperature)
            hits = tf.equal(tf.argmax(out.logits, axis=1, output_type=tf.int32), tf.cast(out.labels, tf.int32))
        else:
            out = yadim_nce(a["r1"], b["r1"], self.similarity, self.temperature, self.clip)
            hits = tf.equal(tf.argmax(out.logits, axis=1), tf.argmax(out.positive_mask, axis=1))  # one location
        return Loss(out.loss, features, {"positive_acc": tf.reduce_mean(tf.cast(hits, tf.float32))})


@dataclasses.dataclass
class YADIMOptions(AMDIMEncoderOptions):
    """YADIM's options; defaults: the paper's (dot product, union pipeline); the rest swap one part at a time."""

    NAME = "yadim"
    ARCHITECTURE = AMDIMEncoderOptions.ARCHITECTURE + ("backbone",)

    similarity: str = option("dot", "Similarity phi (paper: dot).", choices=YADIM_SIMILARITIES)
    temperature: float = option(1.0, "phi is divided by it (1 = the paper's plain dot product).")
    clip: float = option(0.0, "Soft clipping c * tanh(phi / c) as AMDIM's (0 = none, the paper).")
    pipeline: str = option("union", "Views: union (all CPC and AMDIM transforms in sequence, the paper), amdim or cpc "
                           "(one of them alone, on whole images).", choices=PIPELINES)
    crop_area: str = option("0.3,1.0", "Random resized crop area min,max of the union pipeline (AMDIM's STL-10 crop), "
                            "or none.")
    color_drop_prob: float = option(0.5, "Probability of CPC's colour drop in the union pipeline (not in the paper).")
    backbone: str = option("amdim", "amdim (AMDIM's encoder, the paper) or config (--encoder / --width_multiplier, "
                           "its pooled features as the 1x1 last map; for the ablation).", choices=BACKBONES)
    loss: str = option("nce", "nce (the paper's) or nt_xent (SimCLR's, cosine / temperature; for the ablation).",
                       choices=LOSSES)

    def reads_encoder_flags(self):
        return self.backbone == "config"

    def validate(self, train, num_replicas=1):
        super().validate(train, num_replicas)
        for name, choices in (("similarity", YADIM_SIMILARITIES), ("pipeline", PIPELINES), ("backbone", BACKBONES),
                              ("loss", LOSSES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{self.flag(name)}={getattr(self, name)!r} is not one of {', '.join(choices)}")
        check_temperature(self.temperature)
        self.check_range("clip", 0.0, float("inf"))
        self.check_range("color_drop_prob", 0.0, 1.0)
        self.augment(train)

    def augment(self, train):
        from tfssl.augment.amdim_views import AMDIMAugment

        size, translate = train.image_size, 4 if train.image_size <= 32 else 0
        if self.pipeline == "amdim":
            return AMDIMAugment(size, crop_area=(0.3, 1.0) if size > 32 else None, translate=translate)
        if self.pipeline == "simclr":  # SimCLR's pipeline with the run's jitter strength and blur flags
            from tfssl.augment import SimCLRAugment

            return SimCLRAugment(size, color_jitter_strength=train.color_jitter_strength, blur=train.resolved_blur())
        if self.pipeline == "cpc":  # CPC's patch transforms on the image: a 7/8-side jitter crop, flip, colour drop
            return AMDIMAugment(size, crop_area=(0.875 ** 2,) * 2, crop_aspect=(1.0, 1.0), translate=0, jitter_prob=0.0,
                                grayscale_prob=0.0, color_drop_prob=1.0)
        return AMDIMAugment(size, crop_area=self.resolved_crop(train), translate=translate,
                            color_drop_prob=self.color_drop_prob)

    def build(self, train, encoder, context, **common):
        if self.backbone == "config":  # e.g. a ResNet: its pooled [B, D] features as the 1x1 last map
            from tfssl.methods import build_encoder_from_config

            pooled = build_encoder_from_config(train)
            r1 = keras.layers.Reshape((1, 1, int(pooled.output.shape[-1])), name="r1")(pooled.output)
            encoder = keras.Model(pooled.input, {"r1": r1}, name="encoder")
        else:  # only the layers up to r1: the r5 / r7 embeddings would get no gradient
            full = self.build_encoder(train)
            encoder = keras.Model(full.input, {"r1": full.get_layer("r1").output}, name=full.name)
        return YADIM(encoder, similarity=self.similarity, temperature=self.temperature,
                     clip=self.clip or None, loss=self.loss, **common)
