"""BYOL, SimSiam, MoCo v3, Barlow Twins and VICReg on 2 replicas (synchronised BN) take the same step as one
device on the global batch.

What the maths says: BYOL's and SimSiam's losses are means of per-example terms, Barlow Twins' and
VICReg's functions of gathered global-batch statistics; all are divided by the replica count, so the
summed replica gradients are the global-batch gradient; with sync BN every batch statistic is the
global one; BYOL's EMA is elementwise on identical replicas. So after one SGD step the online weights,
BYOL's target weights, the loss and the (gathered) collapse monitor must all match one device.
Uses the session-wide `two_replica_strategy` of tests/conftest.py and, through build_training, the tiny
conv encoder of tests/methods/conftest.py (with sync BN): tracing ResNet-18 three times per method would
dominate the suite, and the replica arithmetic under test lives in the method, heads and losses.
"""
import numpy as np
import pytest
from slowness import default_run
import tensorflow as tf

from tfssl.config import TrainConfig
from method_data import assert_same_step, one_step, uneven_global_batch
from tfssl.training import build_training

SIZE, WIDTH, GLOBAL_BATCH, NUM_CLASSES = 8, 0.125, 8, 3


# Each method's options: 2-layer heads 16 -> 8 (predictor as wide as the projector's hidden layer, SimSiam's
# its bottleneck proj_dim // 4), EMA from 0.9, temperature 0.5, SimSiam's predictor on the cosine schedule.
HEADS = dict(proj_layers=2, proj_dim=8, proj_hidden_dim=16, pred_hidden_dim=0)
OPTIONS = {
    "byol": dict(HEADS, tau_base=0.9),
    "simsiam": dict(HEADS, fix_predictor_lr=False),
    "moco_v3": dict(HEADS, tau_base=0.9, temperature=0.5),
    "barlow_twins": dict(proj_layers=2, proj_dim=8, proj_hidden_dim=16),
    "vicreg": dict(proj_layers=2, proj_dim=8, proj_hidden_dim=16),
}


def _config(method, sync_bn=True):
    # Plain SGD (no momentum, no decay, constant LR at step 0) so one step is w - lr * g.
    return TrainConfig(model_dir="unused", method=method, image_size=SIZE, width_multiplier=WIDTH, sync_bn=sync_bn,
                       batch_size=GLOBAL_BATCH, optimizer="sgd", momentum=0.0, weight_decay=0.0, learning_rate=0.05,
                       lr_scaling="none", warmup_epochs=0.0, augment_on="host", seed=0,
                       method_options=OPTIONS[method])


def _one_step(model, strategy):
    return one_step(model, strategy, uneven_global_batch(GLOBAL_BATCH, SIZE, NUM_CLASSES))


def _first_replica(variable, strategy):
    return np.asarray(strategy.experimental_local_results(variable.value)[0])


def _run(method, sync_bn, strategy):
    """Both models after one step from the same weights, their logs, and the initial weights."""
    single_strategy = tf.distribute.get_strategy()
    config = _config(method, sync_bn)
    distributed, _ = build_training(config, strategy, NUM_CLASSES, steps_per_epoch=1, total_steps=10)
    single, _ = build_training(config, single_strategy, NUM_CLASSES, steps_per_epoch=1, total_steps=10)
    single.set_weights(distributed.get_weights())
    initial = [np.array(v.numpy()) for v in single.weights]
    return distributed, single, _one_step(distributed, strategy), _one_step(single, single_strategy), initial


@pytest.mark.parametrize("method", default_run(["byol", "simsiam", "moco_v3", "barlow_twins", "vicreg"],
                                                ("byol", "barlow_twins")))
def test_two_replicas_match_one_device(method, two_replica_strategy, tiny_encoder_in_build_method):
    strategy = two_replica_strategy
    distributed, single, distributed_logs, single_logs, initial = _run(method, True, strategy)
    initial_by_id = {id(v): w0 for v, w0 in zip(single.weights, initial)}

    compared = 0
    for v_dist, v_single, w0 in zip(distributed.weights, single.weights, initial):
        assert_same_step(strategy.experimental_local_results(v_dist.value), v_single.numpy(), w0, v_dist.path)
        compared += 1
    assert compared == len(single.weights)
    moved = [np.max(np.abs(v.numpy() - initial_by_id[id(v)])) > 0 for v in single.trainable_variables]
    assert sum(moved) > 0.9 * len(moved)
    if method in ("byol", "moco_v3"):  # the EMA moved the target too, identically on both sides
        pairs = single.target_pairs()
        assert any(not np.allclose(t.numpy(), o.numpy()) for o, t in pairs)
    components = {"moco_v3": ("key_acc",), "barlow_twins": ("on_diagonal", "off_diagonal"),
                  "vicreg": ("invariance", "variance", "covariance")}.get(method, ())
    for name in ("loss", "collapse_std", "probe_loss", "probe_acc") + components:
        np.testing.assert_allclose(distributed_logs[name], single_logs[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_without_sync_bn_the_step_differs(two_replica_strategy, tiny_encoder_in_build_method):
    """The same comparison with per-replica BN must fail, so the test above really detects missing sync."""
    strategy = two_replica_strategy
    distributed, single, _, _, initial = _run("byol", False, strategy)
    initial_by_id = {id(v): w0 for v, w0 in zip(single.weights, initial)}
    gaps = []
    for v_dist, v_single in zip(distributed.trainable_variables, single.trainable_variables):
        w0 = initial_by_id[id(v_single)]
        update = v_single.numpy() - w0
        if np.max(np.abs(update)) > 0:
            got = _first_replica(v_dist, strategy) - np.asarray(w0)
            gaps.append(np.max(np.abs(got - update)) / np.max(np.abs(update)))
    assert max(gaps) > 1e-2, max(gaps)
