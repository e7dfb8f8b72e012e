"""RegNetX / RegNetY encoders against independent references.

References:
  * stage plans recomputed here with numpy from the RegNet width rule (Radosavovic et al. 2020,
    sec. 3.3), and the stage depths/widths torchvision's `regnet_*` builders produce, kept literal;
  * torchvision's published parameter counts (`weights.meta["num_params"]`, 1000-way classifier
    included). torchvision counts parameters only (conv kernels, SE biases, BN gamma/beta), which are
    exactly our *trainable* weights; BN moving statistics are buffers there, non-trainable here;
  * torchvision's published `_ops` (GMACs at 224 px, classifier included).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.config import CHOICES
from tfssl.encoders import ENCODERS, any_size, build_encoder, encoder_output_dim, endpoint_model
from tfssl.encoders.flops import layer_forward_flops
from tfssl.encoders.regnet import REGNET_SPECS, SPEC_ONLY, build_regnet, stage_plan

# (depth, w0, wa, wm, group width), written out again so a typo in the module cannot hide.
SETTINGS = {
    "regnetx_400mf": (22, 24, 24.48, 2.54, 16),
    "regnetx_1_6gf": (18, 80, 34.01, 2.25, 24),
    "regnetx_3_2gf": (25, 88, 26.31, 2.25, 48),
    "regnety_400mf": (16, 48, 27.89, 2.09, 8),
    "regnety_1_6gf": (27, 48, 20.71, 2.65, 24),
    "regnety_3_2gf": (21, 80, 42.63, 2.66, 24),
    "regnety_256gf": (27, 640, 230.83, 2.53, 373),  # SEER; spec only
}
# Stage depths and widths as torchvision builds them (SEER's from Goyal et al. 2021).
PUBLISHED_PLANS = {
    "regnetx_400mf": ((1, 2, 7, 12), (32, 64, 160, 400)),
    "regnetx_1_6gf": ((2, 4, 10, 2), (72, 168, 408, 912)),
    "regnetx_3_2gf": ((2, 6, 15, 2), (96, 192, 432, 1008)),
    "regnety_400mf": ((1, 3, 6, 6), (48, 104, 208, 440)),
    "regnety_1_6gf": ((2, 6, 17, 2), (48, 120, 336, 888)),
    "regnety_3_2gf": ((2, 5, 13, 1), (72, 216, 576, 1512)),
    "regnety_256gf": ((2, 7, 17, 1), (746, 1492, 4103, 10444)),
}
TORCHVISION_PARAMS = {
    "regnetx_400mf": 5_495_976,
    "regnetx_1_6gf": 9_190_136,
    "regnetx_3_2gf": 15_296_552,
    "regnety_400mf": 4_344_144,
    "regnety_1_6gf": 11_202_430,
    "regnety_3_2gf": 19_436_338,
}
TORCHVISION_GMACS = {
    "regnetx_400mf": 0.414, "regnetx_1_6gf": 1.603, "regnetx_3_2gf": 3.177,
    "regnety_400mf": 0.402, "regnety_1_6gf": 1.612, "regnety_3_2gf": 3.176,
}
NOMINAL_GMACS = {"400mf": 0.4, "1_6gf": 1.6, "3_2gf": 3.2}


def _reference_plan(depth, w0, wa, wm, g):
    """Stage (depths, widths, group widths) by the paper's rule, vectorised with numpy."""
    u = w0 + wa * np.arange(depth, dtype=np.float64)
    k = np.round(np.log(u / w0) / np.log(wm))
    w = (np.round(w0 * np.power(wm, k) / 8) * 8).astype(np.int64)
    stage_w, counts = np.unique(w, return_counts=True)  # w is non-decreasing, so sorted == stage order
    gw = np.minimum(g, stage_w)
    adjusted = np.maximum(gw, np.floor(stage_w / gw + 0.5) * gw).astype(np.int64)
    adjusted = np.where(adjusted < 0.9 * stage_w, adjusted + gw, adjusted)
    return tuple(counts.tolist()), tuple(adjusted.tolist()), tuple(gw.tolist())


def _count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def _closed_form(depths, widths, se, stem=32, in_channels=3):
    """(trainable, non_trainable) weight counts of a RegNet encoder, by hand from its stage plan."""
    conv, bn_channels, se_params = 9 * in_channels * stem, stem, 0
    cin = stem
    for depth, (w, g) in zip(depths, widths):
        for unit in range(depth):
            conv += cin * w + 9 * w * g + w * w  # 1x1, grouped 3x3 (w/g groups of g -> g), 1x1
            bn_channels += 3 * w
            if unit == 0:  # every stage starts with stride 2: projection shortcut
                conv += cin * w
                bn_channels += w
            if se:
                squeeze = int(round(0.25 * cin))
                se_params += (w * squeeze + squeeze) + (squeeze * w + w)
            cin = w
    return conv + 2 * bn_channels + se_params, 2 * bn_channels


