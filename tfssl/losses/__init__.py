"""Loss functions: pure functions of tensors, each checked against an independent numpy version."""
from tfssl.losses.nt_xent import (
    NTXentOutput,
    check_temperature,
    contrastive_accuracy_and_entropy,
    nt_xent_loss,
)

__all__ = ["NTXentOutput", "check_temperature", "contrastive_accuracy_and_entropy", "nt_xent_loss"]
