"""Reference-code details that `build_method` / `pretrain` must reproduce (issue: match the papers).

- SimSiam and MoCo v3 end the projector with a BN without scale or shift; MoCo v3's ViT predictor too.
- SimCLR keeps its last BN's scale (SimCLR's reference `BatchNormRelu(center=False)`); BYOL has no last BN.
- `--zero_init_residual` starts the last BN gamma of every residual branch at 0.
- A checkpoint whose head BN has other parameters than the model refuses to resume (no silent drop).
"""
import json
import os

import numpy as np
import pytest

from tfssl.config import TrainConfig
from tfssl.methods import build_method

SMALL = dict(model_dir="unused", image_size=16, width_multiplier=0.125)
HEADS = dict(proj_layers=2, proj_dim=8, proj_hidden_dim=16)
OPTIONS = {
    "simsiam": dict(HEADS, pred_hidden_dim=16, fix_predictor_lr=False),
    "moco_v3": dict(HEADS, pred_hidden_dim=16, temperature=0.5, tau_base=0.996),
    "byol": dict(HEADS, pred_hidden_dim=16, tau_base=0.996),
    "simclr": dict(HEADS, temperature=0.5),
}


def _config(method, **settings):
    """A small `TrainConfig` of `method` (2-layer heads 16 -> 8, predictors 16 wide)."""
    return TrainConfig(method=method, **{**SMALL, **settings}, method_options=OPTIONS[method])


def _bn_params(head, block):
    return sorted(w.name for w in head.blocks[block][-1].trainable_weights)


@pytest.mark.parametrize("method, projector_last, predictor_last", [
    ("simsiam", [], ["bias", "kernel"]),
    ("moco_v3", [], ["bias", "kernel"]),
    ("byol", ["bias", "kernel"], ["bias", "kernel"]),
    ("simclr", ["gamma"], None),
])
def test_last_head_layers_per_method(method, projector_last, predictor_last):
    model = build_method(_config(method), total_steps=10)
    assert _bn_params(model.projector, -1) == projector_last
    if predictor_last is not None:
        assert _bn_params(model.predictor, -1) == predictor_last


def test_moco_v3_vit_predictor_ends_with_a_parameter_free_bn():
    config = _config("moco_v3", encoder="vit_tiny", patch_size=8, width_multiplier=1.0)
    model = build_method(config, total_steps=10)
    last = model.predictor.blocks[-1]
    assert [type(layer).__name__ for layer in last] == ["Dense", "BatchNormalization"]
    assert not last[0].use_bias and not last[1].trainable_weights


@pytest.mark.parametrize("encoder, last_bn", [("resnet18", "bn2"), ("resnet50", "bn3")])
def test_zero_init_residual_zeroes_the_last_gamma_of_each_branch(encoder, last_bn):
    on = build_method(_config("simsiam", encoder=encoder, zero_init_residual=True)).encoder
    off = build_method(_config("simsiam", encoder=encoder)).encoder
    gammas = [w for w in on.weights if w.path.endswith(f"_{last_bn}/gamma")]
    assert len(gammas) == (8 if encoder == "resnet18" else 16)
    assert all(not np.any(w.numpy()) for w in gammas)
    others = [w for w in on.weights if w.path.endswith("/gamma") and not w.path.endswith(f"_{last_bn}/gamma")]
    assert others and all(np.all(w.numpy() == 1) for w in others)
    assert all(np.all(w.numpy() == 1) for w in off.weights if w.path.endswith("/gamma"))


def test_resume_refuses_a_checkpoint_whose_head_bn_differs(tmp_path, monkeypatch):
    """Written with the old head (last BN with a learnable scale), resumed by the current code: one-line error."""
    import tfssl.methods.siamese as siamese
    from tfssl.training import pretrain, restore_model

    config = dict(model_dir=str(tmp_path), method="simsiam", dataset="fashion_mnist", train_split="train[:64]",
                  image_size=12, width_multiplier=0.125, batch_size=32, train_steps=1, warmup_epochs=0,
                  optimizer="sgd", learning_rate=0.05,
                  method_options=dict(proj_layers=2, proj_dim=8, proj_hidden_dim=0, pred_hidden_dim=0,
                                      fix_predictor_lr=False))
    old_heads = siamese.default_heads

    def heads_with_scaled_last_bn(*args, **kwargs):
        projector, predictor = old_heads(*args, **kwargs)
        projector.last_bn_scale = True  # not built yet: the last BN gets its gamma back
        return projector, predictor

    with monkeypatch.context() as patch:
        patch.setattr(siamese, "default_heads", heads_with_scaled_last_bn)
        pretrain(TrainConfig(**config), verbose=0)
    with pytest.raises(ValueError, match="projector/bn1 parameters") as info:
        pretrain(TrainConfig(**{**config, "train_steps": 2}), verbose=0)
    assert "\n" not in str(info.value) and "new --model_dir" in str(info.value)
    # Evaluation and export still read the run: the encoder is unchanged.
    model, _, _ = restore_model(str(tmp_path))
    assert model.encoder is not None
    with open(os.path.join(tmp_path, "flags.json")) as f:
        assert json.load(f)["weight_decay_mode"] == "auto"