_BUILT = {}


@pytest.fixture(scope="module")
def imagenet_models():
    """The six encoders at 224 px, built once (no forward pass)."""
    def get(name):
        if name not in _BUILT:
            _BUILT[name] = build_encoder(name, 224)
        return _BUILT[name]
    yield get
    _BUILT.clear()


@pytest.fixture(scope="module")
def small_y():
    """regnety_400mf for 32 px images (small-image stem chosen automatically)."""
    keras.utils.set_random_seed(0)
    return build_encoder("regnety_400mf", 32)


@pytest.mark.parametrize("name", list(SETTINGS))
def test_stage_plan_matches_numpy_rule_and_published(name):
    spec = REGNET_SPECS.get(name) or SPEC_ONLY[name]
    assert tuple(spec[:5]) == SETTINGS[name]
    plan = stage_plan(spec)
    assert (plan.depths, plan.widths, plan.group_widths) == _reference_plan(*SETTINGS[name])
    assert (plan.depths, plan.widths) == PUBLISHED_PLANS[name]
    assert sum(plan.depths) == SETTINGS[name][0]
    assert all(w % g == 0 for w, g in zip(plan.widths, plan.group_widths))


def test_regnetx_400mf_rounds_half_up_like_torchvision():
    # The raw last-stage width 392 is 24.5 groups of 16: half-up gives 400 (torchvision's 5.5M model);
    # pycls' round-half-even gives 384 (its model zoo's 5.2M).
    assert stage_plan(REGNET_SPECS["regnetx_400mf"]).widths[-1] == 400


def test_spec_only_is_not_buildable():
    assert "regnety_256gf" not in ENCODERS
    with pytest.raises(ValueError, match="spec only"):
        build_regnet("regnety_256gf", 224)
    with pytest.raises(ValueError, match="Unknown encoder"):
        build_encoder("regnety_256gf", 224)


@pytest.mark.parametrize("name", list(TORCHVISION_PARAMS))
def test_parameter_count_matches_torchvision_exactly(imagenet_models, name):
    model = imagenet_models(name)
    trainable, non_trainable = _count(model.trainable_weights), _count(model.non_trainable_weights)
    dim = encoder_output_dim(model)
    assert trainable + dim * 1000 + 1000 == TORCHVISION_PARAMS[name]
    depths, widths = PUBLISHED_PLANS[name]
    group_width = SETTINGS[name][4]
    plan = list(zip(widths, [min(group_width, w) for w in widths]))
    assert (trainable, non_trainable) == _closed_form(depths, plan, se=name.startswith("regnety"))
    assert dim == widths[-1] and model.output.shape[1:] == (dim,)


@pytest.mark.parametrize("name", list(TORCHVISION_PARAMS))
def test_flops_at_224(imagenet_models, name):
    model = imagenet_models(name)
    macs = layer_forward_flops(model) / 2  # layer_forward_flops counts 2 FLOPs per multiply-add
    nominal = NOMINAL_GMACS[name.split("_", 1)[1]] * 1e9
    assert abs(macs - nominal) < 0.1 * nominal
    with_classifier = macs + encoder_output_dim(model) * 1000
    assert with_classifier == pytest.approx(TORCHVISION_GMACS[name] * 1e9, rel=2e-3)


