"""The pre-training configuration: one dataclass shared by Python callers and the absl flags.

Every field is a flag of `tfssl-train` with the same name (the flags are generated from this
dataclass, so the two can never drift apart). `validate()` turns bad values into one-line errors.
"""
import dataclasses
import json
import math

CHOICES = {
    "encoder": ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "regnetx_400mf", "regnetx_1_6gf",
                "regnetx_3_2gf", "regnety_400mf", "regnety_1_6gf", "regnety_3_2gf",
                "vit_tiny", "vit_small", "vit_base"),
    "cifar_stem": ("auto", "true", "false"),
    "optimizer": ("lars", "sgd", "adamw", "lamb"),
    "lr_scaling": ("linear", "sqrt", "none"),
    "blur": ("auto", "true", "false"),
    "augment_on": ("host", "device"),
    "strategy": ("default", "mirrored", "multi_worker", "tpu"),
    "mixed_precision": ("none", "mixed_float16", "mixed_bfloat16"),
    "weight_decay_mode": ("auto", "coupled", "decoupled"),
    "weight_decay_exclude": ("norm_and_bias", "none"),
}


# Seed of the train / validation carve for datasets without a validation split (see load_split).
SPLIT_SEED = 0


def _field(default, help_text, **extra):
    return dataclasses.field(default=default, metadata={"help": help_text, **extra})


