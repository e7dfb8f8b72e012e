"""CPC v2: contrastive predictive coding over a grid of image patches.

Hénaff et al. 2019, "Data-Efficient Image Recognition with Contrastive Predictive Coding". An image -> a
G x G grid of overlapping patches, each augmented on its own (`PatchGridAugment`) -> a patch ResNet with
layer norm (`build_resnet_ln`, all B * G * G patches in one call) -> the feature grid z `[B, G, G, D]`;
a masked context network c = g(z) sees rows <= i only; for each step k a linear map W_k predicts the
(projected) target of row i + k from c[i]; InfoNCE against every location of the global batch
(`cpc_infonce_loss`). Evaluation, export and fine-tuning use the grid mean of the un-augmented patches.
"""
import dataclasses

import keras
import tensorflow as tf

from tfssl.augment.patches import flatten_patches, patch_geometry, unflatten_patches
from tfssl.encoders.patch_pooling import patch_pooled_encoder
from tfssl.heads.cpc_context import CPCContextNetwork, CPCPredictor
from tfssl.losses.cpc import STEP_REDUCTIONS, cpc_infonce_loss
from tfssl.methods.base import Loss, SSLMethod
from tfssl.methods.registry import MethodOptions, option


@keras.saving.register_keras_serializable(package="tfssl")
class CPCv2(SSLMethod):
    """Patch grid -> `encoder` (LN ResNet) -> z -> `context` -> `predictor` (W_k) -> InfoNCE vs projected z.

    Args:
      encoder: patch encoder, `[N, P, P, 3]` -> `[N, D]`.
      context: `CPCContextNetwork`.
      predictor: `CPCPredictor` over `steps`, its output width that of the targets.
      target_projector: Dense layer z -> targets (the paper's 1x1 conv to 64), or None: targets are z.
      image_size, grid, overlap: the patch grid of the representation (the training view's geometry).
      steps: rows ahead that are predicted.
      emb_scale: predictions are multiplied by it before the dot products (the paper: 0.1).
      step_reduction: "sum" (the paper's pseudo-code) or "mean" of the per-step losses.
      **kwargs: `SSLMethod` arguments (augment, num_classes, linear_probe, seed, name).
    """

    metric_names = ("loss", "positive_acc")
    keras_parts = ("encoder", "context", "predictor", "target_projector")
    config_fields = ("image_size", "grid", "overlap", "steps", "emb_scale", "step_reduction")
    default_views = 1

    def __init__(self, encoder, context, predictor, target_projector=None, image_size=32, grid=7, overlap=0.5,
                 steps=(2, 3, 4, 5), emb_scale=0.1, step_reduction="sum", **kwargs):
        super().__init__(encoder, **kwargs)
        self.context, self.predictor, self.target_projector = context, predictor, target_projector
        self.image_size, self.grid, self.overlap = int(image_size), int(grid), float(overlap)
        patch_geometry(self.image_size, self.grid, self.overlap)
        self.steps = tuple(int(k) for k in steps)
        if self.steps != tuple(predictor.steps):
            raise ValueError(f"steps {self.steps} differ from the predictor's {list(predictor.steps)}")
        if not emb_scale > 0:
            raise ValueError(f"emb_scale must be > 0, got {emb_scale}")
        self.emb_scale, self.step_reduction = float(emb_scale), step_reduction
        self._representation = None

    def build_heads(self):
        dim = int(self.encoder.output.shape[-1])
        grid_shape = (None, self.grid, self.grid, dim)
        if not self.context.built:
            self.context.build(grid_shape)
        if not self.predictor.built:
            self.predictor.build(grid_shape)
        if self.target_projector is not None and not self.target_projector.built:
            self.target_projector.build(grid_shape)
        super().build_heads()

    def representation(self):
        """Images `[B, S, S, 3]` -> un-augmented patch grid -> encoder -> mean over the grid `[B, D]` (built once)."""
        if self._representation is None:
            model = patch_pooled_encoder(self.encoder, self.image_size, self.grid, self.overlap,
                                         name=f"{self.name}_representation")
            # Kept off Keras / checkpoint tracking: it only re-uses the encoder's variables.
            object.__setattr__(self, "_representation", model)
        return self._representation

    def feature_grid(self, patches, training=True):
        """z `[B, G, G, D]` float32 from patches `[B, G, G, P, P, 3]`: one encoder call over every patch."""
        return tf.cast(unflatten_patches(self.encoder(flatten_patches(patches), training=training), self.grid),
                       tf.float32)

    def compute_loss(self, views, batch):
        (patches,) = views
        z = self.feature_grid(patches)
        targets = z if self.target_projector is None else self.target_projector(z)
        predictions = [p * self.emb_scale for p in self.predictor(self.context(z))]
        out = cpc_infonce_loss(targets, predictions, self.steps, 1.0, self.step_reduction)
        # The positive's top-1 accuracy among all B * G * G candidates, averaged over steps.
        return Loss(out.loss, tf.reduce_mean(z, axis=[1, 2]), {"positive_acc": out.accuracy})


def parse_steps(text, flag="--cpc_v2_steps"):
    """"2,3,4,5" -> (2, 3, 4, 5), or a one-line ValueError."""
    try:
        steps = tuple(int(k) for k in str(text).split(","))
    except ValueError:
        steps = ()
    if not steps or min(steps) < 1 or len(set(steps)) != len(steps):
        raise ValueError(f"{flag}={text!r} must be distinct integers >= 1 (rows ahead), e.g. 2,3,4,5")
    return steps


