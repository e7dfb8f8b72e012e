"""Weight-decay semantics: coupled L2 (PyTorch SGD) vs decoupled (Keras SGD / AdamW), what is excluded, LARS.

Every expected value is hand arithmetic in numpy on the update rules as the papers' reference code
writes them (torch.optim.SGD with weight_decay: g + wd * w goes through the momentum; Keras SGD /
AdamW: w -= lr * wd * w beside the step), not a call of the optimizers under test.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.config import TrainConfig
from tfssl.optim import LARS, CoupledSGD, build_optimizer, constant_rate_copy, resolve_weight_decay

LR, WD, MOMENTUM = 0.1, 0.05, 0.9


def _model():
    """Dense(3 -> 2) + BN: a kernel, a bias, a gamma and a beta, set to fixed non-trivial values."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc"), keras.layers.BatchNormalization(name="bn")],
                             name="net")
    fc, bn = model.layers
    fc.kernel.assign([[1.0, -2.0], [0.5, 3.0], [-1.5, 0.25]])
    fc.bias.assign([0.75, -0.5])
    bn.gamma.assign([1.5, 0.8])
    bn.beta.assign([0.3, -0.6])
    return model


def _gradients():
    """A fixed gradient per variable (kernel, bias, gamma, beta), the same at every step."""
    return [np.array([[0.2, -0.1], [0.3, 0.4], [-0.2, 0.1]], np.float32), np.array([0.1, -0.3], np.float32),
            np.array([-0.2, 0.05], np.float32), np.array([0.4, 0.1], np.float32)]


def _run(optimizer, steps):
    model = _model()
    variables = model.trainable_variables
    initial = [v.numpy().copy() for v in variables]
    for _ in range(steps):
        optimizer.apply_gradients(zip([tf.constant(g) for g in _gradients()], variables))
    return initial, [v.numpy() for v in variables]


def _torch_sgd(w, grads, decayed, steps):
    """torch.optim.SGD(lr, momentum, weight_decay): d = g + wd * w; buf = m * buf + d; w -= lr * buf."""
    w, buf = [x.astype(np.float64) for x in w], [np.zeros_like(x, np.float64) for x in w]
    for _ in range(steps):
        for i, g in enumerate(grads):
            d = g + WD * w[i] if decayed[i] else g.astype(np.float64)
            buf[i] = MOMENTUM * buf[i] + d
            w[i] = w[i] - LR * buf[i]
    return w


def _decoupled_sgd(w, grads, decayed, steps):
    """Keras SGD(weight_decay): w -= lr * wd * w, then v = m * v - lr * g; w += v."""
    w, v = [x.astype(np.float64) for x in w], [np.zeros_like(x, np.float64) for x in w]
    for _ in range(steps):
        for i, g in enumerate(grads):
            if decayed[i]:
                w[i] = w[i] - LR * WD * w[i]
            v[i] = MOMENTUM * v[i] - LR * g
            w[i] = w[i] + v[i]
    return w


# Variables in _model() order: kernel, bias, gamma, beta.
DECAY_ALL, DECAY_KERNEL = (True, True, True, True), (True, False, False, False)


@pytest.mark.parametrize("exclude, decayed", [("none", DECAY_ALL), ("norm_and_bias", DECAY_KERNEL)])
def test_coupled_sgd_matches_torch_sgd_over_three_steps(exclude, decayed):
    optimizer = build_optimizer("sgd", LR, weight_decay=WD, momentum=MOMENTUM, weight_decay_mode="coupled",
                                weight_decay_exclude=exclude)
    assert isinstance(optimizer, CoupledSGD)
    initial, got = _run(optimizer, steps=3)
    want = _torch_sgd(initial, _gradients(), decayed, steps=3)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode", ["decoupled", "auto"])
