"""AMDIM encoder: endpoint shapes, honest (unpadded) receptive fields, zero-initialised residual outputs,
the identity-like embedding shortcut, the r1 representation, serialisation and argument checks."""
import keras
import numpy as np
import pytest

from tfssl.encoders.amdim import (
    AMDIM_ENDPOINTS,
    AMDIM_PRESETS,
    IdentityPlusUniform,
    amdim_representation,
    amdim_representation_model,
    build_amdim_encoder,
)

TINY = AMDIM_PRESETS["tiny"]  # ndf 4, n_rkhs 16, one unit per block

# The network's geometry as written in the paper / reference `Encoder` for 32 px, stage by stage:
# (kernel, stride) of every spatial layer up to each endpoint (1x1 units change nothing).
_GEOMETRY_32 = {
    "r7": [(3, 1), (4, 2), (2, 2)],
    "r5": [(3, 1), (4, 2), (2, 2), (3, 1)],
    "r1": [(3, 1), (4, 2), (2, 2), (3, 1), (3, 1), (3, 1)],
}


def _images(batch, size, channels=3, seed=0):
    return np.random.RandomState(seed).rand(batch, size, size, channels).astype("float32")


def _receptive_rows(layers_ks, out_size, pixel):
    """Output rows whose input window [start, start + size) contains `pixel` for a chain of valid convs."""
    jump, size = 1, 1
    for kernel, stride in layers_ks:
        size += (kernel - 1) * jump
        jump *= stride
    return {p for p in range(out_size) if p * jump <= pixel < p * jump + size}


def _randomise(model, seed):
    """Random kernels everywhere (the zero-initialised residual branches become active)."""
    rng = np.random.default_rng(seed)
    for weight in model.trainable_weights:
        shape = tuple(weight.shape)
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        weight.assign((rng.normal(size=shape) / np.sqrt(fan_in)).astype("float32"))


@pytest.mark.parametrize("size", [32, 28, 64])
@pytest.mark.parametrize("ndf,n_rkhs", [(4, 16), (4, 8), (4, 24)])  # final unit: pool, narrowing conv, zero pad
def test_endpoint_shapes_and_dtype(size, ndf, n_rkhs):
    model = build_amdim_encoder(size, channels=3, ndf=ndf, n_rkhs=n_rkhs, n_depth=1)
    out = model(_images(2, size), training=False)
    assert set(out) == set(AMDIM_ENDPOINTS)
    for name, side in (("r1", 1), ("r5", 5), ("r7", 7)):
        assert tuple(out[name].shape) == (2, side, side, n_rkhs)
        assert out[name].dtype == "float32"
    assert tuple(model.input.shape) == (None, size, size, 3)


def test_stage_shapes_follow_the_paper_at_32_px():
    model = build_amdim_encoder(32, ndf=4, n_rkhs=16, n_depth=2)
    expected = {"stem": (30, 4), "stem_unit_add": (30, 4), "block1_unit2_add": (14, 8),
                "block2_unit2_add": (7, 16), "block3_unit2_add": (5, 16), "block4_unit2_add": (3, 16),
                "final_unit_add": (1, 16)}
    for name, (side, width) in expected.items():
        assert tuple(model.get_layer(name).output.shape) == (None, side, side, width), name
    assert not any(isinstance(layer, keras.layers.ZeroPadding2D) for layer in model.layers)
    assert all(layer.padding == "valid" for layer in model.layers if isinstance(layer, keras.layers.Conv2D))


@pytest.mark.parametrize("size,pixel", [(32, (0, 0)), (32, (9, 20)), (32, (31, 15)), (28, (0, 0)), (28, (13, 26))])
def test_receptive_fields_are_honest(size, pixel):
    """Perturbing one pixel changes exactly the endpoint locations whose receptive field covers it."""
    model = build_amdim_encoder(size, ndf=4, n_rkhs=16, n_depth=1)
    _randomise(model, seed=1)
    x = _images(1, size, seed=2)
    bumped = x.copy()
    bumped[0, pixel[0], pixel[1], :] += 5.0
    before, after = model(x, training=False), model(bumped, training=False)
    offset = (32 - size) // 2  # 28 px inputs sit in the middle of the 32 px canvas
    row, col = pixel[0] + offset, pixel[1] + offset
    for name, chain in _GEOMETRY_32.items():
        diff = np.max(np.abs(np.asarray(after[name]) - np.asarray(before[name])), axis=(0, 3))
        side = diff.shape[0]
        rows, cols = _receptive_rows(chain, side, row), _receptive_rows(chain, side, col)
        covered = np.zeros_like(diff, dtype=bool)
        covered[np.ix_(sorted(rows), sorted(cols))] = True
        assert covered.any(), name
        assert np.all(diff[covered] > 1e-3), (name, diff)
        assert np.all(diff[~covered] < 1e-5), (name, diff)


