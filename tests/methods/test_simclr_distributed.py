"""Two replicas with synchronised BN must take the same SimCLR step as one device on the global batch.

Uses the session-wide `two_replica_strategy` of tests/conftest.py (two logical CPUs); a second
MirroredStrategy in this process would collide with it.
"""
import numpy as np
import pytest
import tensorflow as tf

from tfssl.config import TrainConfig
from method_data import assert_same_step, one_step, uneven_global_batch
from tfssl.training import build_training

SIZE, WIDTH, GLOBAL_BATCH, NUM_CLASSES = 8, 0.125, 8, 3


def _config(sync_bn):
    # Plain SGD (no momentum, no decay, constant LR at step 0) so one step is w - lr * g.
    return TrainConfig(model_dir="unused", image_size=SIZE, width_multiplier=WIDTH, sync_bn=sync_bn,
                       batch_size=GLOBAL_BATCH, optimizer="sgd", momentum=0.0, weight_decay=0.0,
                       learning_rate=0.05, lr_scaling="none", warmup_epochs=0.0, augment_on="host", seed=0,
                       method_options={"proj_dim": 8, "temperature": 0.5})


def _one_step(model, strategy):
    return one_step(model, strategy, uneven_global_batch(GLOBAL_BATCH, SIZE, NUM_CLASSES))


def _replica_values(variable, strategy):
    return [np.asarray(v) for v in strategy.experimental_local_results(variable.value)]


@pytest.fixture(scope="module")
def runs(two_replica_strategy):
    """For sync_bn in (True, False): initial weights, per-replica updated weights and logs, single-device ones."""
    strategy = two_replica_strategy
    single_strategy = tf.distribute.get_strategy()
    results = {}
    for sync_bn in (True, False):
        config = _config(sync_bn)
        distributed, _ = build_training(config, strategy, NUM_CLASSES, steps_per_epoch=1, total_steps=10)
        single, _ = build_training(config, single_strategy, NUM_CLASSES, steps_per_epoch=1, total_steps=10)
        assert distributed.probe is not None
        initial = distributed.get_weights()
        single.set_weights(initial)
        names = [v.path for v in distributed.trainable_variables]
        assert names == [v.path for v in single.trainable_variables]
        initial_trainable = [np.asarray(v) for v in single.trainable_variables]
        distributed_logs = _one_step(distributed, strategy)
        single_logs = _one_step(single, single_strategy)
        results[sync_bn] = dict(
            names=names,
            initial=initial_trainable,
            distributed=[_replica_values(v, strategy) for v in distributed.trainable_variables],
            single=[np.asarray(v) for v in single.trainable_variables],
            distributed_logs=distributed_logs,
            single_logs=single_logs,
            distributed_steps=int(distributed.optimizer.iterations.numpy()),
        )
    return results


def _largest_relative_update_gap(run):
    """max over variables of |delta_distributed - delta_single| / max |delta_single|."""
    gaps = []
    for w0, replicas, single in zip(run["initial"], run["distributed"], run["single"]):
        scale = np.max(np.abs(single - w0)) + 1e-12
        gaps.append(np.max(np.abs((replicas[0] - w0) - (single - w0))) / scale)
    return max(gaps)


def test_sync_bn_two_replicas_match_one_device(runs):
    run = runs[True]
    assert run["distributed_steps"] == 1
    for name, w0, replicas, single in zip(run["names"], run["initial"], run["distributed"], run["single"]):
        assert_same_step(replicas, single, w0, name)
    assert _largest_relative_update_gap(run) < 1e-3
    # Every variable actually moved (a step that did nothing would match trivially).
    moved = [np.max(np.abs(s - w0)) > 0 for w0, s in zip(run["initial"], run["single"])]
    assert all(moved), [n for n, m in zip(run["names"], moved) if not m]
    np.testing.assert_allclose(run["distributed_logs"]["loss"], run["single_logs"]["loss"], rtol=1e-5)
    for name in ("contrast_acc", "contrast_entropy", "probe_loss", "probe_acc"):
        np.testing.assert_allclose(run["distributed_logs"][name], run["single_logs"][name], rtol=1e-4, atol=1e-6,
                                   err_msg=name)


def test_unsynchronised_bn_gives_a_different_step(runs):
    """The same comparison without sync BN must fail, so the test above really detects missing sync."""
    run = runs[False]
    assert _largest_relative_update_gap(run) > 1e-2
    assert not all(np.allclose(replicas[0], single, rtol=1e-4, atol=1e-6)
                   for replicas, single in zip(run["distributed"], run["single"]))
