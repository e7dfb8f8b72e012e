"""ResNet patch encoders with layer normalisation instead of batch normalisation (CPC v2).

Hénaff et al. 2019, "Data-Efficient Image Recognition with Contrastive Predictive Coding" (CPC v2, its
"layer normalization" change to CPC): batch norm lets the patches of one image (all in one batch) exchange information through the batch
statistics, a shortcut around the receptive-field constraint of the CPC task, so CPC v2 replaces it with
layer normalisation (Ba et al. 2016). With a per-sample normalisation, a patch's features depend on that
patch alone, whatever else is in the batch.

The network is the repo's ResNet v1.5 (`tfssl.encoders.resnet`: same blocks, stage layout, widths, He-normal
bias-free convs, symmetric padding), built here with a normalisation factory in place of its batch norm.
Two per-sample normalisations are offered:

  "layer"    (default) Ba et al.'s layer norm of a conv layer: statistics over all of one sample's units
             (H, W and C), i.e. `GroupNormalization(groups=1)`, with a per-channel scale and shift. It works
             for any spatial size and keeps the relative contrast between positions of a patch.
  "channel"  `LayerNormalization` over C only, at every position separately (a "LayerNorm2d" as in ConvNeXt).

Differences from the paper: the paper's encoder is a ResNet-161 (a widened ResNet-101 v2) on 64 px patches;
here any depth of the repo's family (ResNet-18/34 basic blocks for small patches) with a width multiplier
and the small-image stem (3x3 stride-1 conv, no max-pool) by default, since CIFAR-scale patches are 8 px.
"""
from __future__ import annotations

import keras
from keras import layers

from tfssl.encoders import resnet as _resnet

NORMS = ("layer", "channel")
LN_EPSILON = 1e-5


def _norm_factory(norm: str, epsilon: float):
    """The `bn(tensor, name, zero_gamma=False)` callable the repo's ResNet blocks take, making per-sample norms.

    Layer names keep the ResNet's, with "bn" replaced by "ln" (e.g. "block1_unit1_ln1", "stem_ln").
    """

    def make(x, name, zero_gamma=False):
        name = name.replace("_bn", "_ln")
        gamma = "zeros" if zero_gamma else "ones"
        if norm == "layer":
            layer = layers.GroupNormalization(groups=1, axis=-1, epsilon=epsilon, gamma_initializer=gamma, name=name)
        else:
            layer = layers.LayerNormalization(axis=-1, epsilon=epsilon, gamma_initializer=gamma, name=name)
        return layer(x)

    return make


def build_resnet_ln(
    name: str = "resnet18",
    channels: int = 3,
    width_multiplier: float = 1.0,
    cifar_stem: bool = True,
    norm: str = "layer",
    zero_init_residual: bool = False,
    epsilon: float = LN_EPSILON,
    name_prefix: str = "patch_encoder",
) -> keras.Model:
    """A ResNet with per-sample normalisation mapping patches of any size to mean-pooled vectors.

    Args:
        name: a ResNet of the repo's family, one of `tfssl.encoders.resnet.ENCODERS` ("resnet18", ...).
        channels: input channels C.
        width_multiplier: scales every channel count (`scaled_channels`); D = 512 * w (basic blocks) or
            2048 * w (bottleneck blocks).
        cifar_stem: True: 3x3 stride-1 stem (small patches); False: 7x7 stride-2 conv + 3x3 stride-2 max-pool.
        norm: "layer" (GroupNorm(1): over H, W, C of each sample) or "channel" (over C at each position).
        zero_init_residual: zero-initialise the last norm scale of every residual branch.
        epsilon: variance epsilon of the norm layers.
        name_prefix: name of the returned model.

    Returns:
        A functional `keras.Model` from float32 patches `[N, None, None, C]` to float32 `[N, D]`, the
        global average of the last stage. No layer mixes samples, so row n depends on patch n only.

    Raises:
        ValueError: one line, for an unknown name or norm or a bad width / channel count / epsilon.
    """
    _resnet._check_args(name, 1, channels, width_multiplier, cifar_stem, name_prefix)
    if not isinstance(cifar_stem, bool):
        raise ValueError(f"cifar_stem must be True or False (patches have no fixed size to pick by), "
                         f"got {cifar_stem!r}.")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)} (per-sample normalisations), got {norm!r}.")
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon > 0:
        raise ValueError(f"epsilon must be a number > 0, got {epsilon!r}.")

    block_type, stage_sizes = _resnet.RESNET_SPECS[name]
    norm_layer = _norm_factory(norm, float(epsilon))
    inputs = keras.Input(shape=(None, None, channels), dtype="float32", name="patches")
    x = _resnet._stem(inputs, _resnet.scaled_channels(_resnet.STEM_CHANNELS, width_multiplier), cifar_stem, norm_layer)
    for index, (num_blocks, base) in enumerate(zip(stage_sizes, _resnet.STAGE_CHANNELS), start=1):
        filters = _resnet.scaled_channels(base, width_multiplier)
        x = _resnet._stage(x, index, block_type, num_blocks, filters, norm_layer, bool(zero_init_residual))
    # float32 output, as the repo's ResNet, so losses are safe under mixed precision.
    outputs = layers.GlobalAveragePooling2D(name="pooled", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name_prefix)
