"""`load_encoder` from every source: weights really load, train, and batch norm obeys `training`."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.finetune import load_encoder, source_kind


def images(n=8, seed=0, size=16):
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 3)).astype(np.float32)


def assert_one_step_trains_everything(model, lr=0.1):
    """Every trainable variable gets a non-zero gradient and moves by exactly -lr * gradient (plain SGD)."""
    x = images()
    rng = np.random.default_rng(1)
    head = tf.constant(rng.normal(size=(int(model.output.shape[-1]), 5)).astype(np.float32))
    labels = tf.constant(rng.integers(0, 5, size=len(x)))
    variables = model.trainable_variables
    assert variables, "no trainable variables"
    before = [v.numpy().copy() for v in variables]
    with tf.GradientTape() as tape:
        logits = tf.matmul(model(x, training=True), head)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    grads = tape.gradient(loss, variables)
    for v, g in zip(variables, grads):
        assert g is not None, f"no gradient for {v.path}"
        assert np.any(np.asarray(g) != 0), f"zero gradient for {v.path}"
    keras.optimizers.SGD(lr).apply_gradients(zip(grads, variables))
    for v, old, g in zip(variables, before, grads):
        np.testing.assert_allclose(v.numpy(), old - lr * np.asarray(g), rtol=1e-5, atol=1e-6, err_msg=v.path)
        assert np.any(v.numpy() != old), f"{v.path} did not change"


def test_source_kinds(simclr_run, simclr_export, tmp_path):
    assert source_kind(simclr_run) == "run"
    assert source_kind(os.path.join(simclr_run, "checkpoints", "ckpt-2")) == "checkpoint"
    assert source_kind(simclr_export) == "export"
    assert source_kind(os.path.dirname(simclr_export)) == "export"  # model dir -> newest version
    with pytest.raises(FileNotFoundError, match="does not exist"):
        source_kind(str(tmp_path / "missing"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a .keras model"):
        source_kind(str(tmp_path / "notes.txt"))


def resumed_method(run):
    """The run's model restored the way a resumed training run restores it (model + optimizer)."""
    from tfssl.training import CHECKPOINT_DIR, build_training, load_run_config

    config = load_run_config(run)
    num_classes = config.load_split(config.train_split).num_classes
    model, _ = build_training(config, tf.distribute.get_strategy(), num_classes, steps_per_epoch=4, total_steps=2)
    latest = tf.train.latest_checkpoint(os.path.join(run, CHECKPOINT_DIR))
    tf.train.Checkpoint(model=model, optimizer=model.optimizer).restore(latest).expect_partial()
    return model


def test_run_source_keeps_the_simclrv2_head_layer_and_trains(simclr_run):
    method = resumed_method(simclr_run)
    model = load_encoder(simclr_run)
    # keep_proj_layer=1: encoder + first head layer (Dense -> BN -> ReLU), width = encoder width 64.
    assert [layer.name for layer in model.layers][-3:] == ["dense0", "bn0", "relu0"]
    x = images()
    h = method.encoder(x, training=False).numpy()
    dense, bn = method.projector.blocks[0][0], method.projector.blocks[0][1]
    assert not np.allclose(dense.kernel.numpy(), build_fresh_head_kernel(simclr_run))
    # Independent inference-mode computation of the kept layer with numpy, from the trained weights.
    z = h @ dense.kernel.numpy()
    z = (z - bn.moving_mean.numpy()) / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    z = np.maximum(z * bn.gamma.numpy() + bn.beta.numpy(), 0)
    np.testing.assert_allclose(model(x, training=False).numpy(), z, rtol=1e-4, atol=1e-5)
    assert load_encoder(simclr_run, head_layers=0).output.shape[-1] == 64
    assert_one_step_trains_everything(model)


def build_fresh_head_kernel(run):
    """The head's first kernel at initialisation (what a restore that missed the head would leave)."""
    from tfssl.methods import build_method
    from tfssl.training import load_run_config

    config = load_run_config(run)
    keras.utils.set_random_seed(config.seed)
    return build_method(config, num_classes=10).projector.blocks[0][0].kernel.numpy()