@dataclasses.dataclass
class TrainConfig:
    """Pre-training settings (see each field's help; the flagfiles in `flags/` are worked examples)."""

    model_dir: str = _field("", "Run directory: checkpoints, TensorBoard logs, metrics.csv, flags.json.")
    method: str = _field("simclr", "Self-supervised method; its own options are the --<method>_* flags.")
    dataset: str = _field("fashion_mnist", "fashion_mnist, image_folder (root in --data_dir) or a TFDS name.")
    data_dir: str = _field("", "Dataset files (Fashion-MNIST .gz files, image-folder root, or TFDS data_dir).")
    train_split: str = _field("train", "Pre-training split, e.g. train or train[:5000].")
    val_split: str = _field("validation", "Validation split (carved from train when the dataset has none).")
    test_split: str = _field("test", "Test split: reported once by tfssl-eval, never used for selection.")
    val_fraction: float = _field(0.1, "Fraction of train carved out as validation when there is none.")
    image_size: int = _field(32, "Side of the square training crops, in pixels.")
    encoder: str = _field("resnet18", "Backbone architecture (ResNet v1.5, or a ViT as trained by MoCo v3).")
    width_multiplier: float = _field(1.0, "Channel width multiplier of a ResNet encoder (1.0 for a ViT).")
    patch_size: int = _field(16, "ViT patch side in pixels; must divide --image_size (ResNets ignore it).")
    freeze_patch_embed: bool = _field(False, "ViT: keep the random patch projection fixed (MoCo v3 sec. 4.2).")
    cifar_stem: str = _field("auto", "3x3 stride-1 stem without max-pool; auto = on for images <= 32 px.")
    sync_bn: bool = _field(False, "Synchronise batch-norm statistics across replicas.")
    zero_init_residual: bool = _field(False, "ResNet: start the last BN gamma of every residual branch at 0 "
                                             "(Goyal et al. 2017; the MoCo v3 and SimSiam references).")
    batch_size: int = _field(256, "Global batch size (images per step over all replicas).")
    epochs: int = _field(100, "Pre-training epochs (ignored when --train_steps > 0).")
    train_steps: int = _field(0, "Total optimizer steps; 0 = epochs x steps per epoch.")
    optimizer: str = _field("lars", "Optimizer.")
    learning_rate: float = _field(0.3, "Base learning rate, scaled by --lr_scaling.")
    lr_scaling: str = _field("linear", "linear: lr*B/256; sqrt: lr*sqrt(B) (SimCLR); none: lr as given.")
    warmup_epochs: float = _field(10.0, "Linear warm-up length in epochs, then cosine decay to 0.")
    weight_decay: float = _field(1e-6, "Weight-decay coefficient (see --weight_decay_mode, --weight_decay_exclude).")
    weight_decay_mode: str = _field("auto", "coupled: wd * w added to the gradient, through the momentum (LARS; "
                                            "PyTorch SGD, as the MoCo / SimSiam / InstDis references); decoupled: "
                                            "w -= lr * wd * w (Keras SGD, AdamW, Lamb); auto: coupled for lars, "
                                            "decoupled otherwise.")
    weight_decay_exclude: str = _field("norm_and_bias", "norm_and_bias: biases and normalisation parameters are "
                                                        "not decayed; none: every parameter is (PyTorch references).")
    momentum: float = _field(0.9, "Momentum of lars / sgd.")
    color_jitter_strength: float = _field(1.0, "Colour-jitter strength s (0.5 for CIFAR-10, 1.0 for ImageNet).")
    blur: str = _field("auto", "Gaussian blur p=0.5; auto = on only for images > 32 px.")
    augment_on: str = _field("host", "Where views are made: host (tf.data) or device (inside train_step).")
    strategy: str = _field("default", "tf.distribute strategy.")
    tpu_address: str = _field("", "TPU name or address for --strategy=tpu.")
    mixed_precision: str = _field("none", "Keras dtype policy for compute.")
    jit_compile: bool = _field(False, "Compile the train step with XLA (with either --augment_on).")
    seed: int = _field(0, "Seed of weights, shuffling and augmentation.")
    checkpoint_every: int = _field(500, "Save a checkpoint every N steps (and at each epoch end).")
    keep_checkpoints: int = _field(3, "How many recent checkpoints to keep.")
    linear_probe: bool = _field(True, "Train the online stop-gradient linear probe when labels exist.")
    log_every: int = _field(50, "Write TensorBoard scalars and a metrics.csv row every N steps.")
    knn_monitor_every: int = _field(0, "Every N steps (and at the end), weighted kNN accuracy (k 200, T 0.1) of the "
                                       "representation, --knn_monitor_examples validation images against as many "
                                       "training images: the knn_acc column of metrics.csv (0: off).")
    knn_monitor_examples: int = _field(1000, "Images of each side of the kNN monitor.")
    method_options: dict = dataclasses.field(default_factory=dict, metadata={
        "help": "The method's own options (its --<method>_<field> flags), by field; unset fields: defaults.",
        "flag": False})

    # Fields that define the network: a resumed run must not change them.
    # (The method's options add their own: `MethodOptions.ARCHITECTURE`.)
    ARCHITECTURE_FIELDS = ("method", "encoder", "width_multiplier", "cifar_stem", "image_size", "patch_size")

    def options(self):
        """The method's options dataclass (`tfssl.methods.registry`), from `method_options`."""
        from tfssl.methods.registry import options_class

        cls = options_class(self.method)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(self.method_options) - known)
        if unknown:
            raise ValueError(f"{self.method} has no option {unknown[0]!r}; its options are {', '.join(sorted(known))}")
        return cls(**self.method_options)

    def validate(self, num_replicas=1):
        """Raises ValueError with a one-line message for the first invalid setting."""
        from tfssl.data import check_dataset_name

        if not self.model_dir:
            raise ValueError("--model_dir is required: the directory for checkpoints and logs")
        options = self.options()  # one-line error for an unknown method or option
        check_dataset_name(self.dataset)
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"--{name}={getattr(self, name)!r} is not one of {', '.join(choices)}")
        for name in ("image_size", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every",
                     "knn_monitor_examples"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be > 0, got {getattr(self, name)}")
        if self.knn_monitor_every < 0:
            raise ValueError(f"--knn_monitor_every must be >= 0 (0 = off), got {self.knn_monitor_every}")
        if self.train_steps < 0 or (self.train_steps == 0 and self.epochs <= 0):
            raise ValueError("set --epochs > 0 or --train_steps > 0")
        for name in ("width_multiplier", "learning_rate"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"--{name} must be > 0, got {value}")
        if self.encoder.startswith("vit_"):
            from tfssl.encoders.vit import check_vit_args

            check_vit_args(self.encoder, self.image_size, self.patch_size, self.width_multiplier)
        if self.encoder.startswith("regnet") and self.width_multiplier != 1.0:
            raise ValueError(f"--width_multiplier={self.width_multiplier} does not apply to {self.encoder} (its widths "
                             "are the published setting); use 1.0, or a smaller RegNet")
        from tfssl.optim.factory import resolve_weight_decay

        resolve_weight_decay(self.optimizer, self.weight_decay_mode, self.weight_decay_exclude)
        if self.weight_decay < 0 or self.warmup_epochs < 0 or self.color_jitter_strength < 0:
            raise ValueError("--weight_decay, --warmup_epochs and --color_jitter_strength must be >= 0")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"--momentum must be in [0, 1), got {self.momentum}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"--val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.jit_compile and num_replicas > 1 and self.strategy != "tpu":
            raise ValueError(f"--jit_compile cannot run with the {num_replicas} replicas of --strategy={self.strategy}: "
                             "TensorFlow cannot put their cross-replica collectives inside an XLA-compiled replica "
                             "step; use --strategy=tpu (which compiles every step) or one replica, or drop "
                             "--jit_compile")
        if self.batch_size % num_replicas:
            raise ValueError(f"--batch_size={self.batch_size} is not divisible by the {num_replicas} replicas "
                             f"of --strategy={self.strategy}; use a multiple of {num_replicas}")

        options.validate(self, num_replicas)

    def load_split(self, split):
        """Loads one split of this config's dataset (`split` like "train", "validation[:10%]").

        The validation carve uses the fixed `SPLIT_SEED`, not `--seed`, so runs with different seeds
        (and evaluations of exported encoders) are all scored on the same validation examples.
        """
        from tfssl.data import load_split

        return load_split(self.dataset, split, data_dir=self.data_dir or None,
                          image_size=None if self.dataset == "fashion_mnist" else self.image_size,
                          val_fraction=self.val_fraction, seed=SPLIT_SEED)

    def resolved_cifar_stem(self):
        return self.image_size <= 32 if self.cifar_stem == "auto" else self.cifar_stem == "true"

    def resolved_blur(self):
        return None if self.blur == "auto" else self.blur == "true"

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        """The config saved by `to_json`; a flags.json written before per-method options (flat method fields)
        gets its method's options from them (`MethodOptions.from_legacy`)."""
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        config = cls(**{k: v for k, v in data.items() if k in known})
        if "method_options" not in data:
            from tfssl.methods.registry import options_class

            config.method_options = dataclasses.asdict(options_class(config.method).from_legacy(data))
        return config


def define_flags(flag_values=None, cls=TrainConfig, exclude=(), prefix="", module_name=None):
    """Defines one absl flag per dataclass field (enum flags for fields with fixed choices).

    Args:
      flag_values: an `absl.flags.FlagValues` (default: the global `flags.FLAGS`).
      cls: the dataclass whose fields become flags.
      exclude: field names not to define.
    """
    from absl import flags

    flag_values = flags.FLAGS if flag_values is None else flag_values
    for field in dataclasses.fields(cls):
        if field.name in exclude or not field.metadata.get("flag", True):
            continue
        args = dict(name=prefix + field.name, default=field.default, help=field.metadata.get("help", field.name),
                    flag_values=flag_values, **({"module_name": module_name} if module_name else {}))
        if field.name in CHOICES:
            flags.DEFINE_enum(enum_values=CHOICES[field.name], **args)
        elif "choices" in field.metadata:
            flags.DEFINE_enum(enum_values=field.metadata["choices"], **args)
        elif field.type in (bool, "bool"):
            flags.DEFINE_bool(**args)
        elif field.type in (int, "int"):
            flags.DEFINE_integer(**args)
        elif field.type in (float, "float"):
            flags.DEFINE_float(**args)
        else:
            flags.DEFINE_string(**args)


def define_method_flags(flag_values=None):
    """Defines every registered method's options as flags `--<method>_<field>`, grouped per method."""
    from absl import flags

    from tfssl.methods.registry import flag_name, method_names, options_class

    flag_values = flags.FLAGS if flag_values is None else flag_values
    moved = {}
    for name in method_names():
        define_flags(flag_values, cls=options_class(name), prefix=flag_name(name, ""),
                     module_name=f"tfssl.methods.{name}")
        for old, field in _old_flag_names(options_class(name)).items():
            moved.setdefault(old, []).append(flag_name(name, field))
    # The flat names of earlier releases (--temperature, --moco_queue_size, ...): set, they give a one-line
    # error naming the new flag instead of absl's "Unknown command line flag".
    for old in sorted(set(moved) & set(_REMOVED_FLAGS) - set(flag_values)):
        _MOVED_FLAGS[old] = moved[old]
        flags.DEFINE_string(old, None, "Moved: each method has its own --<method>_* flag.", flag_values=flag_values,
                            module_name="tfssl.moved_flags")


_MOVED_FLAGS = {}  # old flat flag -> the per-method flags it became
# The method flags of TrainConfig before per-method options (release 0.1).
_REMOVED_FLAGS = ("temperature", "proj_layers", "proj_dim", "keep_proj_layer", "proj_hidden_dim", "pred_hidden_dim",
                  "tau_base", "fix_predictor_lr", "moco_queue_size", "moco_momentum", "moco_bn_splits",
                  "instdis_negatives", "instdis_momentum", "instdis_loss", "instdis_head_bn", "bt_lambda",
                  "vicreg_sim_weight", "vicreg_var_weight", "vicreg_cov_weight")


def _old_flag_names(options_cls):
    """`{old flag name: field}` of an options class (fields that kept their name map to themselves)."""
    return {options_cls.LEGACY.get(f.name, f.name): f.name for f in dataclasses.fields(options_cls)}


def from_flags(flag_values, cls=TrainConfig):
    """Builds the dataclass from parsed absl flag values (a `TrainConfig` also takes its method's options)."""
    config = cls(**{f.name: flag_values[f.name].value for f in dataclasses.fields(cls) if f.name in flag_values})
    if cls is TrainConfig:
        from tfssl.methods.registry import flag_name, options_class

        ours = {old: flag_name(config.method, field)
                for old, field in _old_flag_names(options_class(config.method)).items()}
        for old in _MOVED_FLAGS:
            if old in flag_values and flag_values[old].value is not None:
                if old in ours:
                    raise ValueError(f"--{old} is now an option of each method: use --{ours[old]}")
                raise ValueError(f"--{old} is now an option of each method and --method={config.method} has none; "
                                 f"it became {', '.join('--' + n for n in _MOVED_FLAGS[old])}")
        config.method_options = {f.name: flag_values[flag_name(config.method, f.name)].value
                                 for f in dataclasses.fields(options_class(config.method))}
    return config


def load_flagfile(path, **overrides):
    """The `TrainConfig` of an absl flagfile (as `tfssl-train --flagfile=path` parses it), then `overrides`."""
    from absl import flags

    values = flags.FlagValues()
    define_flags(values)
    define_method_flags(values)
    values(["tfssl-train", f"--flagfile={path}"])
    return dataclasses.replace(from_flags(values, TrainConfig), **overrides)
