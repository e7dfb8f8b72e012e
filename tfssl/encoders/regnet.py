"""RegNetX / RegNetY encoders as Keras 3 functional models.

Radosavovic et al., "Designing Network Design Spaces" (CVPR 2020). A RegNet is four numbers and a
group width: block j of d gets the continuous width u_j = w0 + wa * j, which is snapped to the
geometric grid w0 * wm^k (k = round(log(u_j / w0) / log(wm))) and quantised to a multiple of 8;
consecutive blocks of equal width form a stage. Each stage width is then rounded to a multiple of
its group width min(g, w) (bottleneck ratio 1, so the 3x3 conv has w / min(g, w) groups).

Every block is an "X block": 1x1 conv -> BN -> ReLU -> 3x3 grouped conv (stride 2 in the first
block of a stage) -> BN -> ReLU -> 1x1 conv -> BN, plus a shortcut (identity, or strided 1x1 conv +
BN when the shape changes), then ReLU. A "Y block" adds Squeeze-and-Excitation (Hu et al. 2018)
after the 3x3 conv, squeezing to round(0.25 * block input width) channels (ReLU, then a sigmoid gate).
The stem is a 32-channel 3x3 stride-2 conv + BN + ReLU; the head here is only the global average
pool (no classifier), so features are [B, D] with D the last stage width.

The settings are those of the pycls model zoo / torchvision (`regnet_x_400mf` ...), whose ImageNet
parameter counts the tests reproduce exactly. SEER's RegNetY-256GF (Goyal et al. 2021,
"Self-supervised Pretraining of Visual Features in the Wild") is kept as a spec (`SPEC_ONLY`) for
its stage plan; it is far too large to build here and is not a registered encoder.

Conventions shared with `tfssl.encoders.resnet`: bias-free He-normal convs, batch norm with
momentum 0.9 / epsilon 1e-5 (optionally synchronised), symmetric padding on strided convs as in
torchvision, a float32 pooled output, and the same endpoint names:
  "stem"              stem output, stride 1 (`cifar_stem=True`) or 2
  "block1".."blockN"  stage outputs (N = 4 for every published setting), each 2x more strided
  "pooled"            [B, D] float32 pooled features

Grouped convolutions run through Keras' `Conv2D(groups=...)`, which on the TensorFlow backend
compiles each grouped conv with XLA (TensorFlow's CPU kernel has no grouped conv).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import keras
from keras import layers

from tfssl.encoders.resnet import _batch_norm


class RegNetSpec(NamedTuple):
    """The generating parameters of one RegNet (Radosavovic et al. 2020, sec. 3.3).

    Attributes:
        depth: number of blocks d.
        w0: initial width (> 0, a multiple of 8).
        wa: width slope (>= 0).
        wm: width multiplier between stages (> 1).
        group_width: group width g of the 3x3 convs.
        se_ratio: Squeeze-and-Excitation ratio (0 for RegNetX, 0.25 for RegNetY).
    """

    depth: int
    w0: int
    wa: float
    wm: float
    group_width: int
    se_ratio: float = 0.0


class StagePlan(NamedTuple):
    """Per-stage settings derived from a `RegNetSpec`: tuples of equal length (the stage count)."""

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    group_widths: tuple[int, ...]


# pycls model zoo / torchvision.models.regnet settings; the name's FLOPs are multiply-adds at 224 px.
REGNET_SPECS = {
    "regnetx_400mf": RegNetSpec(depth=22, w0=24, wa=24.48, wm=2.54, group_width=16),
    "regnetx_1_6gf": RegNetSpec(depth=18, w0=80, wa=34.01, wm=2.25, group_width=24),
    "regnetx_3_2gf": RegNetSpec(depth=25, w0=88, wa=26.31, wm=2.25, group_width=48),
    "regnety_400mf": RegNetSpec(depth=16, w0=48, wa=27.89, wm=2.09, group_width=8, se_ratio=0.25),
    "regnety_1_6gf": RegNetSpec(depth=27, w0=48, wa=20.71, wm=2.65, group_width=24, se_ratio=0.25),
    "regnety_3_2gf": RegNetSpec(depth=21, w0=80, wa=42.63, wm=2.66, group_width=24, se_ratio=0.25),
}
# Specs kept for their stage plans only (not buildable through `build_encoder`).
SPEC_ONLY = {
    # SEER (Goyal et al. 2021), 1.3B parameters.
    "regnety_256gf": RegNetSpec(depth=27, w0=640, wa=230.83, wm=2.53, group_width=373, se_ratio=0.25),
}
ENCODERS = tuple(REGNET_SPECS)

STEM_WIDTH = 32
WIDTH_QUANTUM = 8


def _check_spec(spec: RegNetSpec) -> None:
    """Raises a one-line ValueError for generating parameters outside the RegNet design space."""
    if isinstance(spec.depth, bool) or not isinstance(spec.depth, int) or spec.depth < 1:
        raise ValueError(f"RegNet depth must be a positive int, got {spec.depth!r}.")
    if not spec.w0 > 0 or spec.w0 % WIDTH_QUANTUM:
        raise ValueError(f"RegNet w0 must be a positive multiple of {WIDTH_QUANTUM}, got {spec.w0!r}.")
    if not spec.wa >= 0 or not spec.wm > 1:
        raise ValueError(f"RegNet needs wa >= 0 and wm > 1, got wa={spec.wa!r}, wm={spec.wm!r}.")
    if isinstance(spec.group_width, bool) or not isinstance(spec.group_width, int) or spec.group_width < 1:
        raise ValueError(f"RegNet group_width must be a positive int, got {spec.group_width!r}.")
    if not 0 <= spec.se_ratio < 1:
        raise ValueError(f"RegNet se_ratio must be in [0, 1) (0 for X, 0.25 for Y), got {spec.se_ratio!r}.")


def block_widths(spec: RegNetSpec) -> list[int]:
    """Per-block widths before the group-width adjustment (multiples of 8).

    Args:
        spec: the generating parameters.

    Returns:
        `spec.depth` ints: round(w0 * wm^k_j / 8) * 8 with k_j = round(log(u_j / w0) / log(wm)),
        u_j = w0 + wa * j.
    """
    _check_spec(spec)
    widths = []
    for j in range(spec.depth):
        continuous = spec.w0 + spec.wa * j
        step = round(math.log(continuous / spec.w0) / math.log(spec.wm))
        widths.append(int(round(spec.w0 * spec.wm**step / WIDTH_QUANTUM)) * WIDTH_QUANTUM)
    return widths


def stage_plan(spec: RegNetSpec) -> StagePlan:
    """Stage depths, widths and group widths of a RegNet.

    Runs of equal block width become stages. Each stage's group width is min(g, w) and its width
    the nearest multiple of that, halves rounded up, bumped by one group if that rounding lost more
    than 10% (torchvision's `_make_divisible`). pycls rounds halves to even instead, which changes
    one published setting: RegNetX-400MF's last stage is 392 -> 400 here and in torchvision
    (5,495,976 parameters with the classifier) but 384 in pycls (its model zoo's 5.2M).

    Args:
        spec: the generating parameters.

    Returns:
        A `StagePlan`.
    """
    depths, raw = [], []
    for width in block_widths(spec):
        if raw and raw[-1] == width:
            depths[-1] += 1
        else:
            raw.append(width)
            depths.append(1)
    group_widths = [min(spec.group_width, width) for width in raw]
    widths = []
    for width, g in zip(raw, group_widths):
        snapped = max(g, int((width + g / 2) // g) * g)
        widths.append(snapped + g if snapped < 0.9 * width else snapped)
    return StagePlan(tuple(depths), tuple(widths), tuple(group_widths))


def stem_stride(cifar_stem: bool) -> int:
    """Spatial down-sampling factor of the stem (1 for the small-image stem, 2 for ImageNet)."""
    return 1 if cifar_stem else 2


def check_regnet_args(name, image_size, width_multiplier=1.0, cifar_stem=None, spec=None):
    """Raises a one-line ValueError for an unknown RegNet name, a bad image size or stem choice, or a
    width multiplier other than 1 (a RegNet's widths come from its name, or from `spec`)."""
    if spec is None and name not in REGNET_SPECS:
        hint = " (kept as a spec only: too large to build)" if name in SPEC_ONLY else ""
        raise ValueError(f"Unknown RegNet {name!r}{hint}; choose one of {', '.join(ENCODERS)}.")
    if width_multiplier != 1.0:
        raise ValueError(f"--width_multiplier={width_multiplier} applies to ResNets only; use 1.0 with "
                         f"--encoder={name} (a RegNet's widths come from its name)")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}.")
    if cifar_stem is not None and not isinstance(cifar_stem, bool):
        raise ValueError(f"cifar_stem must be True, False or None (auto), got {cifar_stem!r}.")
    small = image_size <= 32 if cifar_stem is None else cifar_stem
    total_stride = stem_stride(small) * 2 ** len(stage_plan(spec or REGNET_SPECS[name]).depths)
    if image_size < total_stride:
        hint = "" if small else " or cifar_stem=True"
        raise ValueError(f"image_size={image_size} is too small for {name} with the "
                         f"{'small-image' if small else 'ImageNet'} stem (total stride {total_stride}); "
                         f"use image_size >= {total_stride}{hint}.")


def _conv(x, filters: int, kernel_size: int, strides: int, name: str, groups: int = 1):
    """Bias-free He-normal conv; strided convs pad symmetrically like torchvision."""
    padding = "same"
    if strides > 1 and kernel_size > 1:
        x = layers.ZeroPadding2D((kernel_size - 1) // 2, name=f"{name}_pad")(x)
        padding = "valid"
    return layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, groups=groups, use_bias=False,
                         kernel_initializer="he_normal", name=name)(x)


def squeeze_excite(x, squeeze: int, name: str):
    """Squeeze-and-Excitation (Hu et al. 2018): channel gates from the pooled map.

    Args:
        x: tensor [B, H, W, C].
        squeeze: channels of the bottleneck (RegNetY: round(0.25 * block input width)).
        name: prefix of the layer names.

    Returns:
        Tensor [B, H, W, C]: x times sigmoid(W2 relu(W1 mean_hw(x) + b1) + b2).
    """
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(x)
    s = layers.Conv2D(squeeze, 1, activation="relu", kernel_initializer="he_normal", name=f"{name}_se_reduce")(s)
    s = layers.Conv2D(x.shape[-1], 1, activation="sigmoid", name=f"{name}_se_expand")(s)
    return layers.Multiply(name=f"{name}_se_scale")([x, s])


def regnet_block(x, width: int, strides: int, group_width: int, se_ratio: float, name: str, out_name: str, bn,
                 zero_init: bool):
    """One X block (Y block when `se_ratio` > 0), bottleneck ratio 1.

    Args:
        x: input tensor [B, H, W, C_in].
        width: output (and inner) channels; a multiple of `group_width`.
        strides: 1 or 2, applied by the 3x3 conv and the projection shortcut.
        group_width: channels per group of the 3x3 conv.
        se_ratio: SE squeeze width as a fraction of C_in; 0 for no SE.
        name: prefix of the block's layer names.
        out_name: name of the final ReLU (the block's output layer).
        bn: callable (tensor, name, zero_gamma=False) -> tensor building a batch norm.
        zero_init: zero-initialise the last BN gamma of the residual branch (Goyal et al. 2017).

    Returns:
        Tensor [B, ceil(H/strides), ceil(W/strides), width].
    """
    in_width = x.shape[-1]
    if strides == 1 and in_width == width:
        shortcut = x
    else:
        shortcut = bn(_conv(x, width, 1, strides, f"{name}_proj_conv"), f"{name}_proj_bn")
    y = _conv(x, width, 1, 1, f"{name}_conv1")
    y = layers.ReLU(name=f"{name}_relu1")(bn(y, f"{name}_bn1"))
    y = _conv(y, width, 3, strides, f"{name}_conv2", groups=width // group_width)
    y = layers.ReLU(name=f"{name}_relu2")(bn(y, f"{name}_bn2"))
    if se_ratio:
        # The squeeze width is relative to the block's input, not its inner width (pycls, torchvision).
        y = squeeze_excite(y, int(round(se_ratio * in_width)), name)
    y = _conv(y, width, 1, 1, f"{name}_conv3")
    y = bn(y, f"{name}_bn3", zero_gamma=zero_init)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=out_name)(y)


def build_regnet(
    name: str,
    image_size: int,
    channels: int = 3,
    cifar_stem: bool | None = None,
    sync_bn: bool = False,
    zero_init_residual: bool = False,
    name_prefix: str = "encoder",
    width_multiplier: float = 1.0,
    spec: RegNetSpec | None = None,
) -> keras.Model:
    """Builds a RegNet encoder mapping images to pooled features.

    Args:
        name: one of `ENCODERS` ("regnetx_400mf", "regnetx_1_6gf", "regnetx_3_2gf", "regnety_400mf",
            "regnety_1_6gf", "regnety_3_2gf").
        image_size: side S of the square input images (the declared input; `any_size` gives a twin
            taking any size).
        channels: input channels C (1 for grayscale, 3 for RGB).
        cifar_stem: True for a stride-1 stem (28-32 px images, as the ResNets' CIFAR stem), False for
            the stride-2 ImageNet stem; None picks the stride-1 stem iff image_size <= 32.
        sync_bn: synchronise batch-norm statistics across replicas of a tf.distribute strategy.
        zero_init_residual: zero-initialise the last BN gamma of every residual branch.
        name_prefix: name of the returned model (layer names inside are fixed, see module doc).
        width_multiplier: must be 1.0 (accepted for a uniform `build_encoder` signature).
        spec: a `RegNetSpec` overriding the named setting (tests use tiny ones).

    Returns:
        A functional keras.Model: float32 images [B, S, S, C] -> float32 features [B, D], D the last
        stage width (e.g. 440 for regnety_400mf).

    Raises:
        ValueError: one line, on an unknown name, a width multiplier other than 1, bad sizes, or an
            image smaller than the total stride (16 with the small-image stem, 32 otherwise).
    """
    if spec is not None:
        spec = RegNetSpec(*spec)
        _check_spec(spec)
    check_regnet_args(name, image_size, width_multiplier, cifar_stem, spec)
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive int (1 for grayscale, 3 for RGB), got {channels!r}.")
    if not isinstance(name_prefix, str) or not name_prefix:
        raise ValueError(f"name_prefix must be a non-empty string, got {name_prefix!r}.")
    if cifar_stem is None:
        cifar_stem = image_size <= 32

    spec = spec or REGNET_SPECS[name]
    plan = stage_plan(spec)
    bn = functools.partial(_batch_norm, sync_bn=bool(sync_bn))
    inputs = keras.Input(shape=(image_size, image_size, channels), dtype="float32", name="images")
    x = _conv(inputs, STEM_WIDTH, 3, stem_stride(cifar_stem), "stem_conv")
    x = layers.ReLU(name="stem")(bn(x, "stem_bn"))
    for index, (depth, width, group_width) in enumerate(zip(*plan), start=1):
        for unit in range(1, depth + 1):
            block_name = f"block{index}_unit{unit}"
            out_name = f"block{index}" if unit == depth else f"{block_name}_out"
            x = regnet_block(x, width, 2 if unit == 1 else 1, group_width, spec.se_ratio, block_name, out_name, bn,
                             bool(zero_init_residual))
    # float32 pooling casts up, so heads and losses see float32 under mixed precision.
    outputs = layers.GlobalAveragePooling2D(name="pooled", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name_prefix)
