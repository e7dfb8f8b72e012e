"""AMDIM's unpadded wide ResNet with multiscale endpoints, as a Keras 3 functional model.

Bachman, Hjelm, Buchwalter, "Learning Representations by Maximizing Mutual Information Across Views",
NeurIPS 2019 (arXiv 1906.00910), sec. 3.4 and the authors' code (Philip-Bachman/amdim-public,
`model.py`: `Encoder`, `ConvResNxN`, `ConvResBlock`, `FakeRKHSConvNet`, `NopNet`).

No layer pads, so every output location sees exactly the input pixels its receptive field covers and
local features of different locations see different (overlapping) image regions. The 32 px network:

    32 -> 3x3 conv + ReLU -> 30 -> 1x1 residual unit -> 30
       -> block1: 4x4 stride 2 -> 14 -> block2: 2x2 stride 2 -> 7   ("map7")
       -> block3: 3x3 -> 5 ("map5") -> block4: 3x3 -> 3 -> final 3x3 unit -> 1 -> batch norm ("map1")

with widths ndf, 2 ndf, 4 ndf, 4 ndf, 4 ndf and n_rkhs for the final unit. The 64 px network (STL-10)
drops the 1x1 unit after the stem and has one more stride-2 stage (62 -> 30 -> 14 -> 7, widths up to
8 ndf). A block is one unit with the block's kernel and stride followed by `n_depth - 1` 1x1 units.

A residual unit (`ConvResNxN`): `conv_kxk (no bias) -> [BN] -> ReLU -> conv_1x1` added to a shortcut
that is average pooling with the same kernel and stride, zero-padded in channels when the unit widens
(a strided conv with bias when it narrows). The unit's last 1x1 conv starts at zero (fixup-like), so
every unit starts as its shortcut; there is no ReLU after the sum.

Endpoints (the reference's `dim2layer`: the last activation of each spatial size 1, 5 and 7):
  "r1"  [B, 1, 1, n_rkhs]  the batch-normed final map, unchanged (the reference's `NopNet`);
  "r5"  [B, 5, 5, n_rkhs]  map5 through a 1x1 residual embedding (`FakeRKHSConvNet`);
  "r7"  [B, 7, 7, n_rkhs]  map7 through another one.
The embedding: `conv1x1 (no bias) -> [BN] -> ReLU -> conv1x1 (zero init)` plus a 1x1 conv shortcut with
bias, initialised to the identity plus U(-0.01, 0.01) noise when it does not narrow, then a batch norm
that is always on. All three endpoints are float32 (mixed precision safe). The representation used
for evaluation is r1 flattened, `[B, n_rkhs]`, as the reference's `Evaluator` does
(`amdim_representation_model`).

Differences from the reference code, all deliberate:
  * Images smaller than 32 px (28 px Fashion-MNIST) are zero-padded symmetrically to 32 px inside the
    model (`pad_to_32`) rather than resized: pixels keep their geometry (every receptive field stays an
    exact pixel window, shifted by the pad) and zero is the background of images in [0, 1]. A 28 px
    input to the unpadded network itself would give 26 -> 12 -> 6 -> 4 -> 2 and no 1x1 / 5x5 / 7x7 maps.
  * Biases (stem conv without BN, narrowing shortcuts, the embedding shortcut) start at zero instead
    of PyTorch's U(+-1/sqrt(fan_in)); kernels use PyTorch's default conv initialisation
    (kaiming_uniform with a = sqrt(5), i.e. U(+-1/sqrt(fan_in))) as `init_weights(init_scale=1)` does.
  * Batch norm uses the library-wide momentum 0.9 / epsilon 1e-5 (PyTorch's defaults) and can be
    synchronised across replicas (`sync_bn`).
  * The 128 px ImageNet variant (a reflect-padded 5x5 stride-2 stem) is not built.
"""

from __future__ import annotations

import functools

import keras
from keras import layers

from tfssl.encoders.resnet import BN_EPSILON, BN_MOMENTUM

AMDIM_ENDPOINTS = ("r1", "r5", "r7")

