"""Helpers of the export tests (constants, test images, batch-norm randomisation).

Batch-norm moving statistics are randomised so inference mode (moving statistics) and training mode
(batch statistics) give clearly different embeddings: an export that ran BN in the wrong mode fails.
"""
import numpy as np

IMAGE_SIZE = 16
MODEL_NAME = "tiny"


def randomise_batch_norm(model, seed):
    import keras

    rng = np.random.default_rng(seed)
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.moving_mean.assign(rng.normal(0.0, 0.2, layer.moving_mean.shape).astype(np.float32))
        layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape).astype(np.float32))
    return len(layers)


def sample_images(seed, shape):
    """uint8 images of `shape` with smooth structure plus noise (JPEG-friendly, not constant)."""
    rng = np.random.default_rng(seed)
    b, h, w, c = shape
    yy, xx = np.mgrid[0:h, 0:w]
    phase = xx[None, :, :, None] / 3.0 + yy[None, :, :, None] / 5.0 + np.arange(c) + np.arange(b)[:, None, None, None]
    base = 127.5 + 100 * np.sin(phase)
    return np.clip(base + rng.normal(0, 20, shape), 0, 255).round().astype(np.uint8)
