"""Layer-norm ResNet patch encoder (CPC v2): no batch norm, patches independent of each other, shapes, saving."""
import keras
import numpy as np
import pytest

from tfssl.encoders import resnet
from tfssl.encoders.resnet_ln import build_resnet_ln

TINY = 0.125  # 8 stem channels


def _patches(n, size, channels=3, seed=0):
    return np.random.default_rng(seed).random((n, size, size, channels)).astype(np.float32)


def _norm_layers(model):
    return [layer for layer in model.layers if "Normalization" in type(layer).__name__]


@pytest.mark.parametrize("norm,kind", [("layer", keras.layers.GroupNormalization),
                                       ("channel", keras.layers.LayerNormalization)])
def test_no_batch_norm_only_per_sample_norms(norm, kind):
    model = build_resnet_ln("resnet18", width_multiplier=TINY, norm=norm)
    norms = _norm_layers(model)
    assert norms and all(type(layer) is kind for layer in norms)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    if norm == "layer":
        assert all(layer.groups == 1 for layer in norms)  # statistics over H, W and C of one sample
    # Same structure as the repo's BN ResNet: one LN where it has a BN (names with bn -> ln).
    reference = resnet.build_encoder("resnet18", 8, width_multiplier=TINY, cifar_stem=True)
    bn_names = sorted(layer.name.replace("_bn", "_ln") for layer in reference.layers
                      if isinstance(layer, keras.layers.BatchNormalization))
    assert sorted(layer.name for layer in norms) == bn_names


@pytest.mark.parametrize("name,width,dim", [("resnet18", TINY, 64), ("resnet50", TINY, 256)])
def test_any_patch_size_gives_one_pooled_vector_per_patch(name, width, dim):
    model = build_resnet_ln(name, channels=3, width_multiplier=width)
    assert tuple(model.input.shape) == (None, None, None, 3)
    assert tuple(model.output.shape) == (None, dim)
    for size in (8, 12) if name != "resnet50" else (8,):
        out = np.asarray(model(_patches(3, size), training=False))
        assert out.shape == (3, dim) and out.dtype == np.float32 and np.all(np.isfinite(out))
    stem = build_resnet_ln("resnet18", channels=1, width_multiplier=TINY, cifar_stem=False)
    assert np.asarray(stem(_patches(2, 32, channels=1))).shape == (2, 64)


def _first_row_after_changing_the_others(model, training):
    x = _patches(4, 8, seed=1)
    before = np.asarray(model(x, training=training))[0]
    y = x.copy()
    y[1:] = _patches(3, 8, seed=2) * 3.0  # other patches of the batch, very different statistics
    after = np.asarray(model(y, training=training))[0]
    return before, after


@pytest.mark.parametrize("norm", ["layer", "channel"])
def test_a_patch_output_does_not_depend_on_the_other_patches(norm):
    # Tolerance 1e-5 absolute: oneDNN's convolutions choose their kernel (and summation order) by batch size, so
    # one patch alone and the same patch in a batch of 4 round differently (measured 1.4e-6); a leak between
    # patches (the positive control below) moves the row by more than 1e-3.
    model = build_resnet_ln("resnet18", width_multiplier=TINY, norm=norm)
    for training in (True, False):
        before, after = _first_row_after_changing_the_others(model, training)
        np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)
        assert np.abs(before).max() > 1e-3
    single = np.asarray(model(_patches(4, 8, seed=1)[:1], training=True))[0]
    np.testing.assert_allclose(single, before, rtol=1e-4, atol=1e-5)


def test_positive_control_batch_norm_leaks_between_patches():
    model = resnet.build_encoder("resnet18", 8, width_multiplier=TINY, cifar_stem=True)
    before, after = _first_row_after_changing_the_others(model, training=True)
    assert np.abs(after - before).max() > 1e-3


def test_save_and_reload_gives_identical_outputs(tmp_path):
    model = build_resnet_ln("resnet18", channels=1, width_multiplier=TINY, norm="layer", name_prefix="patches_enc")
    for weight in model.weights:  # move the norms' scales / shifts off their initial values
        weight.assign(weight.numpy() + np.random.default_rng(0).normal(0, 0.05, weight.shape).astype(np.float32))
    path = str(tmp_path / "encoder.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.name == "patches_enc"
    for size in (8, 16):
        x = _patches(3, size, channels=1, seed=size)
        np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    block = resnet.endpoint_model(loaded, "block2")(_patches(1, 8, channels=1))["block2"]
    assert tuple(block.shape) == (1, 4, 4, 16)


@pytest.mark.parametrize("kwargs,word", [({"name": "resnet7"}, "Unknown encoder"), ({"norm": "batch"}, "norm"),
                                         ({"width_multiplier": 0}, "width_multiplier"),
                                         ({"cifar_stem": None}, "cifar_stem"), ({"epsilon": 0}, "epsilon"),
                                         ({"channels": 0}, "channels")])
def test_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        build_resnet_ln(**kwargs)