# Width presets. "cifar10" and "stl10" are the authors' settings (lightning-bolts' AMDIM presets, taken
# from the AMDIM authors); "reference_default" the defaults of amdim-public's train.py; "small" and
# "tiny" are ours, for CPU runs on 28 px Fashion-MNIST and for tests.
AMDIM_PRESETS = {
    "cifar10": {"ndf": 320, "n_rkhs": 1280, "n_depth": 10},
    "stl10": {"ndf": 192, "n_rkhs": 1536, "n_depth": 8},
    "reference_default": {"ndf": 128, "n_rkhs": 1024, "n_depth": 3},
    "small": {"ndf": 32, "n_rkhs": 256, "n_depth": 2},
    "tiny": {"ndf": 4, "n_rkhs": 16, "n_depth": 1},
}

# Native input sizes -> the stages after the stem: (width multiple of ndf, kernel, stride, bn_after).
# bn_after marks the stage whose output is map7 (the reference puts a MaybeBatchNorm2d there).
_STAGES = {
    32: ((2, 4, 2, False), (4, 2, 2, True), (4, 3, 1, False), (4, 3, 1, False)),
    64: ((2, 4, 2, False), (4, 4, 2, False), (8, 2, 2, True), (8, 3, 1, False), (8, 3, 1, False)),
}


def _torch_default_kernel():
    """PyTorch's default conv kernel init, kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in))."""
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


@keras.saving.register_keras_serializable(package="tfssl")
class IdentityPlusUniform(keras.initializers.Initializer):
    """1x1 conv kernel `[1, 1, n_in, n_out]`: U(-noise, noise) with ones on the diagonal (i, i).

    The initial shortcut of AMDIM's embedding (`FakeRKHSConvNet`) is thus near the identity, so the
    embedding first passes its input through (padded with near-zero channels when it widens).
    """

    def __init__(self, noise=0.01, seed=None):
        if not isinstance(noise, (int, float)) or noise < 0:
            raise ValueError(f"noise must be a number >= 0, got {noise!r}")
        self.noise = float(noise)
        self.seed = seed

    def __call__(self, shape, dtype=None):
        if len(shape) != 4 or shape[0] != 1 or shape[1] != 1:
            raise ValueError(f"IdentityPlusUniform initialises 1x1 conv kernels [1, 1, n_in, n_out], got {shape}")
        dtype = dtype or "float32"
        n_in, n_out = int(shape[2]), int(shape[3])
        noise = keras.random.uniform(shape, -self.noise, self.noise, dtype=dtype, seed=self.seed)
        eye = keras.ops.reshape(keras.ops.eye(n_in, n_out, dtype=dtype), shape)
        return keras.ops.where(eye > 0, keras.ops.ones_like(noise), noise)

    def get_config(self):
        return {"noise": self.noise, "seed": self.seed}


@keras.saving.register_keras_serializable(package="tfssl")
class ZeroChannelPad(layers.Layer):
    """Appends `extra` all-zero channels: the shortcut of a residual unit that widens (AMDIM, `F.pad`)."""

    def __init__(self, extra, **kwargs):
        super().__init__(**kwargs)
        if isinstance(extra, bool) or not isinstance(extra, int) or extra < 0:
            raise ValueError(f"extra must be an int >= 0 (channels to append), got {extra!r}")
        self.extra = extra

    def call(self, inputs):
        return keras.ops.pad(inputs, [[0, 0], [0, 0], [0, 0], [0, self.extra]])

    def compute_output_shape(self, input_shape):
        channels = None if input_shape[-1] is None else input_shape[-1] + self.extra
        return (*input_shape[:-1], channels)

    def get_config(self):
        config = super().get_config()
        config.update(extra=self.extra)
        return config


def _conv(x, filters, kernel, strides, name, use_bias=False, initializer=None):
    return layers.Conv2D(filters, kernel, strides=strides, padding="valid", use_bias=use_bias,
                         kernel_initializer=initializer or _torch_default_kernel(), bias_initializer="zeros",
                         name=name)(x)


def _batch_norm(x, name, sync_bn):
    return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=sync_bn, name=name)(x)


