"""LARS checked against a numpy version of the SimCLR rule and hand-computed values."""
import copy
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.optim import LARS, WarmupCosine


def numpy_lars(w, g, v, lr, momentum, wd, tc, nesterov=False, decay=True, adapt=True):
    """One LARS step in float64 (You et al. 2017 as written in SimCLR's lars_optimizer.py)."""
    w, g, v = (np.asarray(x, np.float64) for x in (w, g, v))
    if decay:
        g = g + wd * w
    lr_w = lr
    w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
    if adapt and w_norm > 0 and g_norm > 0:
        lr_w = lr * tc * w_norm / g_norm
    v = momentum * v + lr_w * g
    w = w - (momentum * v + lr_w * g if nesterov else v)
    return w, v


def apply(opt, variables, grads_per_step):
    for grads in grads_per_step:
        opt.apply_gradients([(tf.constant(g, tf.float32), v) for g, v in zip(grads, variables)])
    return [v.numpy() for v in variables]


RNG = np.random.default_rng(0)
W0 = RNG.normal(size=(3, 4)).astype(np.float32)
G1 = RNG.normal(size=(3, 4)).astype(np.float32)
G2 = RNG.normal(size=(3, 4)).astype(np.float32)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("num_steps", [1, 2])
def test_matches_numpy_with_momentum_decay_and_trust(nesterov, num_steps):
    hp = dict(momentum=0.9, weight_decay=0.1, trust_coefficient=0.02)
    w = keras.Variable(W0, name="kernel")
    opt = LARS(learning_rate=0.5, nesterov=nesterov, **hp)
    grads = [G1, G2][:num_steps]
    (got,) = apply(opt, [w], [[g] for g in grads])
    ref, vel = W0, np.zeros_like(W0)
    for g in grads:
        ref, vel = numpy_lars(ref, g, vel, 0.5, hp["momentum"], hp["weight_decay"],
                              hp["trust_coefficient"], nesterov)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    # The base class's decoupled decay must stay off: it would shrink w a second time.
    assert opt.weight_decay is None and opt.lars_weight_decay == 0.1


def test_hand_computed_two_steps():
    # w = [3, 4] (norm 5), g = [0.6, 0.8] (norm 1), eta = 0.1, lr = 1, momentum 0.9, no decay.
    # step 1: trust 0.5 -> v = [0.3, 0.4], w = [2.7, 3.6]; step 2: trust 0.45 -> v = [0.54, 0.72].
    w = keras.Variable([[3.0, 4.0]], name="kernel")
    opt = LARS(learning_rate=1.0, momentum=0.9, trust_coefficient=0.1)
    g = np.array([[0.6, 0.8]], np.float32)
    np.testing.assert_allclose(apply(opt, [w], [[g]])[0], [[2.7, 3.6]], rtol=1e-6)
    np.testing.assert_allclose(apply(opt, [w], [[g]])[0], [[2.16, 2.88]], rtol=1e-6)


def test_hand_computed_nesterov_step():
    # Nesterov: w -= momentum * v + lr_w * g = 0.9 * [0.3, 0.4] + 0.5 * [0.6, 0.8] = [0.57, 0.76].
    w = keras.Variable([[3.0, 4.0]], name="kernel")
    opt = LARS(learning_rate=1.0, momentum=0.9, trust_coefficient=0.1, nesterov=True)
    got = apply(opt, [w], [[np.array([[0.6, 0.8]], np.float32)]])[0]
    np.testing.assert_allclose(got, [[2.43, 3.24]], rtol=1e-6)


def test_decay_only_gradient_closed_form():
    # g = 0 -> g' = wd * w, trust = eta / wd, so w1 = w * (1 - lr * eta) whatever wd is.
    w = keras.Variable(W0, name="kernel")
    opt = LARS(learning_rate=0.5, momentum=0.9, weight_decay=0.3, trust_coefficient=0.01)
    got = apply(opt, [w], [[np.zeros_like(W0)]])[0]
    np.testing.assert_allclose(got, W0 * (1 - 0.5 * 0.01), rtol=1e-6)


def test_rank1_variable_gets_plain_momentum_sgd():
    b0 = np.array([1.0, -2.0, 3.0], np.float32)
    g1, g2 = np.array([0.5, 0.5, -1.0], np.float32), np.array([1.0, 0.0, 2.0], np.float32)
    b = keras.Variable(b0, name="bias")
    opt = LARS(learning_rate=0.1, momentum=0.9, weight_decay=0.5, trust_coefficient=0.001)
    got = apply(opt, [b], [[g1], [g2]])[0]
    # Plain heavy-ball SGD: v1 = g1, v2 = 0.9 g1 + g2 (lr = 0.1 everywhere, no decay, no trust).
    np.testing.assert_allclose(got, b0 - 0.1 * g1 - 0.1 * (0.9 * g1 + g2), rtol=1e-6)
    assert not opt.uses_weight_decay(b) and not opt.uses_layer_adaptation(b)