@dataclasses.dataclass
class CPCv2Options(MethodOptions):
    """CPC v2's options; defaults: the paper's ImageNet model (7 x 7 grid, 50% overlap, LN ResNet)."""

    NAME = "cpc_v2"
    OWN_ENCODER = True
    ARCHITECTURE = ("grid", "overlap", "steps", "context_blocks", "context_hidden", "context_row_kernel",
                    "target_dim", "patch_encoder", "patch_width", "patch_norm", "patch_cifar_stem")

    grid: int = option(7, "Patches per side G (paper: 7).")
    overlap: float = option(0.5, "Fraction of a patch shared with its neighbour (paper: 0.5).")
    steps: str = option("2,3,4,5", "Rows ahead to predict (paper: up to 5; the pseudo-code skips nearer rows; "
                                   "k = 1 shares pixels with the context's row at 50% overlap).")
    context_blocks: int = option(5, "Residual blocks of the masked context network (paper: 5).")
    context_hidden: int = option(256, "Channels inside a context block (paper: 256).")
    context_row_kernel: int = option(3, "Odd width of the row conv in a context block (pseudo-code: 3; 1: none).")
    target_dim: int = option(64, "Width of the target projection of z (paper: 64; 0: the targets are z).")
    emb_scale: float = option(0.1, "Scale of the predictions before the dot products (paper: 0.1).")
    step_reduction: str = option("sum", "sum (pseudo-code) or mean of the per-step losses.", choices=STEP_REDUCTIONS)
    jitter_crop: float = option(0.875, "Spatial jitter: crop side as a fraction of the patch (1: none).")
    flip: bool = option(True, "Random horizontal flip of each patch.")
    color_drop_prob: float = option(1.0, "Probability of dropping two of a patch's three colour channels.")
    grayscale_prob: float = option(0.0, "Probability of making a patch gray.")
    patch_encoder: str = option("resnet152", "LN ResNet of the patches (paper: ResNet-161, ~ResNet-152 x2 here).",
                                choices=("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"))
    patch_width: float = option(2.0, "Width multiplier of the patch ResNet.")
    patch_norm: str = option("layer", "layer (over H, W, C of a patch) or channel norm.", choices=("layer", "channel"))
    patch_cifar_stem: bool = option(False, "3x3 stride-1 stem without max-pool (for patches of ~8 px).")

    def validate(self, train, num_replicas=1):
        if isinstance(self.grid, bool) or not isinstance(self.grid, int) or self.grid < 2:
            raise ValueError(f"{self.flag('grid')} must be an integer >= 2 (rows to predict from), got {self.grid}")
        self.check_positive("context_blocks", "context_hidden", "emb_scale", "patch_width")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"{self.flag('overlap')} must be in [0, 1), got {self.overlap}")
        try:
            patch_geometry(train.image_size, self.grid, self.overlap)
        except ValueError as error:
            raise ValueError(f"--image_size={train.image_size} with {self.flag('grid')}={self.grid}: {error}") from None
        steps = parse_steps(self.steps, self.flag("steps"))
        if max(steps) >= self.grid:
            raise ValueError(f"{self.flag('steps')}={self.steps}: every step must be < {self.flag('grid')}={self.grid}")
        if self.context_row_kernel < 1 or self.context_row_kernel % 2 == 0:
            raise ValueError(f"{self.flag('context_row_kernel')} must be odd and >= 1, got {self.context_row_kernel}")
        if self.target_dim < 0:
            raise ValueError(f"{self.flag('target_dim')} must be >= 0 (0: no projection), got {self.target_dim}")
        if not 0 < self.jitter_crop <= 1:
            raise ValueError(f"{self.flag('jitter_crop')} must be in (0, 1], got {self.jitter_crop}")
        for name in ("color_drop_prob", "grayscale_prob"):
            self.check_range(name, 0.0, 1.0)

    def augment(self, train):
        """The patch grid at the run's image side, every patch augmented on its own."""
        from tfssl.augment import PatchGridAugment

        return PatchGridAugment(train.image_size, grid=self.grid, overlap=self.overlap, jitter_crop=self.jitter_crop,
                                flip=self.flip, color_drop_prob=self.color_drop_prob,
                                grayscale_prob=self.grayscale_prob)

    def build(self, train, encoder, context, **common):
        from tfssl.encoders import build_resnet_ln

        steps = parse_steps(self.steps, self.flag("steps"))
        patches = build_resnet_ln(self.patch_encoder, channels=3, width_multiplier=self.patch_width,
                                  cifar_stem=self.patch_cifar_stem, norm=self.patch_norm, name_prefix="encoder")
        network = CPCContextNetwork(self.context_blocks, self.context_hidden, self.context_row_kernel, name="context")
        # No bias: a shift shared by every candidate target cancels in the softmax (its gradient is 0).
        projector = keras.layers.Dense(self.target_dim, use_bias=False, name="target_projector") if self.target_dim \
            else None
        predictor = CPCPredictor(steps, output_dim=self.target_dim or None, use_bias=True, name="predictor")
        return CPCv2(patches, network, predictor, projector, image_size=train.image_size, grid=self.grid,
                     overlap=self.overlap, steps=steps, emb_scale=self.emb_scale, step_reduction=self.step_reduction,
                     **common)
