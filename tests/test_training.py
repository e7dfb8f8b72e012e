"""`tfssl.training.pretrain` with the option combinations the CLI exposes (tiny runs, in process)."""
import json
import os

import keras
import numpy as np
import pytest
from slowness import default_run

from tfssl.config import TrainConfig
from tfssl.training import pretrain, restore_model

TINY = dict(dataset="fashion_mnist", train_split="train[:128]", image_size=12, width_multiplier=0.125,
            batch_size=32, train_steps=3, log_every=1, warmup_epochs=0,
            method_options={"proj_dim": 8, "temperature": 0.5})


@pytest.fixture(autouse=True)
def float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def initial_encoder_weights(config):
    from tfssl.methods import build_method

    keras.utils.set_random_seed(config.seed)
    return [w.copy() for w in build_method(config, num_classes=10).encoder.get_weights()]


OPTIONS = ("mixed_float16", "mixed_bfloat16", "device_augment", "jit_compile", "adamw")
OPTION_VALUES = {"mixed_float16": dict(mixed_precision="mixed_float16"),
                 "mixed_bfloat16": dict(mixed_precision="mixed_bfloat16"), "device_augment": dict(augment_on="device"),
                 "jit_compile": dict(jit_compile=True), "adamw": dict(optimizer="adamw", learning_rate=1e-3)}


# Default: loss scaling and device augmentation; bfloat16 (emulated on CPUs without it), XLA and AdamW: -m slow.
@pytest.mark.parametrize("name", default_run(OPTIONS, ("mixed_float16", "device_augment")))
def test_pretrain_updates_the_encoder(name, tmp_path):
    options = OPTION_VALUES[name]
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
    # The method's architecture options too (SimCLR's head), named by their flag.
    wider = {**TINY, "method_options": {**TINY["method_options"], "proj_dim": 16}}
    with pytest.raises(ValueError, match="--simclr_proj_dim=16 differs from the checkpointed run's 8"):
        pretrain(TrainConfig(model_dir=str(tmp_path), **wider), verbose=0)


# The method fields of TrainConfig before per-method options, at their defaults then: a run's flags.json
# held every one of them, flat, whatever its method.
OLD_METHOD_FIELDS = dict(temperature=0.5, proj_layers=2, proj_dim=128, keep_proj_layer=0, proj_hidden_dim=0,
                         pred_hidden_dim=0, tau_base=0.996, fix_predictor_lr=False, moco_queue_size=65536,
                         moco_momentum=0.999, moco_bn_splits=1, instdis_negatives=4096, instdis_momentum=0.5,
                         instdis_loss="nce", instdis_head_bn=False, bt_lambda=0.0051, vicreg_sim_weight=25.0,
                         vicreg_var_weight=25.0, vicreg_cov_weight=1.0)


def _old_flags_json(config, **method_fields):
    """`config` as a flags.json written before per-method options (no method_options, flat method fields)."""
    data = json.loads(config.to_json())
    del data["method_options"]
    return json.dumps({**data, **OLD_METHOD_FIELDS, **method_fields}, indent=2, sort_keys=True)


@pytest.mark.parametrize("method, flat, want", [
    ("moco_v2", dict(moco_queue_size=128, temperature=0.3),
     dict(queue_size=128, temperature=0.3, momentum=0.999, bn_splits=1, proj_layers=2, proj_dim=128,
          proj_hidden_dim=0)),
    # The old defaults, not the paper defaults the options have now: the run was trained with them.
    ("simsiam", dict(proj_dim=64),
     dict(proj_layers=2, proj_dim=64, proj_hidden_dim=0, pred_hidden_dim=0, fix_predictor_lr=False)),
    ("simclr", dict(keep_proj_layer=1, proj_layers=3),
     dict(temperature=0.5, proj_layers=3, proj_dim=128, proj_hidden_dim=0, keep_proj_layer=1)),
    ("instdis", dict(instdis_negatives=16, instdis_loss="softmax", instdis_head_bn=True, temperature=0.07),
     dict(negatives=16, loss="softmax", head_bn=True, temperature=0.07, momentum=0.5, proj_dim=128)),
    ("barlow_twins", dict(bt_lambda=0.01), dict(lambd=0.01, proj_layers=2, proj_dim=128, proj_hidden_dim=0)),
    ("vicreg", dict(vicreg_var_weight=10.0), dict(sim_weight=25.0, var_weight=10.0, cov_weight=1.0)),
    ("byol", dict(tau_base=0.99, pred_hidden_dim=32), dict(tau_base=0.99, pred_hidden_dim=32, proj_hidden_dim=0)),
    # MoCo v1's head was one layer whatever --proj_layers said (default 2); its options accept only 1.
    ("moco_v1", dict(temperature=0.07), dict(temperature=0.07, proj_layers=1, queue_size=65536)),
], ids=["moco_v2", "simsiam", "simclr", "instdis", "barlow_twins", "vicreg", "byol", "moco_v1"])
def test_flags_json_before_per_method_options_loads_the_method_options(method, flat, want):
    from tfssl.methods.registry import options_class

    text = _old_flags_json(TrainConfig(model_dir="runs/old", method=method, batch_size=32), **flat)
    config = TrainConfig.from_json(text)
    options = config.options()
    assert type(options) is options_class(method)
    assert {name: getattr(options, name) for name in want} == want
    config.validate()
    # Written again, it is the new format and reads back the same.
    assert "method_options" in json.loads(config.to_json())
    assert TrainConfig.from_json(config.to_json()).options() == options


def test_resume_with_a_flags_json_from_before_per_method_options(tmp_path):
    """A run whose flags.json predates per-method options resumes with the same options, set as flags now;
    a different head is refused as before."""
    from tfssl.training import FLAGS_FILE

    pretrain(TrainConfig(model_dir=str(tmp_path), **{**TINY, "train_steps": 2}), verbose=0)
    path = os.path.join(tmp_path, FLAGS_FILE)
    with open(path) as f:
        saved = TrainConfig.from_json(f.read())
    with open(path, "w") as f:
        f.write(_old_flags_json(saved, proj_dim=8, temperature=0.5))
    with pytest.raises(ValueError, match="--simclr_proj_dim=128 differs from the checkpointed run's 8"):
        pretrain(TrainConfig(model_dir=str(tmp_path), **{**TINY, "method_options": {"temperature": 0.5}}), verbose=0)
    result = pretrain(TrainConfig(model_dir=str(tmp_path), **TINY), verbose=0)
    assert result["step"] == 3


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