def test_corner_pixel_reaches_one_location_of_each_local_map():
    # A closed form of the geometry: r7 windows are [4p, 4p + 8), r5 windows [4p, 4p + 16).
    assert _receptive_rows(_GEOMETRY_32["r7"], 7, 0) == {0}
    assert _receptive_rows(_GEOMETRY_32["r7"], 7, 9) == {1, 2}
    assert _receptive_rows(_GEOMETRY_32["r5"], 5, 17) == {1, 2, 3, 4}
    assert _receptive_rows(_GEOMETRY_32["r1"], 1, 31) == {0}


def test_final_1x1_convs_start_at_zero_and_embedding_shortcut_near_identity():
    model = build_amdim_encoder(32, ndf=4, n_rkhs=16, n_depth=2)
    residual_outputs = [layer for layer in model.layers if layer.name.endswith("_conv2")]
    # stem unit + 4 blocks x 2 units + final unit + 2 embeddings
    assert len(residual_outputs) == 1 + 4 * 2 + 1 + 2
    for layer in residual_outputs:
        assert layer.kernel_size == (1, 1)
        np.testing.assert_array_equal(np.asarray(layer.kernel), 0.0)
    for name in ("embed5_shortcut", "embed7_shortcut"):
        kernel = np.asarray(model.get_layer(name).kernel)[0, 0]  # [n_in = 16, n_out = 16]
        np.testing.assert_array_equal(np.diag(kernel), 1.0)
        off = kernel[~np.eye(16, dtype=bool)]
        assert np.all(np.abs(off) <= 0.01) and np.any(off != 0)


def test_units_start_as_their_shortcuts():
    """With the zero-initialised 1x1 convs each residual unit outputs its (pooled) input at init."""
    model = build_amdim_encoder(32, ndf=4, n_rkhs=16, n_depth=1)
    probe = keras.Model(model.input, [model.get_layer("stem").output, model.get_layer("block1_unit1_add").output])
    stem, block1 = (np.asarray(t) for t in probe(_images(2, 32, seed=3)))
    # 4x4 / 2 average pooling of the stem output, then ndf zero channels appended.
    pooled = np.zeros((2, 14, 14, 4), np.float32)
    for i in range(14):
        for j in range(14):
            pooled[:, i, j] = stem[:, 2 * i:2 * i + 4, 2 * j:2 * j + 4].mean(axis=(1, 2))
    np.testing.assert_allclose(block1[..., :4], pooled, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(block1[..., 4:], 0.0)


def test_identity_plus_uniform_initializer():
    init = IdentityPlusUniform(0.01, seed=3)
    kernel = np.asarray(init((1, 1, 3, 5)))
    np.testing.assert_array_equal(kernel[0, 0, [0, 1, 2], [0, 1, 2]], 1.0)
    assert np.all(np.abs(kernel[0, 0, :, 3:]) <= 0.01)
    with pytest.raises(ValueError, match="1x1"):
        init((3, 3, 2, 2))


def test_representation_is_flattened_r1():
    model = build_amdim_encoder(28, channels=1, **TINY)
    x = _images(3, 28, channels=1, seed=4)
    rep = amdim_representation_model(model)
    assert tuple(rep.output.shape) == (None, 16)
    out = model(x, training=False)
    np.testing.assert_array_equal(np.asarray(rep(x, training=False)), np.asarray(out["r1"]).reshape(3, 16))
    np.testing.assert_array_equal(np.asarray(amdim_representation(out)), np.asarray(out["r1"]).reshape(3, 16))
    with pytest.raises(ValueError, match="r1"):
        amdim_representation_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))


def test_save_and_reload_gives_identical_outputs(tmp_path):
    model = build_amdim_encoder(32, ndf=4, n_rkhs=8, n_depth=1, use_bn=True, name_prefix="amdim")
    _randomise(model, seed=5)
    x = _images(4, 32, seed=6)
    model(x, training=True)  # BN statistics away from their initial values
    path = str(tmp_path / "amdim.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.name == "amdim"
    want, got = model(x, training=False), loaded(x, training=False)
    for name in AMDIM_ENDPOINTS:
        np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(want[name]))
    np.testing.assert_array_equal(np.asarray(amdim_representation_model(loaded)(x)),
                                  np.asarray(want["r1"]).reshape(4, 8))


@pytest.mark.parametrize("kwargs,match", [
    ({"image_size": 48}, "image_size=48"),
    ({"image_size": 0}, "image_size"),
    ({"ndf": 0}, "ndf"),
    ({"n_rkhs": 2.5}, "n_rkhs"),
    ({"n_depth": True}, "n_depth"),
    ({"name_prefix": ""}, "name_prefix"),
])
def test_bad_arguments(kwargs, match):
    args = dict(image_size=32, **TINY)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        build_amdim_encoder(**args)
