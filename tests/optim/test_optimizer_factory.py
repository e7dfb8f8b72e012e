"""build_optimizer: the right kinds, argument errors, and biases / BN params never decayed."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.optim import LARS, OPTIMIZERS, WarmupCosine, build_optimizer

KINDS = {"lars": LARS, "sgd": keras.optimizers.SGD, "adamw": keras.optimizers.AdamW, "lamb": keras.optimizers.Lamb}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_returns_each_kind(name):
    opt = build_optimizer(name, 0.1, weight_decay=1e-4, momentum=0.8)
    assert type(opt) is KINDS[name]
    if name in ("adamw", "lamb"):
        assert opt.beta_1 == 0.8
    else:
        assert opt.momentum == 0.8


def test_accepts_a_schedule():
    opt = build_optimizer("lars", WarmupCosine(1.0, total_steps=10, warmup_steps=2))
    assert float(opt.learning_rate) == 0.0  # step 0 of the warmup


def _model():
    # The layer name contains "bias": a naive substring exclusion would wrongly skip its kernel.
    model = keras.Sequential(
        name="net",
        layers=[keras.Input((3,)), keras.layers.Dense(4, name="bias_layer"), keras.layers.BatchNormalization(name="bn")]
    )
    dense, bn = model.layers
    dense.kernel.assign(np.arange(12, dtype=np.float32).reshape(3, 4) - 5.0)
    dense.bias.assign([1.0, 2.0, -1.0, 0.5])
    bn.beta.assign([0.5, -0.5, 1.0, 2.0])
    return model


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_only_kernels_are_decayed(name):
    # With zero gradients every update rule leaves w unchanged, so any change is the decay alone.
    lr, wd = 0.1, 0.2
    model = _model()
    variables = model.trainable_variables
    before = {v.path: v.numpy() for v in variables}
    opt = build_optimizer(name, lr, weight_decay=wd)
    opt.apply_gradients([(tf.zeros_like(v), v) for v in variables])
    after = {v.path: v.numpy() for v in variables}
    kernel = "net/bias_layer/kernel"
    # Keras decoupled decay: w -= lr * wd * w; LARS: g' = wd * w, trust = eta / wd -> w -= lr * eta * w.
    shrink = lr * (opt.trust_coefficient if name == "lars" else wd)
    np.testing.assert_allclose(after[kernel], before[kernel] * (1 - shrink), rtol=1e-6)
    for path in ("net/bias_layer/bias", "net/bn/gamma", "net/bn/beta"):
        np.testing.assert_array_equal(after[path], before[path])


def test_exclusion_holds_under_mirrored_strategy(two_cpu_strategy):
    # Per-replica variable copies are named ".../bias/replica_1:0"; they must be excluded as well.
    strategy = two_cpu_strategy
    with strategy.scope():
        model = _model()
        opt = build_optimizer("sgd", 0.1, weight_decay=0.2)
        opt.build(model.trainable_variables)
    bias_before = model.layers[0].bias.numpy()

    @tf.function
    def step():
        strategy.run(lambda: opt.apply_gradients([(tf.zeros_like(v), v) for v in model.trainable_variables]))

    step()
    for copy in strategy.experimental_local_results(model.layers[0].bias.value):
        np.testing.assert_array_equal(copy.numpy(), bias_before)
    for copy in strategy.experimental_local_results(model.layers[0].kernel.value):
        assert not np.allclose(copy.numpy(), np.arange(12).reshape(3, 4) - 5.0)


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="lars.*sgd.*adamw.*lamb") as info:
        build_optimizer("adam", 0.1)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(learning_rate=0.1, weight_decay=-1e-4), "weight_decay"),
        (dict(learning_rate=0.1, momentum=1.0), "momentum"),
        (dict(learning_rate=0.1, momentum=-0.5), "momentum"),
    ],
)
@pytest.mark.parametrize("name", ["lars", "sgd"])
def test_bad_values_raise_one_line_errors(name, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        build_optimizer(name, **kwargs)
    assert "\n" not in str(info.value)
