"""Loss functions: pure functions of tensors, each checked against an independent numpy version."""
from tfssl.losses.amdim import amdim_loss, amdim_nce
from tfssl.losses.byol import negative_cosine_loss, normalized_mse_loss
from tfssl.losses.cmc import cmc_bank_loss, cmc_loss
from tfssl.losses.cpc import cpc_infonce_loss
from tfssl.losses.dino import dino_loss, teacher_temperature_schedule, update_center
from tfssl.losses.infonce import (
    InfoNCEOutput,
    check_embedding_pair,
    infonce_loss,
    symmetric_contrastive_loss,
)
from tfssl.losses.invaspread import invaspread_loss
from tfssl.losses.instdis import (
    INSTDIS_LOSSES,
    InstDisOutput,
    check_instdis_loss,
    estimate_nce_normalizer,
    frozen_nce_normalizer,
    instdis_logits,
    instdis_loss,
)
from tfssl.losses.nt_xent import (
    NTXentOutput,
    check_temperature,
    contrastive_accuracy_and_entropy,
    nt_xent_loss,
)
from tfssl.losses.redundancy import barlow_twins_loss, vicreg_loss
from tfssl.losses.swav import sinkhorn_knopp, swav_loss
from tfssl.losses.yadim import yadim_nce

__all__ = [
    "amdim_loss",
    "amdim_nce",
    "cmc_bank_loss",
    "cmc_loss",
    "cpc_infonce_loss",
    "invaspread_loss",
    "yadim_nce",
    "INSTDIS_LOSSES",
    "InfoNCEOutput",
    "InstDisOutput",
    "NTXentOutput",
    "barlow_twins_loss",
    "check_embedding_pair",
    "check_instdis_loss",
    "check_temperature",
    "contrastive_accuracy_and_entropy",
    "dino_loss",
    "estimate_nce_normalizer",
    "frozen_nce_normalizer",
    "infonce_loss",
    "instdis_logits",
    "instdis_loss",
    "negative_cosine_loss",
    "normalized_mse_loss",
    "nt_xent_loss",
    "sinkhorn_knopp",
    "swav_loss",
    "symmetric_contrastive_loss",
    "teacher_temperature_schedule",
    "update_center",
    "vicreg_loss",
]