@pytest.mark.parametrize("exclude, decayed", [("none", DECAY_ALL), ("norm_and_bias", DECAY_KERNEL)])
def test_decoupled_sgd_matches_hand_arithmetic(mode, exclude, decayed):
    optimizer = build_optimizer("sgd", LR, weight_decay=WD, momentum=MOMENTUM, weight_decay_mode=mode,
                                weight_decay_exclude=exclude)
    initial, got = _run(optimizer, steps=3)
    want = _decoupled_sgd(initial, _gradients(), decayed, steps=3)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)
    # The two semantics really differ once momentum carries the L2 term (so either check above can fail).
    coupled = _torch_sgd(initial, _gradients(), decayed, steps=3)
    assert np.max(np.abs(coupled[0] - want[0])) > 1e-3


def test_coupled_decay_is_about_one_over_one_minus_momentum_stronger():
    # Zero gradients: only the decay moves w. Coupled: w_n follows the momentum recurrence, whose
    # per-step shrink tends to lr * wd / (1 - m); decoupled shrinks by exactly lr * wd per step.
    steps, lr, wd = 300, 0.01, 0.01
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, use_bias=False)])
    kernel = model.trainable_variables[0]
    kernel.assign(np.ones((2, 2), np.float32))
    optimizer = build_optimizer("sgd", lr, weight_decay=wd, momentum=MOMENTUM, weight_decay_mode="coupled",
                                weight_decay_exclude="none")
    for _ in range(steps):
        optimizer.apply_gradients([(tf.zeros((2, 2)), kernel)])
    w, v = 1.0, 0.0
    for _ in range(steps):
        v = MOMENTUM * v + wd * w
        w = w - lr * v
    np.testing.assert_allclose(kernel.numpy(), w, rtol=1e-5)
    late_shrink = -np.log(w) / steps
    ratio = late_shrink / -np.log(1 - lr * wd)
    assert 9.0 < ratio < 10.0, ratio  # transient of the first ~1/(1-m) steps keeps it just below 10


@pytest.mark.parametrize("exclude, decayed", [("none", DECAY_ALL), ("norm_and_bias", DECAY_KERNEL)])
def test_adamw_one_step_matches_hand_arithmetic(exclude, decayed):
    beta_1, beta_2, epsilon = MOMENTUM, 0.999, 1e-7  # Keras AdamW's epsilon default
    optimizer = build_optimizer("adamw", LR, weight_decay=WD, momentum=beta_1, weight_decay_exclude=exclude)
    initial, got = _run(optimizer, steps=1)
    for w0, g, flag, w1 in zip(initial, _gradients(), decayed, got):
        w = w0.astype(np.float64) * (1 - LR * WD) if flag else w0.astype(np.float64)
        m, v = (1 - beta_1) * g, (1 - beta_2) * g.astype(np.float64) ** 2
        step = LR * np.sqrt(1 - beta_2) / (1 - beta_1) * m / (np.sqrt(v) + epsilon)
        np.testing.assert_allclose(w1, w - step, rtol=1e-5, atol=1e-7)


def test_lars_steps_the_probe_without_trust_ratio_but_with_l2():
    # SimCLR's reference: its supervised head is outside LARS (plain momentum SGD) with an L2 term added.
    eta = 0.001
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc"), keras.layers.Dense(2, name="probe")])
    fc, probe = model.layers
    fc.kernel.assign([[1.0, -2.0], [0.5, 3.0], [-1.5, 0.25]])
    probe.kernel.assign([[0.5, -1.0], [2.0, 0.1]])
    optimizer = build_optimizer("lars", LR, weight_decay=WD, momentum=MOMENTUM)
    assert isinstance(optimizer, LARS)
    variables = [fc.kernel, fc.bias, probe.kernel, probe.bias]
    before = [v.numpy().astype(np.float64) for v in variables]
    grads = [np.full((3, 2), 0.2, np.float32), np.array([0.1, -0.1], np.float32),
             np.array([[0.3, -0.2], [0.1, 0.4]], np.float32), np.array([0.2, 0.3], np.float32)]
    optimizer.apply_gradients(zip([tf.constant(g) for g in grads], variables))
    after = [v.numpy() for v in variables]
    d = grads[0] + WD * before[0]
    trust = eta * np.linalg.norm(before[0]) / np.linalg.norm(d)
    np.testing.assert_allclose(after[0], before[0] - LR * trust * d, rtol=1e-5)
    np.testing.assert_allclose(after[2], before[2] - LR * (grads[2] + WD * before[2]), rtol=1e-6)
    for i in (1, 3):  # biases: neither decayed nor adapted
        np.testing.assert_allclose(after[i], before[i] - LR * grads[i], rtol=1e-6)


