"""DINO: a student matches the centred, sharpened output of its own EMA teacher, across crops.

Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin, "Emerging Properties in Self-Supervised
Vision Transformers", ICCV 2021 (reference: facebookresearch/dino `main_dino.py`). Student: encoder ->
`DINOHead` on every crop; teacher: an EMA copy (momentum 0.996 -> 1 on a cosine) on the global crops
only. Loss: cross-entropy of softmax((t - c) / tau_t) against log_softmax(s / tau_s) over the pairs of
different crops (`tfssl.losses.dino_loss`); the centre c follows the global-batch teacher mean with
momentum 0.9 after each step; the head's last layer is frozen during the first epoch. The teacher is
the representation evaluated and exported, as in the paper. Softmax, loss and centre run in float32.
"""
import dataclasses

import keras
import tensorflow as tf

from tfssl.heads import DINOHead
from tfssl.losses import dino_loss, teacher_temperature_schedule, update_center
from tfssl.methods.base import Loss, ParamGroup, SSLMethod
from tfssl.methods.registry import MethodOptions, option
from tfssl.optim.momentum import cosine_momentum


@keras.saving.register_keras_serializable(package="tfssl")
class DINO(SSLMethod):
    """DINO with multi-crop. `encoder` / `head` (a `DINOHead`) are the student; the first `global_crops` views
    go through the teacher, which is the EMA copy (momentum `tau_base` -> 1 over `total_steps`; None: constant)
    and the representation. Temperatures: student 0.1; teacher `warmup_teacher_temperature` -> `teacher_temperature`
    over `warmup_teacher_epochs` (needs `steps_per_epoch`). `center_momentum` 0.9; the head's last layer gets no
    update for `freeze_last_layer_steps`; `**kwargs`: `SSLMethod` arguments (clip_norm: 3.0 in the paper).
    """

    metric_names = ("loss", "collapse_std", "teacher_temperature")
    keras_parts = ("encoder", "head")
    config_fields = ("global_crops", "tau_base", "total_steps", "student_temperature", "teacher_temperature",
                     "warmup_teacher_temperature", "warmup_teacher_epochs", "center_momentum",
                     "freeze_last_layer_steps", "steps_per_epoch")

    def __init__(self, encoder, head, global_crops=2, tau_base=0.996, total_steps=None, student_temperature=0.1,
                 teacher_temperature=0.04, warmup_teacher_temperature=0.04, warmup_teacher_epochs=0.0,
                 center_momentum=0.9, freeze_last_layer_steps=0, steps_per_epoch=None, **kwargs):
        super().__init__(encoder, **kwargs)
        self.head, self.global_crops = head, int(global_crops)
        self.tau_base, self.total_steps = float(tau_base), total_steps
        self.student_temperature, self.teacher_temperature = float(student_temperature), float(teacher_temperature)
        self.warmup_teacher_temperature = float(warmup_teacher_temperature)
        self.warmup_teacher_epochs, self.center_momentum = float(warmup_teacher_epochs), float(center_momentum)
        self.freeze_last_layer_steps, self.steps_per_epoch = int(freeze_last_layer_steps), steps_per_epoch
        dim = int(encoder.output.shape[-1])
        if not head.built:
            head.build((None, dim))
        self.teacher_encoder = self.make_target(encoder, encoder.input_shape, "teacher_encoder")
        self.teacher_head = self.make_target(head, (None, dim), "teacher_head")
        self.center = self.add_weight(shape=(1, head.output_dim), initializer="zeros", trainable=False,
                                      name="center", aggregation="only_first_replica")

    def representation(self):
        return self.teacher_encoder

    def param_groups(self):
        frozen = {id(v) for v in self.head.last_layer_variables}
        rest = [v for v in self.trainable_variables if id(v) not in frozen]
        return [ParamGroup(rest), ParamGroup(list(self.head.last_layer_variables),
                                             frozen_steps=self.freeze_last_layer_steps)]

    def momentum_pairs(self):
        return self.ema_pairs(self.encoder, self.teacher_encoder) + self.ema_pairs(self.head, self.teacher_head)

    def target_momentum(self, step):
        if self.total_steps is None:
            return tf.constant(self.tau_base, tf.float32)
        return cosine_momentum(step, self.total_steps, base=self.tau_base, final=1.0)

    def teacher_temperature_at(self, step):
        epoch = tf.cast(step, tf.float32) / float(self.steps_per_epoch or 1)
        return teacher_temperature_schedule(epoch, self.warmup_teacher_temperature, self.teacher_temperature,
                                            self.warmup_teacher_epochs if self.steps_per_epoch else 0)

    def compute_loss(self, views, batch):
        step = self.optimizer.iterations
        teacher_features = self.encode(self.teacher_encoder, views[:self.global_crops])
        teacher = tf.stop_gradient(self.teacher_head(tf.concat(teacher_features, 0), training=True))
        features = self.encode(self.encoder, views)
        student = self.head(tf.concat(features, 0), training=True)
        teacher = tf.split(tf.cast(teacher, tf.float32), self.global_crops, axis=0)
        student = tf.split(tf.cast(student, tf.float32), len(views), axis=0)
        temperature = self.teacher_temperature_at(step)
        loss = dino_loss(student, teacher, self.center.value, self.student_temperature, temperature)
        # Collapse monitor on the centred teacher outputs: 0 when every image gets the same output.
        metrics = {"collapse_std": self.collapse_std(teacher[0] - self.center.value),
                   "teacher_temperature": temperature}
        return Loss(loss, features[0], metrics, {"teacher": teacher})

    def after_step(self, state, step):
        self.center.assign(update_center(self.center.value, state["teacher"], self.center_momentum))


