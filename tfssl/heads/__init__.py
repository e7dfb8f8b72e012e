"""Representation-extraction parts: projection heads (predictors, prototypes, queues come later)."""
from tfssl.heads.projection import ProjectionHead
from tfssl.heads.queue import KeyQueue

__all__ = ["KeyQueue", "ProjectionHead"]
