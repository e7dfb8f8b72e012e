"""Fine-tuning in Keras: trainable encoders from any tfssl artefact, label-fraction fine-tuning, distillation.

  features = tfssl.finetune.load_encoder("runs/a")            # or a .keras file, or an export
  result = tfssl.finetune.fine_tune(FineTuneConfig(encoder="runs/a", label_fraction=0.1, output_dir="ft"))
"""
from tfssl.finetune.config import FineTuneConfig
from tfssl.finetune.distill import Distiller, distill, load_teacher, soft_label_loss
from tfssl.finetune.loading import (
    FREEZE_CHOICES,
    clone_with_fresh_weights,
    features_with_head,
    freeze_up_to,
    load_encoder,
    parse_fine_tune_after_block,
    source_kind,
)
from tfssl.finetune.subsets import check_label_fraction, class_balanced_subset, split_labels, subset_dataset
from tfssl.finetune.train import build_classifier, fine_tune, light_augment, train_batches

__all__ = [
    "FREEZE_CHOICES", "Distiller", "FineTuneConfig", "build_classifier", "check_label_fraction",
    "class_balanced_subset", "clone_with_fresh_weights", "distill", "features_with_head", "fine_tune",
    "freeze_up_to", "light_augment", "load_encoder", "load_teacher", "parse_fine_tune_after_block",
    "soft_label_loss", "source_kind", "split_labels", "subset_dataset", "train_batches",
]