def test_flops_counts_grouped_convs_per_group():
    inputs = keras.Input((8, 8, 16))
    outputs = keras.layers.Conv2D(32, 3, padding="same", groups=4, use_bias=False)(inputs)
    model = keras.Model(inputs, outputs)
    assert layer_forward_flops(model, batch=3) == 3 * 2 * (8 * 8 * 32) * (3 * 3 * 16 // 4)


@pytest.mark.parametrize("name", list(TORCHVISION_PARAMS))
def test_grouped_convs_and_se_only_in_y(imagenet_models, name):
    model = imagenet_models(name)
    depths, widths = PUBLISHED_PLANS[name]
    group_width = SETTINGS[name][4]
    is_y = name.startswith("regnety")
    cin = 32
    for stage, (depth, width) in enumerate(zip(depths, widths), start=1):
        for unit in range(1, depth + 1):
            prefix = f"block{stage}_unit{unit}"
            conv = model.get_layer(f"{prefix}_conv2")
            assert conv.groups == width // min(group_width, width)
            assert tuple(conv.kernel.shape) == (3, 3, min(group_width, width), width)
            assert conv.strides == ((2, 2) if unit == 1 else (1, 1))
            names = {layer.name for layer in model.layers if layer.name.startswith(f"{prefix}_se")}
            if is_y:
                assert model.get_layer(f"{prefix}_se_reduce").filters == int(round(0.25 * cin))
                assert model.get_layer(f"{prefix}_se_expand").filters == width
            else:
                assert not names
            cin = width
    assert any("_se_" in layer.name for layer in model.layers) == is_y


def test_stems_and_endpoint_strides(small_y, imagenet_models):
    # Auto stem choice: stride 1 up to 32 px (like the ResNets' CIFAR stem), stride 2 above.
    shapes = {n: tuple(t.shape[1:]) for n, t in endpoint_model(small_y, ["stem", "block1", "block4"]).output.items()}
    assert shapes == {"stem": (32, 32, 32), "block1": (16, 16, 48), "block4": (2, 2, 440)}
    big = imagenet_models("regnety_400mf")
    shapes = {n: tuple(t.shape[1:]) for n, t in endpoint_model(big, ["stem", "block1", "block4"]).output.items()}
    assert shapes == {"stem": (112, 112, 32), "block1": (56, 56, 48), "block4": (7, 7, 440)}
    assert big.get_layer("stem_conv").strides == (2, 2) and small_y.get_layer("stem_conv").strides == (1, 1)


def test_any_size_twin_shares_weights(small_y):
    twin = any_size(small_y)
    assert tuple(twin.input.shape[1:3]) == (None, None)
    x32 = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    x48 = np.random.default_rng(1).uniform(size=(2, 48, 48, 3)).astype("float32")
    np.testing.assert_allclose(twin(x32, training=False), small_y(x32, training=False), rtol=1e-5, atol=1e-6)
    out = twin(x48, training=False)
    assert out.shape == (2, 440) and out.dtype == "float32"
    assert np.isfinite(out.numpy()).all()
    assert {id(v) for v in twin.weights} == {id(v) for v in small_y.weights}


# A tiny RegNetY (stages 1, 2, 2 of widths 32, 64, 128; group width 8; SE) for the training smoke: every
# grouped conv costs an XLA compile on CPU, and regnety_400mf's 16 would take most of this file's budget.
# (Much narrower and the 2-unit SE squeezes can all start dead behind their ReLU.)
TINY_Y = (5, 32, 24.0, 2.0, 8, 0.25)


def test_two_training_steps():
    keras.utils.set_random_seed(1)
    model = build_regnet("regnety_400mf", 32, spec=TINY_Y)
    assert stage_plan(REGNET_SPECS["regnety_400mf"]._make(TINY_Y)) == ((1, 2, 2), (32, 64, 128), (8, 8, 8))
    assert model.get_layer("block3_unit2_conv2").groups == 16 and encoder_output_dim(model) == 128
    x = tf.random.uniform((4, 32, 32, 3))
    optimizer = keras.optimizers.SGD(0.01)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True)))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss, grads

    loss0, grads = step()
    assert len(grads) == len(model.trainable_variables) > 0
    for var, grad in zip(model.trainable_variables, grads):
        assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0, var.path
    loss1, _ = step()
    assert float(loss1) < float(loss0)


def test_save_load_round_trip(small_y, tmp_path):
    x = np.random.default_rng(2).uniform(size=(2, 32, 32, 3)).astype("float32")
    path = tmp_path / "regnet.keras"
    small_y.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(restored(x, training=False), small_y(x, training=False), rtol=1e-5, atol=1e-6)
    assert restored.get_layer("block1_unit1_conv2").groups == small_y.get_layer("block1_unit1_conv2").groups


def test_registry_options_zero_init_sync_bn_grayscale():
    model = build_encoder("regnetx_400mf", 32, channels=1, zero_init_residual=True, sync_bn=True,
                          name_prefix="online")
    assert model.name == "online" and tuple(model.input.shape) == (None, 32, 32, 1)
    assert encoder_output_dim(model) == 400 and tuple(model.get_layer("stem_conv").kernel.shape) == (3, 3, 1, 32)
    bn3 = [layer for layer in model.layers if layer.name.endswith("_bn3")]
    assert len(bn3) == 22 and all(not np.any(layer.gamma.numpy()) for layer in bn3)
    assert all(layer.synchronized for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    assert np.all(model.get_layer("block1_unit1_bn2").gamma.numpy() == 1)


@pytest.mark.parametrize("kwargs, message", [
    ({"width_multiplier": 2.0}, "width_multiplier"),
    ({"image_size": 8}, "image_size >= 16"),
    ({"image_size": 24, "cifar_stem": False}, "image_size >= 32 or cifar_stem=True"),
    ({"cifar_stem": "yes"}, "cifar_stem"),
    ({"channels": 0}, "channels"),
])
def test_bad_arguments_are_one_line_errors(kwargs, message):
    args = {"name": "regnety_400mf", "image_size": 32, **kwargs}
    with pytest.raises(ValueError, match=message) as info:
        build_encoder(**args)
    assert "\n" not in str(info.value)


def test_registered_in_encoders_and_config_choices():
    for name in TORCHVISION_PARAMS:
        assert name in ENCODERS and name in CHOICES["encoder"]
