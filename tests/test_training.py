"""`tfssl.training.pretrain` with the option combinations the CLI exposes (tiny runs, in process)."""
import os

import keras
import numpy as np
import pytest

from tfssl.config import TrainConfig
from tfssl.training import pretrain, restore_model

TINY = dict(dataset="fashion_mnist", train_split="train[:128]", image_size=12, width_multiplier=0.125,
            batch_size=32, train_steps=3, log_every=1, proj_dim=8, warmup_epochs=0)


@pytest.fixture(autouse=True)
def float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def initial_encoder_weights(config):
    from tfssl.methods import build_method

    keras.utils.set_random_seed(config.seed)
    return [w.copy() for w in build_method(config, num_classes=10).encoder.get_weights()]


@pytest.mark.parametrize("options", [
    dict(mixed_precision="mixed_float16"),
    dict(mixed_precision="mixed_bfloat16"),
    dict(augment_on="device"),
    dict(jit_compile=True),
    dict(optimizer="adamw", learning_rate=1e-3),
])
def test_pretrain_updates_the_encoder(options, tmp_path):
    config = TrainConfig(model_dir=str(tmp_path), **TINY, **options)
    before = initial_encoder_weights(config)
    result = pretrain(config, verbose=0)
    assert result["step"] == 3 and np.isfinite(result["loss"])
    model, _, _ = restore_model(str(tmp_path))
    after = model.encoder.get_weights()
    kernels = [i for i, w in enumerate(before) if w.ndim == 4]
    changed = [not np.allclose(before[i], after[i]) for i in kernels]
    assert all(changed), f"{sum(changed)}/{len(kernels)} conv kernels changed"


def test_resume_refuses_architecture_change(tmp_path):
    pretrain(TrainConfig(model_dir=str(tmp_path), **TINY), verbose=0)
    with pytest.raises(ValueError, match="width_multiplier"):
        pretrain(TrainConfig(model_dir=str(tmp_path), **{**TINY, "width_multiplier": 0.25}), verbose=0)


def test_batch_larger_than_split_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="larger than the 128 examples"):
        pretrain(TrainConfig(model_dir=str(tmp_path), **{**TINY, "batch_size": 256}), verbose=0)
    assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


def test_resume_from_checkpoint_without_metric_state(tmp_path, monkeypatch, caplog, capsys):
    """Checkpoints written before metric means were saved still resume (weights, optimizer, step)."""
    import tfssl.training as training

    full = training.checkpointed_objects
    monkeypatch.setattr(training, "checkpointed_objects",
                        lambda model, state: {k: v for k, v in full(model, state).items() if k != "metric_state"})
    pretrain(TrainConfig(model_dir=str(tmp_path), **{**TINY, "train_steps": 2}), verbose=0)
    monkeypatch.setattr(training, "checkpointed_objects", full)
    capsys.readouterr()
    with caplog.at_level("WARNING"):
        result = pretrain(TrainConfig(model_dir=str(tmp_path), **{**TINY, "train_steps": 4}), verbose=1)
    assert "at step 2/4" in capsys.readouterr().out
    assert result["step"] == 4
    assert any("no metric state" in r.getMessage() for r in caplog.records)


def test_resume_from_checkpoint_without_head_layers(tmp_path, monkeypatch, caplog):
    """Checkpoints written before ProjectionHead exposed its layers (no head BN statistics) still resume."""
    from tfssl.heads import ProjectionHead

    with monkeypatch.context() as patch:
        patch.setattr(ProjectionHead, "_trackable_children", keras.layers.Layer._trackable_children)
        pretrain(TrainConfig(model_dir=str(tmp_path), **{**TINY, "train_steps": 2}), verbose=0)
    with caplog.at_level("WARNING"):
        result = pretrain(TrainConfig(model_dir=str(tmp_path), **{**TINY, "train_steps": 3}), verbose=0)
    assert result["step"] == 3
    assert any("predates checkpointed head layers" in r.getMessage() for r in caplog.records)
    model, _, path = restore_model(str(tmp_path))
    # Written by the current code: the head's moving statistics are in the new checkpoint.
    import tensorflow as tf

    names = {name for name, _ in tf.train.list_variables(path)}
    assert any(name.startswith("model/projector/block0_bn0/moving_mean") for name in names)