def _residual_unit(x, n_out, kernel, strides, name, maybe_bn):
    """AMDIM's `ConvResNxN`: conv_kxk -> [BN] -> ReLU -> conv1x1 (zero init), plus a pooled shortcut."""
    n_in = int(x.shape[-1])
    h = _conv(x, n_out, kernel, strides, f"{name}_conv1")
    h = layers.ReLU(name=f"{name}_relu")(maybe_bn(h, f"{name}_bn1"))
    h = _conv(h, n_out, 1, 1, f"{name}_conv2", initializer="zeros")
    if n_out < n_in:
        shortcut = _conv(x, n_out, kernel, strides, f"{name}_shortcut_conv", use_bias=True)
    else:
        shortcut = x
        if kernel > 1 or strides > 1:
            shortcut = layers.AveragePooling2D(kernel, strides, padding="valid", name=f"{name}_shortcut_pool")(x)
        if n_out > n_in:
            shortcut = ZeroChannelPad(n_out - n_in, name=f"{name}_shortcut_pad")(shortcut)
    return layers.Add(name=f"{name}_add")([h, shortcut])


def _block(x, n_out, kernel, strides, depth, name, maybe_bn):
    """AMDIM's `ConvResBlock`: one kxk unit (with the stride), then depth - 1 1x1 units."""
    x = _residual_unit(x, n_out, kernel, strides, f"{name}_unit1", maybe_bn)
    for unit in range(2, depth + 1):
        x = _residual_unit(x, n_out, 1, 1, f"{name}_unit{unit}", maybe_bn)
    return x


def _embedding(x, n_rkhs, name, maybe_bn, sync_bn):
    """AMDIM's `FakeRKHSConvNet`: 1x1 residual MLP to n_rkhs channels, always batch-normed at the end."""
    n_in = int(x.shape[-1])
    h = _conv(x, n_rkhs, 1, 1, f"{name}_conv1")
    h = layers.ReLU(name=f"{name}_relu")(maybe_bn(h, f"{name}_bn1"))
    h = _conv(h, n_rkhs, 1, 1, f"{name}_conv2", initializer="zeros")
    shortcut_init = IdentityPlusUniform(0.01) if n_rkhs >= n_in else None
    shortcut = _conv(x, n_rkhs, 1, 1, f"{name}_shortcut", use_bias=True, initializer=shortcut_init)
    return _batch_norm(layers.Add(name=f"{name}_add")([h, shortcut]), f"{name}_bn_out", sync_bn)


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")


