"""Representation-extraction parts: projection and prediction heads, queues, the memory bank, prototypes."""
from tfssl.heads.dino_head import DINOHead
from tfssl.heads.embedding_queue import EmbeddingQueue
from tfssl.heads.memory_bank import MemoryBank
from tfssl.heads.projection import ProjectionHead, predictor_head
from tfssl.heads.prototypes import Prototypes
from tfssl.heads.queue import KeyQueue

__all__ = ["DINOHead", "EmbeddingQueue", "KeyQueue", "MemoryBank", "ProjectionHead", "Prototypes", "predictor_head"]
