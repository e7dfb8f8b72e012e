"""AMDIM: Augmented Multiscale Deep InfoMax.

Bachman, Hjelm, Buchwalter, "Learning Representations by Maximizing Mutual Information Across Views",
NeurIPS 2019, and the authors' Philip-Bachman/amdim-public. Two views of every image -> AMDIM's unpadded
wide ResNet (`tfssl.encoders.amdim`: endpoints r1 1x1, r5 5x5, r7 7x7, each n_rkhs wide) -> NCE from the
global features of one view to the local features of the other at the scale pairs 1 -> 5, 1 -> 7 and
5 -> 5, in both directions, scores dot / sqrt(n_rkhs) soft-clipped at 20 and penalised by
0.05 * mean(score^2) (`tfssl.losses.amdim_loss`). Evaluation, export and fine-tuning use r1 flattened.
"""
import dataclasses
import weakref

import keras
import tensorflow as tf

from tfssl.encoders.amdim import AMDIM_PRESETS, amdim_representation_model, build_amdim_encoder
from tfssl.losses.amdim import amdim_loss, check_clip
from tfssl.methods.base import Loss, SSLMethod
from tfssl.methods.registry import MethodOptions, option

# encoder -> its r1 representation model (layers shared, so nothing new is tracked or saved).
_REPRESENTATIONS = weakref.WeakKeyDictionary()


@keras.saving.register_keras_serializable(package="tfssl")
class AMDIM(SSLMethod):
    """Two views -> AMDIM encoder -> `amdim_loss` over its r1 / r5 / r7 endpoints.

    Args:
      encoder: a `build_amdim_encoder` model (dict outputs "r1", "r5", "r7").
      clip: soft clipping of the scores (20), or None.
      penalty_weight: weight of the score penalty (0.05).
      **kwargs: `SSLMethod` arguments (augment, num_classes, linear_probe, seed, name); `seed` and the
        optimizer step seed the 5 -> 5 source locations.
    """

    metric_names = ("loss", "nce_1t5", "nce_1t7", "nce_5t5", "penalty")
    keras_parts = ("encoder",)
    config_fields = ("clip", "penalty_weight")

    def __init__(self, encoder, clip=20.0, penalty_weight=0.05, **kwargs):
        super().__init__(encoder, **kwargs)
        check_clip(clip)
        self.clip = None if clip is None else float(clip)
        self.penalty_weight = float(penalty_weight)

    def representation(self):
        """r1 flattened, `[B, n_rkhs]` (the reference's evaluator), built once per encoder."""
        if self.encoder not in _REPRESENTATIONS:
            _REPRESENTATIONS[self.encoder] = amdim_representation_model(self.encoder)
        return _REPRESENTATIONS[self.encoder]

    def build_heads(self):
        if self.probe is not None and not self.probe.built:
            self.probe.build((None, int(self.encoder.output["r1"].shape[-1])))
        self.built = True

    def endpoints(self, views):
        """Both views through the encoder in one call (shared BN statistics): two endpoint dicts."""
        out = self.encoder(tf.concat(views, axis=0), training=True)
        parts = {name: tf.split(value, len(views), axis=0) for name, value in out.items()}
        return [{name: parts[name][v] for name in parts} for v in range(len(views))]

    def step_seed(self):
        """int64 `[2]`: (method seed, optimizer step) -- a new draw every step, the same after a resume."""
        step = self.optimizer.iterations if getattr(self, "optimizer", None) is not None else 0
        return tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])

    def compute_loss(self, views, batch):
        a, b = self.endpoints(views)
        out = amdim_loss(a["r1"], a["r5"], a["r7"], b["r1"], b["r5"], b["r7"], self.step_seed(),
                         clip=self.clip, penalty_weight=self.penalty_weight)
        features = tf.reshape(a["r1"], [-1, a["r1"].shape[-1]])
        return Loss(out.loss, features, {"nce_1t5": out.nce_1t5, "nce_1t7": out.nce_1t7, "nce_5t5": out.nce_5t5,
                                         "penalty": out.penalty})


