"""Fixtures of the method tests: a tiny conv encoder for tests whose cost is graph tracing.

A method's train_step does not depend on which backbone it wraps; tests that trace it (fit, 2 replicas)
use this 2-conv encoder, which traces ~10x faster than ResNet-18, so the suite stays fast on a shared
2-core CPU. Tests of the real path (build_method from flags, pretrain) keep ResNet-18.
"""
import keras
import pytest


def tiny_conv_encoder(image_size, sync_bn=False, name="encoder", channels=3):
    """Images `[B, S, S, C]` -> conv/BN/ReLU x 2 -> global average pool -> `[B, 16]` (BN, so sync BN matters)."""
    inputs = keras.Input((image_size, image_size, channels))
    x = inputs
    for i, filters in enumerate((8, 16)):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(synchronized=sync_bn, name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="pooled")(x)
    return keras.Model(inputs, outputs, name=name)


@pytest.fixture
def tiny_encoder():
    return tiny_conv_encoder


@pytest.fixture
def tiny_encoder_in_build_method(monkeypatch):
    """Makes `build_method` (and so `build_training`) use the tiny encoder, with the config's sync_bn."""
    import tfssl.methods

    monkeypatch.setattr(tfssl.methods, "build_encoder_from_config",
                        lambda config, channels=3, name="encoder": tiny_conv_encoder(
                            config.image_size, sync_bn=config.sync_bn, name=name, channels=channels))