def test_rank1_included_when_exclude_rank1_false():
    b0 = np.array([1.0, -2.0, 3.0], np.float32)
    g = np.array([0.5, 0.5, -1.0], np.float32)
    b = keras.Variable(b0, name="bias")
    opt = LARS(learning_rate=0.1, momentum=0.9, weight_decay=0.5, trust_coefficient=0.01, exclude_rank1=False)
    ref, _ = numpy_lars(b0, g, np.zeros(3), 0.1, 0.9, 0.5, 0.01)
    np.testing.assert_allclose(apply(opt, [b], [[g]])[0], ref, rtol=1e-5)


def _dense_kernels():
    head = keras.layers.Dense(4, name="head")
    body = keras.layers.Dense(4, name="body")
    head.build((None, 3))
    body.build((None, 3))
    head.kernel.assign(W0)
    body.kernel.assign(W0)
    return head.kernel, body.kernel


def test_name_excluded_variable_gets_plain_sgd_others_full_lars():
    head, body = _dense_kernels()
    assert "head" in head.path and "head" not in head.name  # matched through the path
    opt = LARS(learning_rate=0.5, momentum=0.9, weight_decay=0.1, trust_coefficient=0.02,
               exclude_from_weight_decay=["head"])  # adaptation exclusions default to the same list
    got_head, got_body = apply(opt, [head, body], [[G1, G1], [G2, G2]])
    ref_head = W0 - 0.5 * G1 - 0.5 * (0.9 * G1 + G2)
    ref_body, vel = W0, np.zeros_like(W0)
    for g in (G1, G2):
        ref_body, vel = numpy_lars(ref_body, g, vel, 0.5, 0.9, 0.1, 0.02)
    np.testing.assert_allclose(got_head, ref_head, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_body, ref_body, rtol=1e-5, atol=1e-6)


def test_separate_decay_and_adaptation_exclusions():
    head, body = _dense_kernels()
    opt = LARS(learning_rate=0.5, momentum=0.9, weight_decay=0.1, trust_coefficient=0.02,
               exclude_from_weight_decay=["head"], exclude_from_layer_adaptation=["body"])
    got_head, got_body = apply(opt, [head, body], [[G1, G1]])
    ref_head, _ = numpy_lars(W0, G1, 0 * W0, 0.5, 0.9, 0.1, 0.02, decay=False, adapt=True)
    ref_body, _ = numpy_lars(W0, G1, 0 * W0, 0.5, 0.9, 0.1, 0.02, decay=True, adapt=False)
    np.testing.assert_allclose(got_head, ref_head, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_body, ref_body, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "w0, g, expected",
    [
        (np.zeros((2, 2)), np.ones((2, 2)), -0.5 * np.ones((2, 2))),  # ||w|| = 0 -> trust 1
        (np.ones((2, 2)), np.zeros((2, 2)), np.ones((2, 2))),  # ||g|| = 0 -> trust 1, no move
        (np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 2))),  # both 0: no NaN
    ],
)
def test_zero_norms_give_trust_one(w0, g, expected):
    w = keras.Variable(w0.astype(np.float32), name="kernel")
    opt = LARS(learning_rate=0.5, momentum=0.9, trust_coefficient=0.001)
    got = apply(opt, [w], [[g.astype(np.float32)]])[0]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_sparse_gradient_equals_dense():
    dense = np.array([[0.0, 0.0], [1.0, -2.0], [0.0, 0.0]], np.float32)
    sparse = tf.IndexedSlices(tf.constant([[1.0, -2.0]]), tf.constant([1]), tf.constant([3, 2]))
    results = []
    for grad in (tf.constant(dense), sparse):
        w = keras.Variable(W0[:3, :2], name="embeddings")
        opt = LARS(learning_rate=0.5, weight_decay=0.1, trust_coefficient=0.02)
        opt.apply_gradients([(grad, w)])
        results.append(w.numpy())
    np.testing.assert_allclose(results[1], results[0], rtol=1e-6)


def test_momentum_zero_has_no_slots():
    w = keras.Variable(W0, name="kernel")
    opt = LARS(learning_rate=0.5, momentum=0.0, trust_coefficient=0.02)
    got = apply(opt, [w], [[G1]])[0]
    ref, _ = numpy_lars(W0, G1, 0 * W0, 0.5, 0.0, 0.0, 0.02)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert len(opt.variables) == 2  # iterations + learning rate only


@pytest.mark.parametrize("jit_compile", [False, True])
def test_model_fit_matches_numpy(jit_compile):
    x = RNG.normal(size=(8, 3)).astype(np.float32)
    y = RNG.normal(size=(8, 1)).astype(np.float32)
    k0 = RNG.normal(size=(3, 1)).astype(np.float32)
    b0 = np.array([0.3], np.float32)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, name="fc")])
    model.set_weights([k0, b0])
    # lr(0) = 0.5, lr(1) = 0.1 + 0.2 * (1 + cos(pi / 3)) = 0.4
    schedule = WarmupCosine(0.5, total_steps=3, final_learning_rate=0.1)
    opt = LARS(learning_rate=schedule, momentum=0.9, weight_decay=0.05, trust_coefficient=0.1)
    model.compile(optimizer=opt, loss="mse", jit_compile=jit_compile)
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)

    k, b = k0.astype(np.float64), b0.astype(np.float64)
    vk, vb = np.zeros_like(k), np.zeros_like(b)
    for lr in (0.5, 0.1 + 0.2 * (1 + math.cos(math.pi / 3))):
        residual = x @ k + b - y  # d mean(r^2) / d pred = 2 r / N
        gk, gb = 2 / 8 * x.T @ residual, 2 / 8 * residual.sum(0)
        k, vk = numpy_lars(k, gk, vk, lr, 0.9, 0.05, 0.1)
        b, vb = numpy_lars(b, gb, vb, lr, 0.9, 0.05, 0.1, decay=False, adapt=False)
    np.testing.assert_allclose(model.layers[0].kernel.numpy(), k, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.layers[0].bias.numpy(), b, rtol=1e-4, atol=1e-5)
    assert int(opt.iterations.numpy()) == 2


