"""Representation-extraction parts: projection and prediction heads, the key queue."""
from tfssl.heads.projection import ProjectionHead, predictor_head
from tfssl.heads.queue import KeyQueue

__all__ = ["KeyQueue", "ProjectionHead", "predictor_head"]
