"""Backbone encoders: images [B, S, S, C] -> pooled features [B, D] (ResNet v1.5 family)."""

from tfssl.encoders.resnet import (
    ENCODERS,
    ENDPOINTS,
    RESNET_SPECS,
    build_encoder,
    encoder_output_dim,
    endpoint_model,
    scaled_channels,
)

__all__ = [
    "ENCODERS",
    "ENDPOINTS",
    "RESNET_SPECS",
    "build_encoder",
    "encoder_output_dim",
    "endpoint_model",
    "scaled_channels",
]
