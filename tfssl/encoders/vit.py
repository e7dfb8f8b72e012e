"""Vision Transformer encoders (Dosovitskiy et al. 2021) in the form MoCo v3 trains them.

Chen, Xie, He, "An Empirical Study of Training Self-Supervised Vision Transformers" (ICCV 2021):
  * pre-norm Transformer blocks (LayerNorm eps 1e-6, MLP ratio 4, exact GELU), no dropout;
  * a class token (initialised N(0, 1e-6)) whose final LayerNorm-ed state is the representation;
  * fixed 2-D sine-cosine position embeddings (sec. 4.2 / appendix: no learned positions);
  * optionally a frozen random patch projection ("random patch projection", sec. 4.2), the paper's
    remedy for the training instability of ViT under self-supervision;
  * ViT-Small with 12 heads rather than DeiT's 6 (the paper's choice).

Layer names usable as endpoints (see `tfssl.encoders.endpoint_model`):
  "patch_embed"     [B, S/p, S/p, D] patch projection
  "tokens"          [B, 1 + N, D] class token + patches with position embeddings added
  "block1".."blockL" outputs of the Transformer blocks, [B, 1 + N, D]
  "pooled"          [B, D] float32 class-token representation
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers, ops

# name -> (width D, depth L, heads H).
VIT_SPECS = {
    "vit_tiny": (192, 12, 3),
    "vit_small": (384, 12, 12),
    "vit_base": (768, 12, 12),
}
LN_EPSILON = 1e-6
MLP_RATIO = 4


def sincos_position_embedding(grid_size: int, dim: int) -> np.ndarray:
    """Fixed 2-D sine-cosine position embeddings of a square patch grid.

    A quarter of the channels each holds sin / cos of the column index and sin / cos of the row
    index, at frequencies 1 / 10000^(k / (D/4)), k = 0 .. D/4 - 1 (MoCo v3's construction).

    Args:
        grid_size: patches per side G.
        dim: embedding width D, a multiple of 4.

    Returns:
        float32 array [G*G, D], patches in row-major order.
    """
    if dim % 4:
        raise ValueError(f"the ViT width must be a multiple of 4 for 2-D sin-cos positions, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000.0 ** (np.arange(quarter, dtype=np.float64) / quarter)
    rows, cols = np.meshgrid(np.arange(grid_size, dtype=np.float64), np.arange(grid_size, dtype=np.float64),
                             indexing="ij")
    col_angles = cols.reshape(-1, 1) * omega
    row_angles = rows.reshape(-1, 1) * omega
    table = np.concatenate([np.sin(col_angles), np.cos(col_angles), np.sin(row_angles), np.cos(row_angles)], 1)
    return table.astype(np.float32)


@keras.saving.register_keras_serializable(package="tfssl")
class ClassTokenPositions(layers.Layer):
    """Flattens a patch grid, prepends a learned class token and adds fixed sin-cos positions.

    Input [B, G, G, D]; output [B, 1 + G*G, D]. The class token's position embedding is zero.
    """

    def build(self, input_shape):
        grid, grid_w, dim = input_shape[1], input_shape[2], input_shape[3]
        if grid != grid_w:
            raise ValueError(f"ClassTokenPositions needs a square patch grid, got {grid}x{grid_w}")
        self.class_token = self.add_weight(shape=(1, 1, dim), name="class_token",
                                           initializer=keras.initializers.RandomNormal(stddev=1e-6))

    @staticmethod
    def positions(grid, dim):
        """`[1, 1 + G*G, D]` position table of a G x G grid (constant, not a weight: nothing to train or save)."""
        return np.concatenate([np.zeros((1, dim), np.float32), sincos_position_embedding(grid, dim)], 0)[None]

    def call(self, patches):
        grid, grid_w, dim = patches.shape[1], patches.shape[2], patches.shape[-1]
        if grid is None or grid != grid_w:
            raise ValueError(f"the ViT needs square crops of a static size, got a {grid}x{grid_w} patch grid")
        batch = ops.shape(patches)[0]
        tokens = ops.reshape(patches, (batch, -1, dim))
        cls = ops.broadcast_to(ops.cast(self.class_token, tokens.dtype), (batch, 1, dim))
        tokens = ops.concatenate([cls, tokens], axis=1)
        # Computed for this call's grid: crops of any size (multi-crop) get their own exact positions.
        return tokens + ops.cast(self.positions(grid, dim), tokens.dtype)

    def compute_output_shape(self, input_shape):
        grid, grid_w = input_shape[1], input_shape[2]
        tokens = None if grid is None or grid_w is None else 1 + grid * grid_w
        return (input_shape[0], tokens, input_shape[3])


@keras.saving.register_keras_serializable(package="tfssl")
class SelfAttention(layers.Layer):
    """Multi-head self-attention with one fused q/k/v projection (Vaswani et al. 2017).

    softmax(Q K^T / sqrt(d_head)) V per head, then an output projection. Logits and softmax are computed
    in float32 under mixed precision.

    Args:
        num_heads: H; the input width D must be divisible by it.
    """

    def __init__(self, num_heads: int, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim % self.num_heads:
            raise ValueError(f"ViT width {dim} is not divisible by {self.num_heads} heads")
        self.qkv = layers.Dense(3 * dim, kernel_initializer="glorot_uniform", name="qkv", dtype=self.dtype_policy)
        self.proj = layers.Dense(dim, kernel_initializer="glorot_uniform", name="proj", dtype=self.dtype_policy)
        self.qkv.build(input_shape)
        self.proj.build(input_shape)

    def call(self, x):
        batch, length, dim = ops.shape(x)[0], ops.shape(x)[1], x.shape[-1]
        head_dim = dim // self.num_heads
        qkv = ops.reshape(self.qkv(x), (batch, length, 3, self.num_heads, head_dim))
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))  # [3, B, H, N, d]
        q, k, v = qkv[0], qkv[1], qkv[2]
        logits = ops.matmul(ops.cast(q, "float32"), ops.transpose(ops.cast(k, "float32"), (0, 1, 3, 2)))
        weights = ops.softmax(logits / math.sqrt(head_dim), axis=-1)
        mixed = ops.matmul(ops.cast(weights, v.dtype), v)  # [B, H, N, d]
        mixed = ops.reshape(ops.transpose(mixed, (0, 2, 1, 3)), (batch, length, dim))
        return self.proj(mixed)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads}


@keras.saving.register_keras_serializable(package="tfssl")
class ClassToken(layers.Layer):
    """Selects the class token: [B, 1 + N, D] -> [B, D]."""

    def call(self, tokens):
        return tokens[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


def _block(x, index: int, num_heads: int):
    dim = x.shape[-1]
    prefix = f"block{index}"
    h = layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{prefix}_norm1")(x)
    h = SelfAttention(num_heads, name=f"{prefix}_attn")(h)
    x = layers.Add(name=f"{prefix}_attn_residual")([x, h])
    h = layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{prefix}_norm2")(x)
    h = layers.Dense(MLP_RATIO * dim, activation="gelu", kernel_initializer="glorot_uniform",
                     name=f"{prefix}_mlp1")(h)
    h = layers.Dense(dim, kernel_initializer="glorot_uniform", name=f"{prefix}_mlp2")(h)
    return layers.Add(name=prefix)([x, h])


def check_vit_args(name, image_size, patch_size, width_multiplier=1.0):
    """Raises a one-line ValueError for an unknown ViT name, an image not tiled by the patches, or a
    ResNet width multiplier other than 1 (a ViT's width comes from its name)."""
    if name not in VIT_SPECS:
        raise ValueError(f"Unknown ViT {name!r}; choose one of {', '.join(VIT_SPECS)}.")
    if patch_size <= 0 or image_size <= 0 or image_size % patch_size:
        raise ValueError(f"--image_size={image_size} must be a positive multiple of --patch_size={patch_size} "
                         f"for a ViT (e.g. 28 px with patch 4 or 7, 224 px with patch 16)")
    if width_multiplier != 1.0:
        raise ValueError(f"--width_multiplier={width_multiplier} applies to ResNets only; use 1.0 with "
                         f"--encoder={name} (a ViT's width comes from its name)")


def build_vit(
    name: str,
    image_size: int,
    channels: int = 3,
    patch_size: int = 16,
    freeze_patch_embed: bool = False,
    name_prefix: str = "encoder",
    spec: tuple[int, int, int] | None = None,
) -> keras.Model:
    """Builds a ViT encoder mapping images to the class-token representation.

    Args:
        name: one of `VIT_SPECS` ("vit_tiny", "vit_small", "vit_base").
        image_size: side S of the square input images, a multiple of `patch_size`.
        channels: input channels C.
        patch_size: side p of the square patches (16 for ImageNet's ViT-*/16).
        freeze_patch_embed: keep the random patch projection fixed (MoCo v3 sec. 4.2).
        name_prefix: name of the returned model.
        spec: (width, depth, heads) overriding the named size (tests use tiny ones).

    Returns:
        A functional keras.Model: float32 images [B, S, S, C] in [0, 1] -> float32 features [B, D].

    Raises:
        ValueError: unknown name, or an image size that the patches do not tile.
    """
    check_vit_args(name, image_size, patch_size)
    dim, depth, heads = spec or VIT_SPECS[name]
    inputs = keras.Input(shape=(image_size, image_size, channels), dtype="float32", name="images")
    x = layers.Conv2D(dim, patch_size, strides=patch_size, kernel_initializer="glorot_uniform",
                      name="patch_embed", trainable=not freeze_patch_embed)(inputs)
    x = ClassTokenPositions(name="tokens")(x)
    for index in range(1, depth + 1):
        x = _block(x, index, heads)
    x = layers.LayerNormalization(epsilon=LN_EPSILON, name="norm")(x)
    # A float32 layer at the end, so heads and losses see float32 under mixed precision (as for ResNets).
    outputs = ClassToken(name="pooled", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name_prefix)