def test_mirrored_strategy_equals_single_device_with_summed_gradient(two_cpu_strategy):
    b0 = np.array([0.5, -1.0, 2.0, 0.0], np.float32)
    # steps x replicas x (kernel grad, bias grad)
    grads = [[(RNG.normal(size=(3, 4)), RNG.normal(size=4)) for _ in range(2)] for _ in range(2)]
    grads = [[tuple(np.float32(a) for a in pair) for pair in step] for step in grads]
    hp = dict(learning_rate=0.5, momentum=0.9, weight_decay=0.1, trust_coefficient=0.02, nesterov=True)

    strategy = two_cpu_strategy
    with strategy.scope():
        kernel, bias = keras.Variable(W0, name="kernel"), keras.Variable(b0, name="bias")
        opt = LARS(**hp)
        opt.build([kernel, bias])

    @tf.function
    def distributed_step(per_replica):
        def replica_fn(gk, gb):
            opt.apply_gradients([(gk, kernel), (gb, bias)])

        strategy.run(replica_fn, args=per_replica)

    for step in grads:
        per_replica = strategy.experimental_distribute_values_from_function(
            lambda ctx, step=step: tuple(tf.constant(a) for a in step[ctx.replica_id_in_sync_group])
        )
        distributed_step(per_replica)

    single_kernel, single_bias = keras.Variable(W0, name="kernel"), keras.Variable(b0, name="bias")
    single = LARS(**hp)
    summed = [[step[0][i] + step[1][i] for i in range(2)] for step in grads]
    want_kernel, want_bias = apply(single, [single_kernel, single_bias], summed)

    for replica_value in strategy.experimental_local_results(kernel.value):
        np.testing.assert_allclose(replica_value.numpy(), want_kernel, rtol=1e-5, atol=1e-6)
    for replica_value in strategy.experimental_local_results(bias.value):
        np.testing.assert_allclose(replica_value.numpy(), want_bias, rtol=1e-5, atol=1e-6)
    # The single-device result really is LARS (and differs from per-replica mean or single-replica runs).
    ref, vel = W0, np.zeros_like(W0)
    for g in summed:
        ref, vel = numpy_lars(ref, g[0], vel, 0.5, 0.9, 0.1, 0.02, nesterov=True)
    np.testing.assert_allclose(want_kernel, ref, rtol=1e-5, atol=1e-6)


def test_get_config_round_trip():
    opt = LARS(
        learning_rate=WarmupCosine(2.0, total_steps=100, warmup_steps=10, final_learning_rate=0.1),
        momentum=0.8, weight_decay=1e-4, trust_coefficient=0.01, nesterov=True,
        exclude_from_weight_decay=["head"], exclude_from_layer_adaptation=["bn"], exclude_rank1=False,
        clipnorm=1.0, name="my_lars",
    )
    config = opt.get_config()
    assert config["weight_decay"] == 1e-4 and config["exclude_from_weight_decay"] == ["head"]
    clone = LARS.from_config(copy.deepcopy(config))  # Keras' from_config edits its argument
    assert clone.get_config() == config
    assert isinstance(clone._learning_rate, WarmupCosine)
    revived = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(revived, LARS) and revived.get_config() == config
    # Behaviour survives too: same update on the same variable.
    results = []
    for o in (opt, revived):
        w = keras.Variable(W0, name="kernel")
        o.apply_gradients([(tf.constant(G1), w)])
        results.append(w.numpy())
    np.testing.assert_allclose(results[0], results[1])


def test_default_adaptation_exclusions_survive_round_trip():
    opt = LARS(exclude_from_weight_decay=["head"])
    clone = LARS.from_config(opt.get_config())
    head, _ = _dense_kernels()
    assert not clone.uses_layer_adaptation(head)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(momentum=1.0), "momentum"),
        (dict(momentum=-0.1), "momentum"),
        (dict(weight_decay=-1e-6), "weight_decay"),
        (dict(learning_rate=-0.1), "learning_rate"),
        (dict(trust_coefficient=0.0), "trust_coefficient"),
        (dict(exclude_from_weight_decay=["bias", 3]), "exclude_from_weight_decay"),
    ],
)
def test_bad_arguments_raise_one_line_errors(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        LARS(**kwargs)
    assert "\n" not in str(info.value)