@pytest.mark.parametrize("optimizer, mode, exclude, fragment", [
    ("lars", "decoupled", "norm_and_bias", "coupled"),
    ("lars", "auto", "none", "norm_and_bias"),
    ("adamw", "coupled", "none", "decoupled by definition"),
    ("lamb", "coupled", "norm_and_bias", "decoupled by definition"),
    ("sgd", "l2", "none", "weight_decay_mode"),
    ("sgd", "coupled", "all", "weight_decay_exclude"),
])
def test_impossible_combinations_are_one_line_errors(optimizer, mode, exclude, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        resolve_weight_decay(optimizer, mode, exclude)
    assert "\n" not in str(info.value)
    if mode in ("auto", "coupled", "decoupled") and exclude in ("none", "norm_and_bias"):
        config = TrainConfig(model_dir="x", optimizer=optimizer, weight_decay_mode=mode, weight_decay_exclude=exclude)
        with pytest.raises(ValueError, match=fragment):
            config.validate()


def test_auto_resolves_per_optimizer():
    assert [resolve_weight_decay(name) for name in ("lars", "sgd", "adamw", "lamb")] == [
        "coupled", "decoupled", "decoupled", "decoupled"]


@pytest.mark.parametrize("exclude, decayed", [("none", DECAY_ALL), ("norm_and_bias", DECAY_KERNEL)])
def test_constant_rate_copy_keeps_the_decay_semantics(exclude, decayed):
    schedule = keras.optimizers.schedules.ExponentialDecay(LR, decay_steps=1, decay_rate=0.5)
    original = build_optimizer("sgd", schedule, weight_decay=WD, momentum=MOMENTUM, weight_decay_mode="coupled",
                               weight_decay_exclude=exclude)
    copy = constant_rate_copy(original, LR)
    assert isinstance(copy, CoupledSGD) and copy.l2 == WD
    initial, got = _run(copy, steps=3)
    want = _torch_sgd(initial, _gradients(), decayed, steps=3)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)


def test_coupled_sgd_config_round_trip_and_exclusions_under_two_replicas(two_cpu_strategy):
    optimizer = CoupledSGD.from_config(CoupledSGD(learning_rate=0.2, momentum=0.5, l2=0.3).get_config())
    assert (optimizer.l2, optimizer.momentum) == (0.3, 0.5)
    with pytest.raises(ValueError, match="l2"):
        CoupledSGD(weight_decay=0.1)
    strategy = two_cpu_strategy
    with strategy.scope():
        model = _model()
        opt = build_optimizer("sgd", LR, weight_decay=WD, momentum=0.0, weight_decay_mode="coupled")
        opt.build(model.trainable_variables)
    before = [v.numpy() for v in model.trainable_variables]

    @tf.function
    def step():
        strategy.run(lambda: opt.apply_gradients([(tf.zeros_like(v), v) for v in model.trainable_variables]))

    step()
    # Per-replica copies ("fc/bias/replica_1:0") are excluded too; the kernel shrinks by lr * wd.
    for variable, w0, decayed in zip(model.trainable_variables, before, DECAY_KERNEL):
        for copy in strategy.experimental_local_results(variable.value):
            np.testing.assert_allclose(copy.numpy(), w0 * (1 - LR * WD) if decayed else w0, rtol=1e-6)
