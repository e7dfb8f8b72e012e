"""The BYOL / SimSiam predictor (ProjectionHead with last_bn=False) against numpy, and head checkpoints."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.heads import ProjectionHead, predictor_head


def test_predictor_matches_numpy_in_training_mode():
    head = predictor_head(output_dim=3, hidden_dim=5)
    head.build((None, 4))
    dense0, bn0 = head.blocks[0][:2]
    dense1 = head.blocks[1][0]
    assert not dense0.use_bias and dense1.use_bias and len(head.blocks[1]) == 1  # no BN, no ReLU at the end
    rng = np.random.default_rng(0)
    for variable in (dense0.kernel, bn0.gamma, bn0.beta, dense1.kernel, dense1.bias):
        variable.assign(rng.normal(size=variable.shape).astype(np.float32))
    x = rng.normal(size=(6, 4)).astype(np.float32)
    a = x.astype(np.float64) @ dense0.kernel.numpy()
    a = (a - a.mean(0)) / np.sqrt(a.var(0) + 1e-5) * bn0.gamma.numpy() + bn0.beta.numpy()  # batch statistics
    want = np.maximum(a, 0.0) @ dense1.kernel.numpy() + dense1.bias.numpy()
    np.testing.assert_allclose(head(x, training=True).numpy(), want, rtol=1e-4, atol=1e-5)
    assert head.get_config()["last_bn"] is False and head.hidden_dim == 5
    with pytest.raises(ValueError, match="pred_hidden_dim"):
        predictor_head(3, 0)


def test_last_bn_default_keeps_the_simclr_head():
    head = ProjectionHead(num_layers=2, output_dim=3)
    head.build((None, 4))
    assert isinstance(head.blocks[-1][-1], keras.layers.BatchNormalization) and head.last_bn
    restored = ProjectionHead.from_config(head.get_config())
    assert restored.last_bn and restored.get_config() == head.get_config()


def test_checkpoint_saves_every_head_weight(tmp_path):
    """BN moving statistics and weights no optimizer tracks (a target head) must survive tf.train.Checkpoint."""
    head = ProjectionHead(num_layers=2, output_dim=3, last_bn=False)
    head.build((None, 4))
    rng = np.random.default_rng(1)
    values = [rng.normal(size=w.shape).astype(np.float32) for w in head.weights]
    for w, v in zip(head.weights, values):
        w.assign(v)
    path = tf.train.Checkpoint(head=head).save(str(tmp_path / "ckpt"))
    other = ProjectionHead(num_layers=2, output_dim=3, last_bn=False)
    other.build((None, 4))
    tf.train.Checkpoint(head=other).restore(path).assert_consumed()
    assert len(other.weights) == len(values) == 7  # kernel, gamma, beta, moving mean, moving variance, kernel, bias
    for w, v in zip(other.weights, values):
        np.testing.assert_array_equal(w.numpy(), v)
