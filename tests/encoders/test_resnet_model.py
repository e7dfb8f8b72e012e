"""Shapes, endpoints, numerics, serialisation and argument checks of the ResNet encoders."""

import keras
import numpy as np
import pytest

from tfssl.encoders import ENDPOINTS, build_encoder, encoder_output_dim, endpoint_model

TINY = 0.125  # width multiplier giving 8 stem channels: fast forward passes


def _images(batch, size, channels=3, seed=0):
    return np.random.RandomState(seed).rand(batch, size, size, channels).astype("float32")


def _np_conv(x, kernel, stride, pad):
    """Plain cross-correlation with symmetric zero padding. x [B,H,W,C], kernel [k,k,C,F]."""
    k = kernel.shape[0]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out_h = (x.shape[1] + 2 * pad - k) // stride + 1
    out_w = (x.shape[2] + 2 * pad - k) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[-1]), np.float64)
    for i in range(k):
        for j in range(k):
            patch = xp[:, i : i + stride * out_h : stride, j : j + stride * out_w : stride, :]
            out += np.einsum("bhwc,cf->bhwf", patch, kernel[i, j])
    return out


def _np_maxpool_3x3_s2(x):
    """torchvision's MaxPool2d(3, stride 2, padding 1): -inf padding."""
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    out_h = (x.shape[1] + 2 - 3) // 2 + 1
    windows = [xp[:, i : i + 2 * out_h : 2, j : j + 2 * out_h : 2, :] for i in range(3) for j in range(3)]
    return np.max(np.stack(windows), axis=0)


@pytest.mark.parametrize(
    "name,width,size,cifar,dim",
    [
        ("resnet18", 0.25, 16, None, 128),
        ("resnet50", 0.25, 32, False, 512),
        ("resnet50", 0.5, 8, True, 1024),
    ],
)
def test_output_dim_and_static_shapes(name, width, size, cifar, dim):
    model = build_encoder(name, size, width_multiplier=width, cifar_stem=cifar)
    assert encoder_output_dim(model) == dim
    assert tuple(model.input.shape) == (None, size, size, 3)
    assert tuple(model.output.shape) == (None, dim)


