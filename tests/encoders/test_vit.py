"""ViT encoder (MoCo v3's backbone): closed-form position table and parameter count, a full forward pass
against an independent float64 numpy Transformer, the frozen patch projection under a MoCo v3 step,
mixed precision, .keras round trip, one-line config errors and export."""
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.config import TrainConfig
from tfssl.encoders import ENCODERS, VIT_SPECS, build_encoder, build_vit, encoder_output_dim, endpoint_model
from tfssl.encoders.vit import sincos_position_embedding

TINY = (8, 2, 2)  # width, depth, heads


def test_sincos_table_closed_form():
    table = sincos_position_embedding(grid_size=2, dim=8)
    assert table.shape == (4, 8) and table.dtype == np.float32
    w = [1.0, 1.0 / 10000.0 ** 0.5]  # frequencies 1 / 10000^(k / (D/4)), k = 0, 1
    for patch, (row, col) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):  # row-major grid
        want = ([math.sin(col * f) for f in w] + [math.cos(col * f) for f in w]
                + [math.sin(row * f) for f in w] + [math.cos(row * f) for f in w])
        np.testing.assert_allclose(table[patch], want, rtol=1e-6, atol=1e-7)


def _param_count(dim, depth, patch, channels):
    """Weights of a ViT; the sin-cos positions are a constant, not a weight."""
    per_block = 2 * (2 * dim) + (dim * 3 * dim + 3 * dim) + (dim * dim + dim) + (dim * 4 * dim + 4 * dim) \
        + (4 * dim * dim + dim)
    return (patch * patch * channels * dim + dim) + dim + depth * per_block + 2 * dim


@pytest.mark.parametrize("name", sorted(VIT_SPECS))
def test_named_sizes_and_parameter_counts(name):
    dim, depth, heads = VIT_SPECS[name]
    model = build_encoder(name, image_size=28, channels=3, patch_size=7)
    assert name in ENCODERS and encoder_output_dim(model) == dim
    assert model.count_params() == _param_count(dim, depth, 7, 3)
    assert model.get_layer("block1_attn").num_heads == heads
    # ViT-S/16 at 224 px: 22,050,664 weights in timm's DeiT-S, less its 1000-class head (384 * 1000 + 1000)
    # and learned positions (197 * 384), which a fixed sin-cos table replaces.
    if name == "vit_small":
        assert _param_count(384, 12, 16, 3) == 22_050_664 - 385_000 - 197 * 384


def _layer_norm(x, layer):
    gamma, beta = (np.asarray(w, np.float64) for w in layer.get_weights())
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-6) * gamma + beta


def _dense(x, layer):
    kernel, bias = (np.asarray(w, np.float64) for w in layer.get_weights())
    return x @ kernel + bias


def _numpy_vit(model, images, patch, heads):
    """Independent float64 ViT forward pass from the model's weights."""
    kernel, bias = (np.asarray(w, np.float64) for w in model.get_layer("patch_embed").get_weights())
    batch, size, _, channels = images.shape
    grid = size // patch
    patches = images.reshape(batch, grid, patch, grid, patch, channels).transpose(0, 1, 3, 2, 4, 5)
    tokens = patches.reshape(batch, grid * grid, -1) @ kernel.reshape(-1, kernel.shape[-1]) + bias
    dim = tokens.shape[-1]
    cls = np.asarray(model.get_layer("tokens").get_weights()[0], np.float64).reshape(1, 1, dim)
    x = np.concatenate([np.repeat(cls, batch, 0), tokens], 1)
    quarter = dim // 4
    omega = 10000.0 ** (-np.arange(quarter) / quarter)
    pos = [np.zeros(dim)]
    for r in range(grid):
        for c in range(grid):
            pos.append(np.concatenate([np.sin(c * omega), np.cos(c * omega), np.sin(r * omega), np.cos(r * omega)]))
    x = x + np.stack(pos)[None]
    erf = np.vectorize(math.erf)
    index = 1
    while f"block{index}" in {layer.name for layer in model.layers}:
        attn = model.get_layer(f"block{index}_attn")
        h = _layer_norm(x, model.get_layer(f"block{index}_norm1"))
        qkv = _dense(h, attn.qkv).reshape(batch, -1, 3, heads, dim // heads)
        q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # [B, H, N, d]
        logits = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dim // heads)
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        mixed = (weights @ v).transpose(0, 2, 1, 3).reshape(batch, -1, dim)
        x = x + _dense(mixed, attn.proj)
        h = _dense(_layer_norm(x, model.get_layer(f"block{index}_norm2")), model.get_layer(f"block{index}_mlp1"))
        h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))  # exact GELU
        x = x + _dense(h, model.get_layer(f"block{index}_mlp2"))
        index += 1
    return _layer_norm(x, model.get_layer("norm"))[:, 0]