def build_amdim_encoder(
    image_size: int = 32,
    channels: int = 3,
    ndf: int = 128,
    n_rkhs: int = 1024,
    n_depth: int = 3,
    use_bn: bool = False,
    sync_bn: bool = False,
    name_prefix: str = "encoder",
) -> keras.Model:
    """Builds AMDIM's encoder: images -> {"r1", "r5", "r7"} multiscale feature maps.

    Args:
        image_size: side S of the square inputs: 32 or 64 (the reference's CIFAR and STL-10 networks),
            or less than 32 (e.g. 28 for Fashion-MNIST), which is zero-padded to 32 inside the model.
        channels: input channels C.
        ndf: base width (320 for the CIFAR preset, see `AMDIM_PRESETS`).
        n_rkhs: width of the three endpoints, the "fake RKHS" dimension (1280 for CIFAR).
        n_depth: residual units per block (10 for CIFAR).
        use_bn: batch norm inside the residual units, the stem and on map7 (the reference's `use_bn`,
            off by default there and here). The final map and the embeddings' outputs are always
            batch-normed, as in the reference.
        sync_bn: synchronise batch-norm statistics across replicas.
        name_prefix: name of the returned model.

    Returns:
        A functional keras.Model: float32 images [B, S, S, C] -> dict of float32 tensors
        {"r1": [B, 1, 1, n_rkhs], "r5": [B, 5, 5, n_rkhs], "r7": [B, 7, 7, n_rkhs]}.

    Raises:
        ValueError: on a non-positive size or width, an image size other than <= 32 or 64, or a bad
            name_prefix.
    """
    _check_positive_int("image_size", image_size)
    for name, value in (("channels", channels), ("ndf", ndf), ("n_rkhs", n_rkhs), ("n_depth", n_depth)):
        _check_positive_int(name, value)
    if image_size not in _STAGES and image_size > 32:
        raise ValueError(f"image_size={image_size} is not supported; use 32 or 64 (AMDIM's CIFAR and STL-10 "
                         f"networks), or a size below 32, which is zero-padded to 32.")
    if not isinstance(name_prefix, str) or not name_prefix:
        raise ValueError(f"name_prefix must be a non-empty string, got {name_prefix!r}.")
    sync_bn = bool(sync_bn)
    bn = functools.partial(_batch_norm, sync_bn=sync_bn)
    maybe_bn = bn if use_bn else (lambda x, name: x)

    inputs = keras.Input(shape=(image_size, image_size, channels), dtype="float32", name="images")
    x = inputs
    native = 32 if image_size < 32 else image_size
    if image_size < native:
        before = (native - image_size) // 2
        after = native - image_size - before
        x = layers.ZeroPadding2D(((before, after), (before, after)), name="pad_to_32")(x)
    # Stem: 3x3 conv, no padding; bias only when there is no BN (the reference's Conv3x3).
    x = _conv(x, ndf, 3, 1, "stem_conv", use_bias=not use_bn)
    x = layers.ReLU(name="stem")(maybe_bn(x, "stem_bn"))
    if native == 32:
        x = _residual_unit(x, ndf, 1, 1, "stem_unit", maybe_bn)
    maps = {}
    for index, (multiple, kernel, strides, bn_after) in enumerate(_STAGES[native], start=1):
        x = _block(x, multiple * ndf, kernel, strides, n_depth, f"block{index}", maybe_bn)
        if bn_after:
            x = maybe_bn(x, f"block{index}_bn")
        maps[int(x.shape[1])] = x  # later maps of a size replace earlier ones, like the reference's dim2layer
    x = _residual_unit(x, n_rkhs, 3, 1, "final_unit", maybe_bn)
    maps[int(x.shape[1])] = bn(x, "final_bn")
    if not {1, 5, 7} <= set(maps):  # a guard on the stage tables above
        raise AssertionError(f"AMDIM stage table gives map sizes {sorted(maps)}, expected 1, 5 and 7")

    # float32 identities: the endpoints reach the losses in float32 under a mixed precision policy.
    outputs = {
        "r1": layers.Activation("linear", dtype="float32", name="r1")(maps[1]),
        "r5": layers.Activation("linear", dtype="float32", name="r5")(
            _embedding(maps[5], n_rkhs, "embed5", maybe_bn, sync_bn)),
        "r7": layers.Activation("linear", dtype="float32", name="r7")(
            _embedding(maps[7], n_rkhs, "embed7", maybe_bn, sync_bn)),
    }
    return keras.Model(inputs, outputs, name=name_prefix)


def amdim_representation(endpoints):
    """The evaluation representation of AMDIM: r1 flattened, `[B, n_rkhs]` (the reference's Evaluator).

    Args:
        endpoints: the dict returned by an AMDIM encoder (or any dict with "r1" `[B, 1, 1, n_rkhs]`).

    Returns:
        float32 `[B, n_rkhs]`.
    """
    r1 = endpoints["r1"]
    return keras.ops.reshape(r1, (-1, int(r1.shape[-1])))


def amdim_representation_model(encoder: keras.Model, name: str | None = None) -> keras.Model:
    """A model sharing `encoder`'s layers that maps images to the flattened r1, `[B, n_rkhs]` float32.

    This is what linear probes, kNN, export and fine-tuning use (an `[B, D]` encoder like the ResNets').

    Args:
        encoder: a model from `build_amdim_encoder` (or one reloaded from a .keras file).
        name: name of the returned model; default f"{encoder.name}_r1".

    Raises:
        ValueError: if the encoder has no "r1" layer.
    """
    names = {layer.name for layer in encoder.layers}
    if "r1" not in names:
        raise ValueError(f"encoder {encoder.name!r} has no 'r1' endpoint; pass a model from build_amdim_encoder.")
    r1 = encoder.get_layer("r1").output
    flat = layers.Flatten(dtype="float32", name="representation")(r1)
    return keras.Model(encoder.input, flat, name=name or f"{encoder.name}_r1")