@pytest.mark.parametrize("name,dim", [("resnet18", 64), ("resnet50", 256)])
@pytest.mark.parametrize("size,cifar,stem_stride", [(8, None, 1), (32, None, 1), (32, False, 4)])
def test_forward_pass_and_endpoint_strides(name, dim, size, cifar, stem_stride):
    model = build_encoder(name, size, width_multiplier=TINY, cifar_stem=cifar)
    ends = endpoint_model(model, ENDPOINTS)
    out = ends(_images(2, size), training=False)
    expansion = 4 if name == "resnet50" else 1
    assert tuple(out["stem"].shape) == (2, size // stem_stride, size // stem_stride, 8)
    for stage in range(4):
        side = size // (stem_stride * 2**stage)
        channels = 8 * 2**stage * expansion
        assert tuple(out[f"block{stage + 1}"].shape) == (2, side, side, channels)
    pooled = np.asarray(out["pooled"])
    assert pooled.shape == (2, dim) and pooled.dtype == np.float32
    # pooled is the spatial mean of the last stage, and the encoder's own output.
    np.testing.assert_allclose(pooled, np.asarray(out["block4"]).mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled, np.asarray(model(_images(2, size), training=False)), rtol=1e-5, atol=1e-6)


def test_odd_image_size_rounds_up_like_torchvision():
    model = build_encoder("resnet18", 36, width_multiplier=TINY, cifar_stem=False)
    shapes = {n: tuple(endpoint_model(model, n).output[n].shape) for n in ("stem", "block4")}
    assert shapes["stem"][1:3] == (9, 9)  # ceil(ceil(36/2)/2)
    assert shapes["block4"][1:3] == (2, 2)  # 9 -> 9 -> 5 -> 3 -> 2


def test_imagenet_stem_matches_numpy_with_symmetric_padding():
    # Independent computation of conv7x7/2 (pad 3) -> BN (initial statistics) -> ReLU -> maxpool3x3/2 (pad 1).
    model = build_encoder("resnet18", 32, channels=3, width_multiplier=TINY, cifar_stem=False)
    x = _images(2, 32, seed=3)
    got = np.asarray(endpoint_model(model, "stem")(x, training=False)["stem"])
    kernel = np.asarray(model.get_layer("stem_conv").kernel)
    y = _np_conv(x, kernel, stride=2, pad=3) / np.sqrt(1.0 + 1e-5)
    want = _np_maxpool_3x3_s2(np.maximum(y, 0.0))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_cifar_stem_matches_numpy_grayscale():
    model = build_encoder("resnet18", 8, channels=1, width_multiplier=TINY)
    x = _images(3, 8, channels=1, seed=4)
    got = np.asarray(endpoint_model(model, ["stem"])(x, training=False)["stem"])
    kernel = np.asarray(model.get_layer("stem_conv").kernel)
    assert kernel.shape == (3, 3, 1, 8)
    want = np.maximum(_np_conv(x, kernel, stride=1, pad=1) / np.sqrt(1.0 + 1e-5), 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert all(layer.name != "stem_pool_pad" for layer in model.layers)  # no max-pool in the CIFAR stem


def test_layer_conventions():
    model = build_encoder("resnet50", 32, width_multiplier=0.25, cifar_stem=False)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(convs) == len(bns) == 53  # 1 stem + 3*16 block convs + 4 projections
    assert not any(c.use_bias for c in convs)
    assert all(b.momentum == 0.9 and b.epsilon == 1e-5 and not b.synchronized for b in bns)
    # v1.5: the stride of a down-sampling bottleneck sits on its 3x3 conv, not on the first 1x1.
    assert model.get_layer("block2_unit1_conv1").strides == (1, 1)
    assert model.get_layer("block2_unit1_conv2").strides == (2, 2)
    assert model.get_layer("block2_unit1_proj_conv").strides == (2, 2)
    # He-normal: std sqrt(2 / fan_in) (block4 conv2 kernel at width 0.25: [3, 3, 128, 128], 147k samples).
    kernel = np.asarray(model.get_layer("block4_unit1_conv2").kernel)
    assert kernel.shape == (3, 3, 128, 128)
    assert abs(kernel.std() / np.sqrt(2.0 / (3 * 3 * 128)) - 1.0) < 0.03


def test_basic_block_stride_on_first_conv():
    model = build_encoder("resnet18", 16, width_multiplier=TINY)
    assert model.get_layer("block3_unit1_conv1").strides == (2, 2)
    assert model.get_layer("block3_unit1_conv2").strides == (1, 1)
    assert "block1_unit1_proj_conv" not in {layer.name for layer in model.layers}  # identity shortcut


@pytest.mark.parametrize("name,last_bn", [("resnet18", "bn2"), ("resnet50", "bn3")])
def test_zero_init_residual_makes_blocks_identity(name, last_bn):
    x = _images(2, 8, seed=5)
    for zero_init in (True, False):
        model = build_encoder(name, 8, width_multiplier=TINY, zero_init_residual=zero_init)
        gammas = [
            np.asarray(layer.gamma) for layer in model.layers if layer.name.endswith(last_bn)
        ]
        assert len(gammas) == (8 if name == "resnet18" else 16)
        assert all(np.all(g == 0.0) for g in gammas) == zero_init
        out = endpoint_model(model, ["block1_unit1_out", "block1"])(x, training=False)
        # block1 is unit 2's output; its shortcut is the identity, so a zero branch passes the input through.
        same = np.allclose(np.asarray(out["block1"]), np.asarray(out["block1_unit1_out"]), atol=1e-6)
        assert same == zero_init


def test_mixed_precision_output_is_float32():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_encoder("resnet18", 8, width_multiplier=TINY)
        out = endpoint_model(model, ["block4", "pooled"])(_images(2, 8), training=True)
    finally:
        keras.config.set_dtype_policy(previous)
    assert out["block4"].dtype.name == "bfloat16"
    assert out["pooled"].dtype.name == "float32"
    assert np.all(np.isfinite(np.asarray(out["pooled"])))


@pytest.mark.parametrize("sync_bn", [False, True])
def test_save_and_reload_gives_identical_outputs(tmp_path, sync_bn):
    model = build_encoder("resnet18", 8, channels=1, width_multiplier=TINY, sync_bn=sync_bn, name_prefix="online")
    x = _images(4, 8, channels=1, seed=6)
    model(x, training=True)  # move the BN statistics away from their initial values
    path = str(tmp_path / "encoder.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.name == "online"
    assert loaded.get_layer("stem_bn").synchronized == sync_bn
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), np.asarray(model(x, training=False)))
    np.testing.assert_array_equal(
        np.asarray(endpoint_model(loaded, "block2")(x)["block2"]),
        np.asarray(endpoint_model(model, "block2")(x)["block2"]),
    )


def test_endpoint_model_shares_weights():
    model = build_encoder("resnet18", 8, width_multiplier=TINY)
    ends = endpoint_model(model, "pooled")
    kernel = model.get_layer("stem_conv").kernel
    kernel.assign(np.zeros(kernel.shape, "float32"))
    # A zero stem makes every later activation zero (BN shifts are 0 at init, ReLU keeps 0).
    np.testing.assert_array_equal(np.asarray(ends(_images(2, 8))["pooled"]), 0.0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(name="resnet20", image_size=32), "resnet18, resnet34"),
        (dict(name="resnet18", image_size=32, width_multiplier=0.0), "width_multiplier"),
        (dict(name="resnet18", image_size=32, width_multiplier=-1.0), "width_multiplier"),
        (dict(name="resnet18", image_size=16, cifar_stem=False), "too small for the ImageNet stem"),
        (dict(name="resnet18", image_size=4), "too small for the CIFAR stem"),
        (dict(name="resnet18", image_size=0), "image_size"),
        (dict(name="resnet18", image_size=32.0), "image_size"),
        (dict(name="resnet18", image_size=32, channels=0), "channels"),
        (dict(name="resnet18", image_size=32, cifar_stem="yes"), "cifar_stem"),
        (dict(name="resnet18", image_size=32, name_prefix=""), "name_prefix"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        build_encoder(**kwargs)
    assert "\n" not in str(info.value)


def test_bad_endpoint_names_raise_value_error():
    model = build_encoder("resnet18", 8, width_multiplier=TINY)
    with pytest.raises(ValueError, match="block5"):
        endpoint_model(model, ["block4", "block5"])
    with pytest.raises(ValueError, match="at least one"):
        endpoint_model(model, [])
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        encoder_output_dim(endpoint_model(model, ["block4"]))
