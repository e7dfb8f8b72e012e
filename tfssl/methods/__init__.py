"""Self-supervised methods: each a `keras.Model` with its own `train_step`, built from shared parts."""
from tfssl.methods.base import SSLMethod
from tfssl.methods.simclr import SimCLR

METHODS = {"simclr": SimCLR}

__all__ = ["METHODS", "SSLMethod", "SimCLR", "build_method", "build_encoder_from_config"]


def build_encoder_from_config(config, channels=3):
    """The encoder named by a `TrainConfig` (architecture fields only; weights freshly initialised)."""
    from tfssl.encoders import build_encoder

    return build_encoder(config.encoder, image_size=config.image_size, channels=channels,
                         width_multiplier=config.width_multiplier, cifar_stem=config.resolved_cifar_stem(),
                         sync_bn=config.sync_bn)


def build_method(config, num_classes=None):
    """Builds the method of a `TrainConfig`: encoder, view recipe and heads, ready to compile.

    Args:
      config: `tfssl.config.TrainConfig`.
      num_classes: classes of the online probe (None: no probe).

    Returns:
      An `SSLMethod` whose variables all exist.
    """
    from tfssl.augment import SimCLRAugment
    from tfssl.heads import ProjectionHead

    augment = SimCLRAugment(config.image_size, color_jitter_strength=config.color_jitter_strength,
                            blur=config.resolved_blur())
    common = dict(encoder=build_encoder_from_config(config),
                  augment=augment if config.augment_on == "device" else None,
                  num_classes=num_classes if config.linear_probe else None,
                  linear_probe=config.linear_probe, seed=config.seed, name=config.method)
    if config.method == "simclr":
        projector = ProjectionHead(num_layers=config.proj_layers, output_dim=config.proj_dim,
                                   keep_layer=config.keep_proj_layer, sync_bn=config.sync_bn, name="projector")
        model = SimCLR(projector=projector, temperature=config.temperature, **common)
    else:  # pragma: no cover - METHODS and this factory grow together
        raise ValueError(f"unknown method {config.method!r}; choose one of {', '.join(sorted(METHODS))}")
    model.build_heads()
    return model