def test_forward_matches_numpy_transformer():
    keras.utils.set_random_seed(0)
    model = build_vit("vit_tiny", image_size=8, channels=3, patch_size=4, spec=TINY)
    rng = np.random.default_rng(0)
    # Non-trivial class token, biases and norms, so each of them is checked.
    for w in model.weights:
        w.assign(w.numpy() + 0.3 * rng.normal(size=w.shape).astype(np.float32))
    images = rng.uniform(size=(3, 8, 8, 3)).astype(np.float32)
    got = model(images, training=False).numpy()
    want = _numpy_vit(model, images.astype(np.float64), patch=4, heads=2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    tokens = endpoint_model(model, ["tokens", "block2"])(images)
    assert tuple(tokens["tokens"].shape) == (3, 5, 8) and tuple(tokens["block2"].shape) == (3, 5, 8)


def test_mixed_precision_output_is_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_vit("vit_tiny", image_size=8, patch_size=4, spec=TINY)
        out = model(np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype(np.float32))
        assert out.dtype == tf.float32 and model.get_layer("block1_attn").compute_dtype == "bfloat16"
        assert np.all(np.isfinite(out.numpy()))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_keras_round_trip(tmp_path):
    model = build_vit("vit_tiny", image_size=8, patch_size=4, spec=TINY, freeze_patch_embed=True)
    path = str(tmp_path / "vit.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    images = np.random.default_rng(2).uniform(size=(2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded(images).numpy(), model(images).numpy(), rtol=1e-6, atol=1e-6)
    assert not loaded.get_layer("patch_embed").trainable


@pytest.mark.parametrize("kwargs, message", [
    (dict(encoder="vit_small", image_size=28, patch_size=16), "multiple of --patch_size=16"),
    (dict(encoder="vit_small", image_size=28, patch_size=7, width_multiplier=0.5), "ResNets only"),
])
def test_config_errors_are_one_line(kwargs, message):
    config = TrainConfig(model_dir="unused", **kwargs)
    with pytest.raises(ValueError, match=message) as error:
        config.validate()
    assert "\n" not in str(error.value)


def test_moco_v3_step_keeps_the_frozen_patch_projection(monkeypatch):
    """One MoCo v3 step on a ViT with a frozen random patch projection: the projection is not trained, the
    Transformer is, and the loss is finite."""
    import tfssl.methods
    from tfssl.training import build_training

    monkeypatch.setattr(tfssl.methods, "build_encoder_from_config", lambda config, channels=3: build_vit(
        config.encoder, config.image_size, patch_size=config.patch_size,
        freeze_patch_embed=config.freeze_patch_embed, spec=TINY))
    config = TrainConfig(model_dir="unused", method="moco_v3", encoder="vit_small", image_size=8, patch_size=4,
                         freeze_patch_embed=True, batch_size=8, optimizer="adamw", learning_rate=0.01,
                         lr_scaling="none", warmup_epochs=0.0, weight_decay=0.1, linear_probe=False,
                         method_options=dict(temperature=0.2, proj_dim=8, proj_hidden_dim=16, proj_layers=3,
                                             pred_hidden_dim=0, tau_base=0.996))
    config.validate()
    model, _ = build_training(config, tf.distribute.get_strategy(), None, steps_per_epoch=1, total_steps=4)
    encoder = model.encoder
    assert "patch_embed" not in {w.path.split("/")[0] for w in encoder.trainable_weights}
    before = {w.path: w.numpy().copy() for w in encoder.weights}
    rng = np.random.default_rng(3)
    views = tuple(tf.constant(rng.uniform(size=(8, 8, 8, 3)), tf.float32) for _ in range(2))
    logs = model.train_step({"views": views, "labels": tf.zeros([8], tf.int32)})
    assert np.isfinite(float(logs["loss"]))
    for w in encoder.weights:
        moved = not np.array_equal(w.numpy(), before[w.path])
        assert moved == (not w.path.startswith("patch_embed/")), w.path


@pytest.mark.slow  # a real MoCo v3 ViT run and export (about 1-2 min on 2 cores); the ViT parts are tested above
def test_moco_v3_vit_run_exports(tmp_path):
    """A MoCo v3 run on the real vit_tiny restores from its checkpoint and serves the same embeddings."""
    from tfssl.augment import center_resize
    from tfssl.export import export_encoder
    from tfssl.methods import build_method
    from tfssl.training import CHECKPOINT_DIR, FLAGS_FILE, restore_model

    model_dir = str(tmp_path / "run")
    os.makedirs(model_dir)
    config = TrainConfig(model_dir=model_dir, method="moco_v3", encoder="vit_tiny", image_size=16, patch_size=8,
                         freeze_patch_embed=True, linear_probe=False,
                         method_options=dict(proj_layers=2, proj_dim=8, proj_hidden_dim=16, pred_hidden_dim=0,
                                             temperature=0.5, tau_base=0.996))
    with open(os.path.join(model_dir, FLAGS_FILE), "w") as f:
        f.write(config.to_json())
    trained = build_method(config, total_steps=10)
    rng = np.random.default_rng(4)
    for w in trained.encoder.weights:
        w.assign(w.numpy() + 0.05 * rng.normal(size=w.shape).astype(np.float32))
    tf.train.Checkpoint(model=trained).save(os.path.join(model_dir, CHECKPOINT_DIR, "ckpt"))
    model, _, _ = restore_model(model_dir)
    for a, b in zip(trained.encoder.weights, model.encoder.weights):
        np.testing.assert_array_equal(b.numpy(), a.numpy(), err_msg=a.path)
    version_dir = export_encoder(model.encoder, str(tmp_path / "serving"), 16, warmup=False)
    images = rng.integers(0, 256, size=(2, 28, 28, 1)).astype(np.uint8)
    served = tf.saved_model.load(version_dir).signatures["serving_default"](images=tf.constant(images, tf.float32))
    want = trained.encoder(center_resize(tf.constant(images), 16), training=False).numpy()
    np.testing.assert_allclose(served["embedding"].numpy(), want, rtol=1e-5, atol=1e-5)
