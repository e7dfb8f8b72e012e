"""WarmupCosine and scale_learning_rate against closed-form values."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.optim import WarmupCosine, scale_learning_rate


def closed_form(step, peak, total, warmup, final):
    if step < warmup:
        return peak * step / warmup
    if step >= total:
        return final
    progress = (step - warmup) / (total - warmup)
    return final + 0.5 * (peak - final) * (1 + math.cos(math.pi * progress))


def test_end_points_and_midpoint():
    sched = WarmupCosine(1.0, total_steps=110, warmup_steps=10, final_learning_rate=0.1)
    assert float(sched(0)) == 0.0
    np.testing.assert_allclose(float(sched(5)), 0.5, rtol=1e-6)
    np.testing.assert_allclose(float(sched(10)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(float(sched(60)), (1.0 + 0.1) / 2, rtol=1e-6)  # cosine midpoint
    np.testing.assert_allclose(float(sched(110)), 0.1, rtol=1e-6)
    np.testing.assert_allclose(float(sched(500)), 0.1, rtol=1e-6)


def test_matches_closed_form_everywhere_including_tf_function():
    sched = WarmupCosine(4.8, total_steps=37, warmup_steps=7, final_learning_rate=0.2)
    steps = np.arange(0, 45)
    want = [closed_form(s, 4.8, 37, 7, 0.2) for s in steps]
    eager = [float(sched(tf.constant(s, tf.int64))) for s in steps]
    graph = tf.function(lambda s: sched(s))(tf.constant(steps, tf.int64)).numpy()
    np.testing.assert_allclose(eager, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(graph, want, rtol=1e-5, atol=1e-6)


def test_no_warmup_starts_at_peak_and_warmup_only_ends_at_final():
    assert float(WarmupCosine(0.3, total_steps=10)(0)) == pytest.approx(0.3)
    warm_only = WarmupCosine(1.0, total_steps=4, warmup_steps=4, final_learning_rate=0.0)
    np.testing.assert_allclose([float(warm_only(s)) for s in range(6)], [0, 0.25, 0.5, 0.75, 0, 0], atol=1e-7)


def test_config_round_trip():
    sched = WarmupCosine(2.0, total_steps=100, warmup_steps=10, final_learning_rate=0.5)
    clone = WarmupCosine.from_config(sched.get_config())
    assert clone.get_config() == sched.get_config()
    revived = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(sched))
    assert isinstance(revived, WarmupCosine)
    assert float(revived(40)) == pytest.approx(float(sched(40)))


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(peak_learning_rate=-1.0, total_steps=10), "peak_learning_rate"),
        (dict(peak_learning_rate=1.0, total_steps=0), "total_steps"),
        (dict(peak_learning_rate=1.0, total_steps=10, warmup_steps=11), "warmup_steps"),
        (dict(peak_learning_rate=1.0, total_steps=10, final_learning_rate=2.0), "final_learning_rate"),
    ],
)
def test_bad_schedule_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        WarmupCosine(**kwargs)
    assert "\n" not in str(info.value)


def test_scale_learning_rate():
    assert scale_learning_rate(0.075, 4096, "sqrt") == pytest.approx(4.8)
    assert scale_learning_rate(0.3, 512, "linear") == pytest.approx(0.6)
    assert scale_learning_rate(0.3, 512, "none") == 0.3


@pytest.mark.parametrize(
    "args, fragment",
    [
        ((0.1, 256, "cubic"), "linear"),
        ((-0.1, 256, "linear"), "learning_rate"),
        ((0.1, 0, "sqrt"), "global_batch_size"),
    ],
)
def test_scale_learning_rate_errors(args, fragment):
    with pytest.raises(ValueError, match=fragment):
        scale_learning_rate(*args)
