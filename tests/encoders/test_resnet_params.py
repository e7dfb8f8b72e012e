"""Parameter counts of the ResNet encoders against independent references.

References:
  * torchvision's published parameter counts (11,689,512 / 21,797,672 / 25,557,032 / 44,549,160 /
    60,192,808 for resnet18/34/50/101/152) minus their 1000-way fc layer (512*1000+1000 or
    2048*1000+1000). torchvision counts only parameters (conv kernels, BN gamma/beta), which are
    exactly our *trainable* weights; BN moving mean/variance are buffers there and
    non-trainable weights here.
  * keras.applications.ResNet50(include_top=False), an independent implementation. It gives conv
    layers a bias (23,587,712 total); ours has none (the following BN has a shift), so our total
    must equal its total minus its conv biases.
  * a closed-form count written from He et al. 2016, Table 1.
"""

import keras
import numpy as np
import pytest

from tfssl.encoders import ENCODERS, RESNET_SPECS, build_encoder, encoder_output_dim

TORCHVISION_NO_FC = {
    "resnet18": 11_689_512 - (512 * 1000 + 1000),
    "resnet34": 21_797_672 - (512 * 1000 + 1000),
    "resnet50": 25_557_032 - (2048 * 1000 + 1000),
    "resnet101": 44_549_160 - (2048 * 1000 + 1000),
    "resnet152": 60_192_808 - (2048 * 1000 + 1000),
}


def _count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def _closed_form(depth_layers, bottleneck, width=1.0, in_channels=3, cifar_stem=False):
    """(trainable, non_trainable) counts from the architecture table, by hand."""
    conv, bn_channels = 0, 0
    stem = int(64 * width + 1e-6)
    conv += (3 * 3 if cifar_stem else 7 * 7) * in_channels * stem
    bn_channels += stem
    cin = stem
    for stage, n in enumerate(depth_layers):
        mid = int(64 * 2**stage * width + 1e-6)
        cout = 4 * mid if bottleneck else mid
        for unit in range(n):
            if bottleneck:
                conv += cin * mid + 9 * mid * mid + mid * cout
                bn_channels += mid + mid + cout
            else:
                conv += 9 * cin * mid + 9 * mid * mid
                bn_channels += mid + mid
            down = unit == 0 and (stage > 0 or cin != cout)
            if down:
                conv += cin * cout
                bn_channels += cout
            cin = cout
    return conv + 2 * bn_channels, 2 * bn_channels


def _counts(model):
    return _count(model.trainable_weights), _count(model.non_trainable_weights)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_trainable_count_matches_torchvision_and_closed_form(name):
    model = build_encoder(name, 224)
    trainable, non_trainable = _counts(model)
    assert trainable == TORCHVISION_NO_FC[name]
    assert encoder_output_dim(model) == (512 if name == "resnet18" else 2048)
    block, depth = RESNET_SPECS[name]
    assert (trainable, non_trainable) == _closed_form(depth, block == "bottleneck")


def test_literal_reference_counts():
    # The figures quoted for these models, kept literal so a typo in the table above cannot hide.
    assert TORCHVISION_NO_FC["resnet18"] == 11_176_512
    assert TORCHVISION_NO_FC["resnet50"] == 23_508_032


def test_resnet50_total_matches_keras_applications_without_conv_bias():
    ours = build_encoder("resnet50", 224, cifar_stem=False)
    ref = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(224, 224, 3))
    assert ref.count_params() == 23_587_712
    conv_bias = sum(
        int(np.prod(layer.bias.shape)) for layer in ref.layers if isinstance(layer, keras.layers.Conv2D)
    )
    assert ours.count_params() == ref.count_params() - conv_bias == 23_561_152
    # Same BN statistics (non-trainable) in both implementations.
    assert _count(ours.non_trainable_weights) == _count(ref.non_trainable_weights) == 53_120


@pytest.mark.parametrize(
    "name",
    # 101/152 take several seconds just to create ~500 layers: run them with -m slow.
    ["resnet34", pytest.param("resnet101", marks=pytest.mark.slow), pytest.param("resnet152", marks=pytest.mark.slow)],
)
def test_deeper_models_match_closed_form(name):
    # Small image: parameter counts do not depend on it, and building is faster.
    model = build_encoder(name, 32, cifar_stem=False)
    block, depth = RESNET_SPECS[name]
    assert _counts(model) == _closed_form(depth, block == "bottleneck")
    assert _counts(model)[0] == TORCHVISION_NO_FC[name]


@pytest.mark.parametrize(
    "name,width", [("resnet18", 0.25), ("resnet18", 0.5), ("resnet50", 0.25), ("resnet50", 0.5)]
)
def test_width_scaled_grayscale_cifar_counts(name, width):
    model = build_encoder(name, 16, channels=1, width_multiplier=width)
    block, depth = RESNET_SPECS[name]
    expected = _closed_form(depth, block == "bottleneck", width, in_channels=1, cifar_stem=True)
    assert _counts(model) == expected


def test_registry_matches_paper_table():
    assert ENCODERS[:5] == ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
    depth = {name: (2 if block == "basic" else 3) * sum(layers) + 2 for name, (block, layers) in RESNET_SPECS.items()}
    assert depth == {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101, "resnet152": 152}
