"""ResNet v1.5 encoders as Keras 3 functional models.

The backbones follow He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016),
in the "v1.5" variant used by torchvision and by SimCLR (Chen et al., 2020): in a bottleneck
block the stride sits on the 3x3 conv instead of the first 1x1 conv, and in a basic block on
the first 3x3 conv. Down-sampling shortcuts are a strided 1x1 conv followed by batch norm.

Conventions shared by every model built here:
  * conv layers have no bias (the following batch norm has a shift), He-normal kernels;
  * batch norm uses momentum 0.9 and epsilon 1e-5 (PyTorch's 0.1 / 1e-5, which the
    self-supervised literature reports its numbers with), optionally synchronised across
    replicas (`synchronized=True`, TensorFlow backend) so the statistics come from the
    global batch;
  * strided convs pad symmetrically ((k-1)//2 on each side) rather than TensorFlow's
    asymmetric "same", so feature maps align with torchvision's ResNets;
  * the output is the global-average-pooled last stage, always float32 so that losses
    computed on it are safe under mixed precision.

Layer names usable as endpoints (see `endpoint_model`):
  "stem"            stem output, stride 1 (CIFAR stem) or 4 (ImageNet stem)
  "block1".."block4" stage outputs, strides stem*1, *2, *4, *8
  "pooled"          [B, D] float32 pooled features
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import keras
from keras import layers

# name -> (block type, number of residual blocks in each of the 4 stages); He et al. 2016 Table 1.
RESNET_SPECS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}
ENCODERS = tuple(RESNET_SPECS)
ENDPOINTS = ("stem", "block1", "block2", "block3", "block4", "pooled")

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
STEM_CHANNELS = 64
STAGE_CHANNELS = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)
EXPANSION = {"basic": 1, "bottleneck": 4}


def scaled_channels(channels: int, width_multiplier: float) -> int:
    """Channel count `int(channels * width_multiplier)`, at least 1.

    No larger floor (such as 8) is imposed, so that the pooled dimension stays exactly
    512*w / 2048*w whenever 64*w is an integer; widths below 0.125 are only meant for tests.

    Args:
        channels: channel count of the width-1 network.
        width_multiplier: positive scale factor.

    Returns:
        The scaled channel count (int >= 1).
    """
    # The tiny epsilon keeps e.g. 0.3 * 640 = 191.99999... from rounding down.
    return max(1, int(channels * width_multiplier + 1e-6))


def stem_stride(cifar_stem: bool) -> int:
    """Spatial down-sampling factor of the stem (1 for CIFAR, 4 for ImageNet)."""
    return 1 if cifar_stem else 4


def _check_args(name, image_size, channels, width_multiplier, cifar_stem, name_prefix):
    """Raises a one-line ValueError for any invalid `build_encoder` argument."""
    if name not in RESNET_SPECS:
        raise ValueError(f"Unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}.")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}.")
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive int (1 for grayscale, 3 for RGB), got {channels!r}.")
    if isinstance(width_multiplier, bool) or not isinstance(width_multiplier, (int, float)) \
            or not width_multiplier > 0:
        raise ValueError(f"width_multiplier must be a number > 0, got {width_multiplier!r}.")
    if cifar_stem is not None and not isinstance(cifar_stem, bool):
        raise ValueError(f"cifar_stem must be True, False or None (auto), got {cifar_stem!r}.")
    if not isinstance(name_prefix, str) or not name_prefix:
        raise ValueError(f"name_prefix must be a non-empty string, got {name_prefix!r}.")


def _check_image_size(image_size: int, cifar_stem: bool) -> None:
    """Requires at least one pixel per output cell of the last stage (total stride 8 or 32)."""
    total_stride = stem_stride(cifar_stem) * 8
    if image_size < total_stride:
        stem = "CIFAR" if cifar_stem else "ImageNet"
        hint = "" if cifar_stem else " or cifar_stem=True"
        raise ValueError(
            f"image_size={image_size} is too small for the {stem} stem (total stride {total_stride}); "
            f"use image_size >= {total_stride}{hint}."
        )


def _conv(x, filters: int, kernel_size: int, strides: int, name: str):
    """Bias-free He-normal conv; strided convs pad symmetrically like torchvision."""
    padding = "same"
    if strides > 1 and kernel_size > 1:
        x = layers.ZeroPadding2D((kernel_size - 1) // 2, name=f"{name}_pad")(x)
        padding = "valid"
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )(x)


def _batch_norm(x, name: str, sync_bn: bool, zero_gamma: bool = False):
    """Batch norm with the library-wide momentum/epsilon; `zero_gamma` for residual branches.

    Keras 3's layer, not `tfssl.encoders.batch_norm.BatchNormalization` (fused, 1.42x faster step): with the
    fused kernel SimSiam lost 2 points of linear accuracy at 3 epochs (README, regression check)."""
    return layers.BatchNormalization(
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        synchronized=sync_bn,
        gamma_initializer="zeros" if zero_gamma else "ones",
        name=name,
    )(x)


def _shortcut(x, out_channels: int, strides: int, name: str, bn):
    """Identity, or strided 1x1 conv + BN when the shape changes (He et al. option B)."""
    if strides == 1 and x.shape[-1] == out_channels:
        return x
    y = _conv(x, out_channels, 1, strides, f"{name}_proj_conv")
    return bn(y, f"{name}_proj_bn")


def basic_block(x, filters: int, strides: int, name: str, out_name: str, bn, zero_init: bool):
    """Two 3x3 convs; the stride is on the first one.

    Args:
        x: input tensor [B, H, W, C].
        filters: output channels.
        strides: 1 or 2.
        name: prefix of the block's layer names.
        out_name: name of the final ReLU (the block's output layer).
        bn: callable (tensor, name, zero_gamma=False) -> tensor building a batch norm.
        zero_init: initialise the last BN gamma of the residual branch to zero (Goyal et al. 2017),
            so the block starts as the identity.

    Returns:
        Tensor [B, ceil(H/strides), ceil(W/strides), filters].
    """
    shortcut = _shortcut(x, filters, strides, name, bn)
    y = _conv(x, filters, 3, strides, f"{name}_conv1")
    y = layers.ReLU(name=f"{name}_relu1")(bn(y, f"{name}_bn1"))
    y = _conv(y, filters, 3, 1, f"{name}_conv2")
    y = bn(y, f"{name}_bn2", zero_gamma=zero_init)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=out_name)(y)


def bottleneck_block(x, filters: int, strides: int, name: str, out_name: str, bn, zero_init: bool):
    """1x1 reduce -> 3x3 (strided, v1.5) -> 1x1 expand to 4*filters.

    Args:
        x: input tensor [B, H, W, C].
        filters: bottleneck channels; the output has 4*filters channels.
        strides: 1 or 2, applied by the 3x3 conv.
        name: prefix of the block's layer names.
        out_name: name of the final ReLU (the block's output layer).
        bn: callable (tensor, name, zero_gamma=False) -> tensor building a batch norm.
        zero_init: zero-initialise the gamma of the last BN of the residual branch.

    Returns:
        Tensor [B, ceil(H/strides), ceil(W/strides), 4*filters].
    """
    out_channels = EXPANSION["bottleneck"] * filters
    shortcut = _shortcut(x, out_channels, strides, name, bn)
    y = _conv(x, filters, 1, 1, f"{name}_conv1")
    y = layers.ReLU(name=f"{name}_relu1")(bn(y, f"{name}_bn1"))
    y = _conv(y, filters, 3, strides, f"{name}_conv2")
    y = layers.ReLU(name=f"{name}_relu2")(bn(y, f"{name}_bn2"))
    y = _conv(y, out_channels, 1, 1, f"{name}_conv3")
    y = bn(y, f"{name}_bn3", zero_gamma=zero_init)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=out_name)(y)


_BLOCKS = {"basic": basic_block, "bottleneck": bottleneck_block}


def _stem(x, filters: int, cifar_stem: bool, bn):
    """CIFAR stem (3x3/1 conv) or ImageNet stem (7x7/2 conv + 3x3/2 max-pool); output named "stem"."""
    if cifar_stem:
        # Small images cannot afford an early 4x down-sampling (SimCLR appendix B.9).
        y = _conv(x, filters, 3, 1, "stem_conv")
        return layers.ReLU(name="stem")(bn(y, "stem_bn"))
    y = _conv(x, filters, 7, 2, "stem_conv")
    y = layers.ReLU(name="stem_relu")(bn(y, "stem_bn"))
    # Zero padding is equivalent to torchvision's -inf padding here because inputs are post-ReLU (>= 0).
    y = layers.ZeroPadding2D(1, name="stem_pool_pad")(y)
    return layers.MaxPooling2D(3, strides=2, name="stem")(y)


def _stage(x, index: int, block_type: str, num_blocks: int, filters: int, bn, zero_init: bool):
    """One stage of `num_blocks` blocks; the first may down-sample; output layer named f"block{index}"."""
    block = _BLOCKS[block_type]
    for unit in range(1, num_blocks + 1):
        name = f"block{index}_unit{unit}"
        out_name = f"block{index}" if unit == num_blocks else f"{name}_out"
        strides = STAGE_STRIDES[index - 1] if unit == 1 else 1
        x = block(x, filters, strides, name, out_name, bn, zero_init)
    return x


def build_encoder(
    name: str,
    image_size: int,
    channels: int = 3,
    width_multiplier: float = 1.0,
    cifar_stem: bool | None = None,
    sync_bn: bool = False,
    zero_init_residual: bool = False,
    name_prefix: str = "encoder",
) -> keras.Model:
    """Builds a ResNet v1.5 encoder mapping images to pooled features.

    Args:
        name: one of `ENCODERS` ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152").
        image_size: side S of the square input images.
        channels: input channels C (1 for grayscale, 3 for RGB).
        width_multiplier: scales every channel count, `int(c * w)` (e.g. the 2x/4x ResNet-50 of
            SimCLR); 64*w should be an integer for the output size to be exactly 512*w / 2048*w.
        cifar_stem: True for a 3x3 stride-1 stem without max-pool, False for the 7x7 stride-2
            stem + 3x3 stride-2 max-pool; None picks the CIFAR stem iff image_size <= 32.
        sync_bn: synchronise batch-norm statistics across replicas of a tf.distribute strategy.
        zero_init_residual: zero-initialise the last BN gamma of every residual branch
            (Goyal et al. 2017, "Accurate, Large Minibatch SGD").
        name_prefix: name of the returned model (layer names inside are fixed, see module doc).

    Returns:
        A functional keras.Model: float32 images [B, S, S, C] in [0, 1] -> float32 features [B, D],
        D = 512*w (basic blocks) or 2048*w (bottleneck blocks).

    Raises:
        ValueError: on an unknown name, non-positive sizes or width, or an image too small
            for the stem's total stride (8 for the CIFAR stem, 32 for the ImageNet stem).
    """
    _check_args(name, image_size, channels, width_multiplier, cifar_stem, name_prefix)
    if cifar_stem is None:
        cifar_stem = image_size <= 32
    _check_image_size(image_size, cifar_stem)

    block_type, stage_sizes = RESNET_SPECS[name]
    bn = functools.partial(_batch_norm, sync_bn=bool(sync_bn))
    inputs = keras.Input(shape=(image_size, image_size, channels), dtype="float32", name="images")
    x = _stem(inputs, scaled_channels(STEM_CHANNELS, width_multiplier), cifar_stem, bn)
    for index, (num_blocks, base) in enumerate(zip(stage_sizes, STAGE_CHANNELS), start=1):
        filters = scaled_channels(base, width_multiplier)
        x = _stage(x, index, block_type, num_blocks, filters, bn, bool(zero_init_residual))
    # A float32 pooling layer casts its input up, so downstream heads and losses see float32
    # even under a mixed_float16 / mixed_bfloat16 policy.
    outputs = layers.GlobalAveragePooling2D(name="pooled", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name_prefix)


def endpoint_model(encoder: keras.Model, names: str | Sequence[str]) -> keras.Model:
    """Model sharing `encoder`'s weights that returns intermediate tensors by layer name.

    Args:
        encoder: a model from `build_encoder` (or one reloaded from a .keras file).
        names: one layer name or a sequence of them, typically from `ENDPOINTS`
            ("stem", "block1".."block4", "pooled"); any layer name of the encoder works.

    Returns:
        keras.Model mapping the encoder's input [B, S, S, C] to {name: tensor}; stage outputs
        are [B, S/s, S/s, channels] with s the endpoint's stride.

    Raises:
        ValueError: if `names` is empty or names a layer the encoder does not have.
    """
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if not names:
        raise ValueError("names must list at least one layer name, e.g. ['block4'].")
    known = {layer.name for layer in encoder.layers}
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(f"Unknown endpoint(s) {missing}; standard endpoints are {', '.join(ENDPOINTS)}.")
    outputs = {n: encoder.get_layer(n).output for n in names}
    return keras.Model(encoder.input, outputs, name=f"{encoder.name}_endpoints")


def encoder_output_dim(encoder: keras.Model) -> int:
    """Feature dimension D of an encoder whose output is [B, D].

    Args:
        encoder: a model from `build_encoder` (or any single-output model with rank-2 output).

    Returns:
        D as a Python int.

    Raises:
        ValueError: if the encoder's output is not a single [B, D] tensor with known D.
    """
    output = encoder.output
    shape = getattr(output, "shape", None)
    if shape is None or len(shape) != 2 or shape[-1] is None:
        raise ValueError(f"encoder must have one [B, D] output with known D, got {shape}.")
    return int(shape[-1])
