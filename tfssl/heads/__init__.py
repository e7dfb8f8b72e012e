"""Representation-extraction parts: projection heads (predictors, prototypes, queues come later)."""
from tfssl.heads.projection import ProjectionHead

__all__ = ["ProjectionHead"]
