"""Representation-extraction parts: projection and prediction heads, queues, the memory bank, prototypes, CPC's
context network and per-step predictors."""
from tfssl.heads.cpc_context import CPCContextNetwork, CPCPredictor
from tfssl.heads.dino_head import DINOHead
from tfssl.heads.embedding_queue import EmbeddingQueue
from tfssl.heads.memory_bank import MemoryBank
from tfssl.heads.projection import ProjectionHead, predictor_head
from tfssl.heads.prototypes import Prototypes
from tfssl.heads.queue import KeyQueue

__all__ = ["CPCContextNetwork", "CPCPredictor", "DINOHead", "EmbeddingQueue", "KeyQueue", "MemoryBank", "ProjectionHead", "Prototypes", "predictor_head"]
