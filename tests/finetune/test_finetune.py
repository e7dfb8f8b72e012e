"""Fine-tuning: freezing is honoured, outputs are consistent, an informative encoder beats random init."""
import dataclasses
import json
import os

import keras
import numpy as np
import pytest

from tfssl.finetune import (FineTuneConfig, build_classifier, fine_tune, freeze_up_to, load_encoder,
                            parse_fine_tune_after_block)
from tfssl.finetune.train import resolve_features


def stage_of(name):
    for stage in ("stem", "block1", "block2", "block3", "block4"):
        if name == stage or name.startswith(stage + "_"):
            return stage
    return None


def test_freezing_up_to_block2_keeps_those_weights_and_trains_the_rest(simclr_export):
    classifier = build_classifier(load_encoder(simclr_export), num_classes=10)
    frozen = freeze_up_to(classifier, "block2")
    frozen_names = {layer.name for layer in frozen}
    # By name, independently of the graph walk: exactly the stem / block1 / block2 layers (and the input).
    expected = {layer.name for layer in classifier.layers if stage_of(layer.name) in ("stem", "block1", "block2")}
    assert frozen_names == expected
    before = {layer.name: [w.numpy().copy() for w in layer.weights] for layer in classifier.layers}
    classifier.compile(optimizer=keras.optimizers.SGD(0.1),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (32, 16, 16, 3)).astype(np.float32)
    classifier.fit(x, rng.integers(0, 10, 32), batch_size=16, epochs=1, verbose=0)
    for layer in classifier.layers:
        if not layer.weights:
            continue
        same = all(np.array_equal(w.numpy(), old) for w, old in zip(layer.weights, before[layer.name]))
        if layer.name in expected:
            assert same, f"frozen layer {layer.name} changed (weights or BN statistics)"
        elif stage_of(layer.name) in ("block3", "block4") or layer.name == "classifier":
            assert not same, f"trainable layer {layer.name} did not change"


@pytest.mark.parametrize("value, expected", [("none", "none"), ("", "none"), (-1, "none"), ("0", "stem"),
                                             (2, "block2"), ("Block4", "block4")])
def test_fine_tune_after_block_spellings(value, expected):
    assert parse_fine_tune_after_block(value) == expected


@pytest.mark.parametrize("bad", ["block5", "5", "pooled", "-2"])
def test_fine_tune_after_block_errors(bad):
    with pytest.raises(ValueError, match="fine_tune_after_block"):
        parse_fine_tune_after_block(bad)


def test_zero_init_head_starts_at_uniform_predictions(simclr_export):
    classifier = build_classifier(load_encoder(simclr_export), num_classes=10, zero_init=True)
    logits = classifier(np.random.default_rng(0).uniform(0, 1, (4, 16, 16, 3)).astype(np.float32))
    np.testing.assert_array_equal(logits.numpy(), np.zeros((4, 10)))


def test_transfer_classifier_outputs_are_consistent(transfer_classifier, tiny):
    """result.json, classifier.keras and the reported accuracies agree with an independent recount."""
    from tfssl.augment import center_resize

    out, result = transfer_classifier
    with open(os.path.join(out, "result.json")) as f:
        saved = json.load(f)
    assert saved["num_labelled"] == 1200 and saved["config"]["label_fraction"] == 1.0
    vals = [row["val_accuracy"] for row in saved["history"]]
    assert saved["selected_epoch"] == int(np.argmax(vals)) + 1 and saved["val_accuracy"] == max(vals)
    model = keras.saving.load_model(os.path.join(out, "classifier.keras"))
    test = FineTuneConfig().load_split(tiny["test"])
    x, y = zip(*[(image, label) for image, label, _ in test.dataset.as_numpy_iterator()])
    predicted = model.predict(center_resize(np.stack(x), 16), verbose=0).argmax(1)
    assert abs(float(np.mean(predicted == np.array(y))) - saved["test_accuracy"]) < 1e-6
    assert saved["test_accuracy"] > 0.35, "a supervised tiny classifier should be far above chance (0.1)"


def test_finetune_from_informative_encoder_beats_random_init(transfer_classifier, tiny, tmp_path):
    """10% of the labels of a slice, from an informative encoder vs the same architecture at random init.

    The informative encoder is the transfer classifier's (trained with labels of a disjoint train slice;
    a SimCLR run of a few seconds is not reliably better than random at this size). Both runs share
    every setting and seed: same labelled subset, budget, augmentation, optimizer and head init.
    """
    out, _ = transfer_classifier
    common = dict(train_split=tiny["finetune"], val_split=tiny["val"], test_split=tiny["test"], label_fraction=0.1,
                  epochs=2, batch_size=32, learning_rate=0.05, seed=0)
    pretrained = fine_tune(FineTuneConfig(encoder=out, output_dir=str(tmp_path / "pre"), **common), verbose=0)
    scratch = fine_tune(FineTuneConfig(encoder=out, random_init=True, output_dir=str(tmp_path / "rnd"), **common),
                        verbose=0)
    for r in (pretrained, scratch):
        assert r["num_labelled"] == 300 and r["labels_per_class"] == [30] * 10
        assert r["source"]["feature_dim"] == 64 and r["source"]["image_size"] == 16
    assert scratch["source"]["random_init"] and not pretrained["source"]["random_init"]
    print("pretrained", pretrained["val_accuracy"], pretrained["test_accuracy"],
          "random", scratch["val_accuracy"], scratch["test_accuracy"])
    assert pretrained["val_accuracy"] > scratch["val_accuracy"] + 0.1
    assert pretrained["test_accuracy"] > scratch["test_accuracy"] + 0.1


def test_random_init_without_encoder_uses_the_named_architecture(tiny, tmp_path):
    config = FineTuneConfig(random_init=True, **tiny["encoder"], output_dir=str(tmp_path), head_layers=1)
    with pytest.raises(ValueError, match="--head_layers needs an --encoder"):
        fine_tune(config, verbose=0)


def test_random_init_vit_takes_its_patch_size(tmp_path):
    config = FineTuneConfig(random_init=True, encoder_name="vit_tiny", patch_size=4, image_size=16,
                            output_dir=str(tmp_path))
    features, source = resolve_features(config)
    # ViT-Ti: width 192; a 4-px patch projection of RGB; (16/4)^2 patches + the class token.
    assert features.get_layer("patch_embed").kernel.shape == (4, 4, 3, 192)
    assert features.get_layer("tokens").output.shape[1:] == (17, 192)
    assert source["patch_size"] == 4 and source["feature_dim"] == 192 and source["image_size"] == 16
    with pytest.raises(ValueError, match="multiple of --patch_size=5"):
        resolve_features(dataclasses.replace(config, patch_size=5))


@pytest.mark.parametrize("changes, message", [
    (dict(val_split="test[:100]"), "must not come from the test split"),
    (dict(label_fraction=0.0), "label_fraction"),
    (dict(fine_tune_after_block="block9"), "fine_tune_after_block"),
    (dict(output_dir=""), "--output_dir is required"),
    (dict(random_init=False), "pass --encoder="),
    (dict(train_split="training"), "training"),
    (dict(patch_size=0), "--patch_size must be > 0"),
])
def test_config_errors_are_one_line(changes, message, tmp_path):
    base = dict(random_init=True, output_dir=str(tmp_path))
    with pytest.raises(ValueError, match=message) as info:
        FineTuneConfig(**{**base, **changes}).validate()
    assert "\n" not in str(info.value)