@dataclasses.dataclass
class DINOOptions(MethodOptions):
    """DINO's options; defaults: the paper's ViT recipe (head 2048 -> 256 -> 65536, 2 x 224 + 8 x 96 crops)."""

    NAME = "dino"
    ARCHITECTURE = ("out_dim", "hidden_dim", "bottleneck_dim", "use_bn")

    out_dim: int = option(65536, "Output width K of the head (CIFAR-scale recipes: 4096).")
    hidden_dim: int = option(2048, "Hidden width of the head's MLP.")
    bottleneck_dim: int = option(256, "Bottleneck width before the weight-normalised last layer.")
    use_bn: bool = option(False, "Batch norm in the head's MLP (the ViT recipe has none).")
    tau_base: float = option(0.996, "Teacher momentum at step 0, rising to 1 on a cosine (batch 256: 0.9995).")
    student_temperature: float = option(0.1, "Student temperature.")
    teacher_temperature: float = option(0.04, "Teacher temperature after the warm-up.")
    warmup_teacher_temperature: float = option(0.04, "Teacher temperature at epoch 0.")
    warmup_teacher_epochs: float = option(0.0, "Epochs of the linear teacher-temperature warm-up (README: 30).")
    center_momentum: float = option(0.9, "EMA momentum of the centre.")
    freeze_last_layer_epochs: float = option(1.0, "Epochs during which the head's last layer is not updated.")
    clip_norm: float = option(3.0, "Clip each gradient to this norm (0: no clipping).")
    global_crops: int = option(2, "Global crops per image, of --image_size px (the teacher's).")
    global_min_area: float = option(0.4, "Smallest area fraction of a global crop (ResNet: 0.14).")
    local_crops: int = option(8, "Local crops per image (student only).")
    local_size: int = option(96, "Side of the local crops in px.")
    local_area: str = option("0.05,0.4", "Area fraction range min,max of a local crop.")

    def validate(self, train, num_replicas=1):
        self.check_positive("out_dim", "hidden_dim", "bottleneck_dim", "student_temperature", "teacher_temperature",
                            "warmup_teacher_temperature", "global_crops", "local_size", "global_min_area")
        for name in ("warmup_teacher_epochs", "freeze_last_layer_epochs", "clip_norm", "local_crops"):
            self.check_range(name, 0, float("inf"))
        for name in ("tau_base", "center_momentum", "global_min_area"):
            self.check_range(name, 0.0, 1.0)
        self.area_range("local_area")
        if self.global_crops + self.local_crops < 2:
            raise ValueError("DINO needs >= 2 crops per image: --dino_global_crops + --dino_local_crops >= 2")

    def augment(self, train):
        """Global crop 1: blur p 1.0; global crop 2: blur p 0.1, solarise p 0.2; local crops: blur p 0.5."""
        from tfssl.augment import BYOLAugment, CropGroup, ViewRecipe

        def crops(size, area, blur_prob, solarize_prob=0.0):
            return BYOLAugment(size, color_jitter_strength=train.color_jitter_strength, blur=train.resolved_blur(),
                               crop_area=area, blur_prob=blur_prob, solarize_prob=solarize_prob)

        large = (self.global_min_area, 1.0)
        groups = [CropGroup(crops(train.image_size, large, 1.0))]
        if self.global_crops > 1:
            groups.append(CropGroup(crops(train.image_size, large, 0.1, 0.2), self.global_crops - 1))
        if self.local_crops:
            groups.append(CropGroup(crops(self.local_size, self.area_range("local_area"), 0.5), self.local_crops))
        return ViewRecipe(groups)

    def build(self, train, encoder, context, **common):
        head = DINOHead(self.out_dim, self.hidden_dim, self.bottleneck_dim, use_bn=self.use_bn, name="head")
        per_epoch = context.steps_per_epoch
        return DINO(encoder, head, global_crops=self.global_crops, tau_base=self.tau_base,
                    total_steps=context.total_steps, student_temperature=self.student_temperature,
                    teacher_temperature=self.teacher_temperature,
                    warmup_teacher_temperature=self.warmup_teacher_temperature,
                    warmup_teacher_epochs=self.warmup_teacher_epochs, center_momentum=self.center_momentum,
                    freeze_last_layer_steps=int(round(self.freeze_last_layer_epochs * (per_epoch or 0))),
                    steps_per_epoch=per_epoch, clip_norm=self.clip_norm, **common)