@dataclasses.dataclass
class AMDIMEncoderOptions(MethodOptions):
    """The AMDIM encoder's options, shared by AMDIM and YADIM (not registered itself)."""

    ARCHITECTURE = ("preset", "ndf", "n_rkhs", "n_depth", "use_bn")
    OWN_ENCODER = True

    preset: str = option("reference_default", "Encoder widths (tfssl.encoders.amdim.AMDIM_PRESETS; paper CIFAR-10: "
                         "cifar10 = ndf 320, n_rkhs 1280, n_depth 10).", choices=sorted(AMDIM_PRESETS))
    ndf: int = option(0, "Base width; 0 = the preset's.")
    n_rkhs: int = option(0, "Endpoint width; 0 = the preset's.")
    n_depth: int = option(0, "Residual units per block; 0 = the preset's.")
    use_bn: bool = option(False, "Batch norm inside the residual units (reference default: off).")

    def widths(self):
        """`{ndf, n_rkhs, n_depth}`: the preset's, overridden by the options > 0."""
        return {k: getattr(self, k) or v for k, v in AMDIM_PRESETS[self.preset].items()}

    def validate(self, train, num_replicas=1):
        if self.preset not in AMDIM_PRESETS:
            raise ValueError(f"{self.flag('preset')}={self.preset!r} is not one of {', '.join(sorted(AMDIM_PRESETS))}")
        for name in ("ndf", "n_rkhs", "n_depth"):
            if getattr(self, name) < 0:
                raise ValueError(f"{self.flag(name)} must be >= 0 (0 = the preset's), got {getattr(self, name)}")
        if not (train.image_size <= 32 or train.image_size == 64):
            raise ValueError(f"--image_size={train.image_size}: the AMDIM encoder takes 32 or 64 px (or less than 32, "
                             f"zero-padded to 32)")

    def build_encoder(self, train):
        return build_amdim_encoder(train.image_size, 3, use_bn=self.use_bn, sync_bn=train.sync_bn, **self.widths())

    def resolved_crop(self, train):
        """None (no crop) or the (min, max) area of the subclass's `crop_area` option: "auto" / "none" / "min,max"."""
        if self.crop_area == "auto":
            return (0.3, 1.0) if train.image_size > 32 else None
        return None if self.crop_area == "none" else self.area_range("crop_area")


@dataclasses.dataclass
class AMDIMOptions(AMDIMEncoderOptions):
    """AMDIM's options; defaults: the reference code's (amdim-public train.py, costs.py, datasets.py)."""

    NAME = "amdim"

    clip: float = option(20.0, "Soft clipping c of the NCE scores, c * tanh(s / c) (paper: 20; 0 = none).")
    penalty_weight: float = option(0.05, "Weight of the score penalty mean(score^2) (0.05).")
    crop_area: str = option("auto", "Random resized crop area min,max, or none; auto = none at <= 32 px (AMDIM's "
                            "CIFAR views), 0.3,1.0 above (its STL-10 views).")
    translate: int = option(-1, "Reflect-translation in px (p 0.8); -1 = auto: 4 at <= 32 px, 0 above.")

    def validate(self, train, num_replicas=1):
        super().validate(train, num_replicas)
        if self.translate < -1:
            raise ValueError(f"{self.flag('translate')} must be -1 (auto) or a shift >= 0 in px, got {self.translate}")
        if self.clip < 0 or self.penalty_weight < 0:
            raise ValueError(f"{self.flag('clip')} and {self.flag('penalty_weight')} must be >= 0, got "
                             f"{self.clip} and {self.penalty_weight}")
        self.augment(train)  # one-line errors for a bad crop or translation

    def augment(self, train):
        from tfssl.augment.amdim_views import AMDIMAugment

        translate = (4 if train.image_size <= 32 else 0) if self.translate == -1 else self.translate
        return AMDIMAugment(train.image_size, crop_area=self.resolved_crop(train), translate=translate)

    def build(self, train, encoder, context, **common):
        return AMDIM(self.build_encoder(train), clip=self.clip or None, penalty_weight=self.penalty_weight, **common)
