"""`FineTuneConfig`: every setting of `tfssl-finetune` (flags are generated from it, like TrainConfig)."""
import dataclasses
import json
import math

from tfssl.config import SPLIT_SEED


def _field(default, help_text):
    return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass
class FineTuneConfig:
    """Fine-tuning / distillation settings (each field is a `tfssl-finetune` flag of the same name)."""

    encoder: str = _field("", "Encoder source: training run dir, checkpoint prefix, .keras file, tfssl-finetune "
                              "output dir, or exported SavedModel (version dir or model dir = newest version).")
    checkpoint: str = _field("", "With a run --encoder: a specific checkpoint (default: newest).")
    head_layers: int = _field(-1, "Projection-head layers kept on the encoder (SimCLRv2); -1 = the run's "
                                  "--simclr_keep_proj_layer (0 for plain encoders).")
    random_init: bool = _field(False, "Start from random weights: the --encoder architecture re-initialised, or "
                                      "--encoder_name/--width_multiplier when no --encoder is given.")
    encoder_name: str = _field("resnet18", "Architecture for --random_init without --encoder.")
    width_multiplier: float = _field(1.0, "Width for --random_init without --encoder (ResNets only).")
    patch_size: int = _field(16, "ViT patch side for --random_init --encoder_name=vit_* without --encoder.")
    image_size: int = _field(0, "Input side; 0 = the encoder's own (the teacher's, or 32, for --random_init "
                                "without --encoder).")
    dataset: str = _field("fashion_mnist", "fashion_mnist, image_folder (root in --data_dir) or a TFDS name.")
    data_dir: str = _field("", "Dataset files (see tfssl-train --data_dir).")
    train_split: str = _field("train", "Split the labelled subset (or distillation images) is drawn from.")
    val_split: str = _field("validation", "Split that selects the epoch (carved from train when there is none).")
    test_split: str = _field("test", "Split scored once, for the selected epoch only.")
    val_fraction: float = _field(0.1, "Fraction of train carved out as validation when there is none.")
    label_fraction: float = _field(0.1, "Fraction of --train_split labels used, class-balanced, in (0, 1].")
    subset_seed: int = _field(0, "Seed of the labelled subset (fixed across training seeds).")
    epochs: int = _field(30, "Epochs over the labelled subset (or over --train_split when distilling).")
    batch_size: int = _field(64, "Batch size.")
    optimizer: str = _field("sgd", "Optimizer (lars, sgd, adamw, lamb).")
    learning_rate: float = _field(0.05, "Peak learning rate (not scaled by batch size).")
    momentum: float = _field(0.9, "Momentum (sgd, lars) or beta_1 (adamw, lamb).")
    weight_decay: float = _field(0.0, "Weight decay (biases and BN parameters excluded).")
    warmup_epochs: float = _field(0.0, "Linear warm-up epochs before the cosine decay.")
    fine_tune_after_block: str = _field("none", "Freeze the encoder up to and including this block: none, stem, "
                                                "block1..block4 (or SimCLR's -1..4).")
    zero_init_head: bool = _field(False, "Zero-initialise the linear classifier (SimCLRv2 fine-tuning).")
    augment: bool = _field(True, "Random crop + horizontal flip on training images (else centre resize).")
    crop_min_area: float = _field(0.5, "Smallest crop area fraction of the training augmentation.")
    eval_batch_size: int = _field(256, "Batch size of validation / test inference.")
    distill_from: str = _field("", "Teacher to distil from (SimCLRv2): a tfssl-finetune classifier.keras, its "
                                   "output dir, or an export of such a classifier.")
    distill_temperature: float = _field(1.0, "Softmax temperature of teacher and student in distillation.")
    output_dir: str = _field("", "Where result.json and classifier.keras are written.")
    seed: int = _field(0, "Seed of initialisation, data order and augmentation.")

    def validate(self):
        """Raises ValueError with a one-line message for the first invalid setting."""
        from tfssl.data import check_dataset_name, parse_split
        from tfssl.finetune.loading import parse_fine_tune_after_block
        from tfssl.finetune.subsets import check_label_fraction
        from tfssl.optim import OPTIMIZERS

        if not self.output_dir:
            raise ValueError("--output_dir is required: where result.json and classifier.keras go")
        if not self.encoder and not self.random_init:
            raise ValueError("pass --encoder=<run dir, .keras file or export> or --random_init")
        check_dataset_name(self.dataset)
        for name in ("train_split", "val_split", "test_split"):
            parse_split(getattr(self, name))
        if parse_split(self.val_split).base == "test" or parse_split(self.train_split).base == "test":
            raise ValueError("--train_split and --val_split must not come from the test split: the test split "
                             "is only scored once, never used for training or selection")
        check_label_fraction(self.label_fraction)
        parse_fine_tune_after_block(self.fine_tune_after_block)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"--optimizer={self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be > 0, got {getattr(self, name)}")
        for name in ("learning_rate", "width_multiplier", "distill_temperature"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"--{name} must be > 0, got {value}")
        if self.patch_size <= 0:
            raise ValueError(f"--patch_size must be > 0, got {self.patch_size}")
        if self.image_size < 0:
            raise ValueError(f"--image_size must be >= 0 (0 = the encoder's own), got {self.image_size}")
        if self.head_layers < -1:
            raise ValueError(f"--head_layers must be >= 0, or -1 for the run's choice, got {self.head_layers}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"--val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0 < self.crop_min_area <= 1:
            raise ValueError(f"--crop_min_area must be in (0, 1], got {self.crop_min_area}")
        if self.weight_decay < 0 or self.warmup_epochs < 0:
            raise ValueError("--weight_decay and --warmup_epochs must be >= 0")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"--momentum must be in [0, 1), got {self.momentum}")
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"--warmup_epochs={self.warmup_epochs} exceeds --epochs={self.epochs}")

    def load_split(self, split, image_size=None):
        """One split of the dataset, with the same validation carve as tfssl-train / tfssl-eval.

        Args:
          split: split string, e.g. "train" or "validation[:500]".
          image_size: resize images to this side at load time (needed for folders of mixed sizes);
            Fashion-MNIST stays at its native 28 px and is resized by the augmentation instead.
        """
        from tfssl.data import load_split

        return load_split(self.dataset, split, data_dir=self.data_dir or None,
                          image_size=None if self.dataset == "fashion_mnist" else image_size,
                          val_fraction=self.val_fraction, seed=SPLIT_SEED)

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