def test_checkpoint_prefix_and_keras_file_give_the_same_encoder(simclr_run, tmp_path):
    x = images()
    reference = load_encoder(simclr_run, head_layers=0)(x, training=False).numpy()
    from_ckpt = load_encoder(os.path.join(simclr_run, "checkpoints", "ckpt-2"), head_layers=0)
    np.testing.assert_allclose(from_ckpt(x, training=False).numpy(), reference, rtol=1e-5, atol=1e-6)

    method = resumed_method(simclr_run)
    method_file = str(tmp_path / "simclr.keras")
    method.save(method_file)  # the whole SSL method
    from_method = load_encoder(method_file)
    assert from_method.output.shape[-1] == 64 and from_method.layers[-1].name == "relu0"
    np.testing.assert_allclose(from_method(x, training=False).numpy(),
                               load_encoder(simclr_run)(x, training=False).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(load_encoder(method_file, head_layers=0)(x, training=False).numpy(), reference,
                               rtol=1e-5, atol=1e-6)
    encoder_file = str(tmp_path / "encoder.keras")
    method.encoder.save(encoder_file)  # a bare encoder
    from_encoder = load_encoder(encoder_file)
    np.testing.assert_allclose(from_encoder(x, training=False).numpy(), reference, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="without a projection head"):
        load_encoder(encoder_file, head_layers=1)
    assert_one_step_trains_everything(from_method)
    assert_one_step_trains_everything(from_encoder)


def test_export_source_is_trainable_keras_not_a_frozen_graph(simclr_run, simclr_export):
    from tfssl.export import ExportedEncoder

    x = images()
    model = load_encoder(os.path.dirname(simclr_export))  # model dir: newest version
    served = ExportedEncoder(simclr_export)(x).numpy()
    np.testing.assert_allclose(model(x, training=False).numpy(), served, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(served, load_encoder(simclr_run, head_layers=0)(x, training=False).numpy(),
                               rtol=1e-4, atol=1e-5)
    assert all(isinstance(v, keras.Variable) for v in model.trainable_variables)
    # The documented inference alternative: the SavedModel as a Keras layer, fed raw 0..255 pixels.
    layer = keras.layers.TFSMLayer(simclr_export, call_endpoint="serving_default")
    pixels = np.round(x * 255.0)
    np.testing.assert_allclose(layer(pixels)["embedding"].numpy(), model(pixels / 255.0, training=False).numpy(),
                               rtol=1e-4, atol=1e-4)
    assert_one_step_trains_everything(model)


def test_batch_norm_uses_batch_statistics_only_in_training_mode(simclr_export):
    model = load_encoder(simclr_export)
    bn = model.get_layer("stem_bn")
    mean0 = bn.moving_mean.numpy().copy()
    a, b = images(8, seed=2), images(8, seed=3)
    mixed = np.concatenate([a[:4], b[4:]])
    # Inference: an image's features do not depend on the rest of the batch; moving stats untouched.
    np.testing.assert_allclose(model(a, training=False).numpy()[:4], model(mixed, training=False).numpy()[:4],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), mean0)
    # Training: batch statistics (batch-dependent outputs) and updated moving averages.
    assert not np.allclose(model(a, training=True).numpy()[:4], model(mixed, training=True).numpy()[:4], atol=1e-4)
    assert not np.allclose(bn.moving_mean.numpy(), mean0)


def test_trainable_false_freezes_everything(simclr_run):
    model = load_encoder(simclr_run, trainable=False)
    assert model.trainable_variables == []
    bn = model.get_layer("bn0")
    mean0 = bn.moving_mean.numpy().copy()
    model(images(), training=True)  # frozen BN runs in inference mode (Keras fine-tuning convention)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), mean0)


def test_bad_head_layers(simclr_run):
    with pytest.raises(ValueError, match=r"head_layers must be in \[0, 3\]"):
        load_encoder(simclr_run, head_layers=4)
    with pytest.raises(ValueError, match="head_layers must be None or an int"):
        load_encoder(simclr_run, head_layers=-1)
