"""DINO loss, centre update and teacher temperature against numpy, closed forms and a 2-replica run."""
import numpy as np
import pytest
import tensorflow as tf

from tfssl.losses import dino_loss, teacher_temperature_schedule, update_center


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _log_softmax(x):
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def numpy_dino(student, teacher, center, tau_s, tau_t, include_same_crop=False):
    """Reference DINOLoss, float64: teacher crop i vs every student crop v (v == i skipped by default)."""
    center = np.asarray(center, np.float64).reshape(1, -1)
    targets = [_softmax((np.asarray(t, np.float64) - center) / tau_t) for t in teacher]
    log_probs = [_log_softmax(np.asarray(s, np.float64) / tau_s) for s in student]
    terms = [np.mean(-np.sum(q * lp, axis=1))
             for i, q in enumerate(targets) for v, lp in enumerate(log_probs)
             if include_same_crop or v != i]
    return float(np.mean(terms))


def _crops(num_student, num_teacher=2, n=4, k=10, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    student = [scale * rng.normal(size=(n, k)).astype(np.float32) for _ in range(num_student)]
    # Teacher crop i looks like student crop i (same crop), so the (i, i) pairs would weigh differently.
    teacher = [(student[i] + 0.3 * rng.normal(size=(n, k))).astype(np.float32) for i in range(num_teacher)]
    center = (0.5 * rng.normal(size=(1, k))).astype(np.float32)
    return student, teacher, center


@pytest.mark.parametrize("num_student", [2, 6])
@pytest.mark.parametrize("tau_s,tau_t", [(0.1, 0.04), (0.1, 0.07), (1.0, 0.5)])
def test_matches_numpy(num_student, tau_s, tau_t):
    student, teacher, center = _crops(num_student, seed=num_student)
    loss = dino_loss(student, teacher, center, tau_s, tau_t)
    assert loss.dtype == tf.float32 and loss.shape == ()
    np.testing.assert_allclose(loss.numpy(), numpy_dino(student, teacher, center, tau_s, tau_t), rtol=1e-5)


def test_excludes_same_crop_pairs():
    student, teacher, center = _crops(4, seed=7)
    loss = float(dino_loss(student, teacher, center))
    excluded = numpy_dino(student, teacher, center, 0.1, 0.04)
    included = numpy_dino(student, teacher, center, 0.1, 0.04, include_same_crop=True)
    assert loss == pytest.approx(excluded, rel=1e-5)
    assert abs(excluded - included) > 1e-2  # the test can tell the two apart
    assert abs(loss - included) > 1e-2


def test_one_teacher_crop_and_center_of_rank_one():
    student, teacher, center = _crops(3, num_teacher=1, seed=2)
    loss = dino_loss(student, teacher, center[0], 0.2, 0.05)
    np.testing.assert_allclose(loss.numpy(), numpy_dino(student, teacher, center, 0.2, 0.05), rtol=1e-5)


@pytest.mark.parametrize("k", [1, 7, 4096])
def test_equal_logits_give_log_k(k):
    # Uniform teacher and student distributions: H(u, u) = ln K whatever the temperatures and centre.
    same = np.full((3, k), 2.5, np.float32)
    loss = dino_loss([same] * 5, [same] * 2, np.full((k,), 0.7, np.float32), 0.1, 0.04)
    assert float(loss) == pytest.approx(np.log(k), rel=1e-6, abs=1e-6)


def test_gradient_reaches_student_only():
    student, teacher, center = _crops(4, seed=3)
    s_vars = [tf.Variable(s) for s in student]
    t_vars = [tf.Variable(t) for t in teacher]
    c_var = tf.Variable(center)
    with tf.GradientTape() as tape:
        loss = dino_loss(s_vars, t_vars, c_var)
    s_grads, t_grads, c_grad = tape.gradient(loss, [s_vars, t_vars, c_var])
    assert all(g is None for g in t_grads) and c_grad is None
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 1e-4 for g in s_grads)  # positive control


def test_bfloat16_inputs():
    student, teacher, center = _crops(4, seed=4, scale=0.2)
    as_bf16 = [[tf.cast(x, tf.bfloat16) for x in crops] for crops in (student, teacher)]
    loss = dino_loss(*as_bf16, tf.cast(center, tf.bfloat16))
    assert loss.dtype == tf.float32
    # Computed in float32 from the rounded values ...
    rounded = [[tf.cast(x, tf.float32).numpy() for x in crops] for crops in as_bf16]
    rounded_center = tf.cast(tf.cast(center, tf.bfloat16), tf.float32).numpy()
    np.testing.assert_allclose(loss.numpy(), numpy_dino(*rounded, rounded_center, 0.1, 0.04), rtol=1e-5)
    # ... so only the input rounding separates it from the float32 loss.
    assert float(loss) == pytest.approx(float(dino_loss(student, teacher, center)), rel=1e-2)


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_large_low_precision_logits_are_finite(dtype):
    # |logits| up to ~3e4 (float16's range ends at 65504): / 0.04 would overflow in float16, not in float32.
    student, teacher, center = _crops(4, seed=5, scale=1e4)
    cast = [[tf.cast(x, dtype) for x in crops] for crops in (student, teacher)]
    assert all(np.all(np.isfinite(x.numpy())) for crops in cast for x in crops)
    loss = dino_loss(*cast, tf.cast(center, dtype))
    assert np.isfinite(float(loss)) and float(loss) > 0


def test_tensor_teacher_temperature_inside_tf_function():
    student, teacher, center = _crops(3, seed=6)

    @tf.function
    def step(epoch):
        tau_t = teacher_temperature_schedule(epoch, 0.04, 0.07, 30)
        return dino_loss(student, teacher, center, 0.1, tau_t)

    np.testing.assert_allclose(step(tf.constant(15.0)).numpy(),
                               numpy_dino(student, teacher, center, 0.1, 0.055), rtol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(teacher=[]), "teacher needs at least 1"),
    (dict(student=[np.zeros((2, 3), np.float32)]), "student needs at least 2"),
    (dict(teacher=[np.zeros((2, 3), np.float32)] * 3), "teacher has 3 crops but student only 2"),
    (dict(student_temperature=0.0), "student_temperature"),
    (dict(teacher_temperature=-0.04), "teacher_temperature"),
    (dict(teacher_temperature=tf.constant(0.0)), "teacher_temperature"),
    (dict(center=np.zeros((2, 3), np.float32)), "center must have shape"),
    (dict(center=np.zeros((1, 1, 3), np.float32)), "center must have shape"),
])
def test_validation(kwargs, match):
    args = dict(student=[np.zeros((2, 3), np.float32)] * 2, teacher=[np.zeros((2, 3), np.float32)] * 2,
                center=np.zeros((1, 3), np.float32))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        dino_loss(**args)


@pytest.mark.parametrize("epoch,want", [(0, 0.04), (7.5, 0.0475), (15, 0.055), (30, 0.07), (45, 0.07),
                                        (-1, 0.04)])
def test_teacher_temperature_warmup(epoch, want):
    # 0.04 -> 0.07 over 30 epochs: +0.001 per epoch.
    value = teacher_temperature_schedule(epoch, warmup_temperature=0.04, temperature=0.07, warmup_epochs=30)
    assert value.dtype == tf.float32
    assert float(value) == pytest.approx(want, abs=1e-7)


def test_teacher_temperature_vector_tf_function_and_no_warmup():
    schedule = tf.function(lambda e: teacher_temperature_schedule(e, 0.02, 0.06, 4))
    np.testing.assert_allclose(schedule(tf.constant([0.0, 1.0, 3.0, 4.0, 9.0])).numpy(),
                               [0.02, 0.03, 0.05, 0.06, 0.06], atol=1e-7)
    assert float(schedule(tf.constant(2, tf.int64))) == pytest.approx(0.04, abs=1e-7)
    assert float(teacher_temperature_schedule(0, 0.01, 0.04, 0)) == pytest.approx(0.04)


@pytest.mark.parametrize("kwargs", [dict(warmup_temperature=0.0), dict(temperature=-1.0),
                                    dict(warmup_epochs=-1)])
def test_teacher_temperature_validation(kwargs):
    with pytest.raises(ValueError):
        teacher_temperature_schedule(0, **kwargs)


def test_update_center_hand_arithmetic():
    # Rows 1,2 | 3,4 | 5,6 | 7,8 over two crops: mean (4, 5); 0.9 * (1, 1) + 0.1 * (4, 5) = (1.3, 1.4).
    teacher = [np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[5.0, 6.0], [7.0, 8.0]])]
    new = update_center(np.array([[1.0, 1.0]]), teacher, momentum=0.9)
    assert new.dtype == tf.float32 and new.shape == (1, 2)
    np.testing.assert_allclose(new.numpy(), [[1.3, 1.4]], rtol=1e-6)
    np.testing.assert_allclose(update_center(np.array([1.0, 1.0]), teacher, 0.9).numpy(), [1.3, 1.4], rtol=1e-6)
    np.testing.assert_allclose(update_center([[1.0, 1.0]], teacher, 0.0).numpy(), [[4.0, 5.0]])
    np.testing.assert_allclose(update_center([[1.0, 1.0]], teacher, 1.0).numpy(), [[1.0, 1.0]])
    bf16 = [tf.cast(t, tf.bfloat16) for t in teacher]
    np.testing.assert_allclose(update_center([[1.0, 1.0]], bf16, 0.5).numpy(), [[2.5, 3.0]])


@pytest.mark.parametrize("kwargs,match", [(dict(teacher=[]), "teacher needs"), (dict(momentum=1.5), "momentum"),
                                          (dict(momentum=-0.1), "momentum")])
def test_update_center_validation(kwargs, match):
    args = dict(center=np.zeros((1, 2), np.float32), teacher=[np.ones((2, 2), np.float32)], momentum=0.9)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        update_center(**args)


def _per_replica(strategy, fn, *arrays):
    """Runs `fn(*halves)` on each of 2 replicas, replica r getting rows [r * n/2, (r+1) * n/2) of each array."""

    @tf.function
    def run():
        def replica_fn():
            r = tf.distribute.get_replica_context().replica_id_in_sync_group
            halves = [[tf.constant(a)[r * (len(a) // 2):(r + 1) * (len(a) // 2)] for a in crops] for crops in arrays]
            return fn(*halves)

        return strategy.run(replica_fn)

    return [t.numpy() for t in strategy.experimental_local_results(run())]


def test_update_center_two_replicas_equal_one_device(two_replica_strategy):
    rng = np.random.default_rng(8)
    teacher = [rng.normal(size=(8, 6)).astype(np.float32) for _ in range(2)]
    center = rng.normal(size=(1, 6)).astype(np.float32)
    single = update_center(center, teacher, 0.9).numpy()
    want = 0.9 * center + 0.1 * np.concatenate(teacher).astype(np.float64).mean(axis=0, keepdims=True)
    np.testing.assert_allclose(single, want, rtol=1e-6, atol=1e-6)
    per_replica = _per_replica(two_replica_strategy, lambda t: update_center(center, t, 0.9), teacher)
    assert len(per_replica) == 2
    for value in per_replica:
        np.testing.assert_allclose(value, single, rtol=1e-6, atol=1e-6)
    # Positive control: a replica's own half differs from the global mean.
    assert not np.allclose(update_center(center, [t[:4] for t in teacher], 0.9).numpy(), single, atol=1e-3)


def test_loss_two_replicas_mean_equals_one_device(two_replica_strategy):
    student, teacher, center = _crops(6, n=8, seed=9)
    single = float(dino_loss(student, teacher, center))
    per_replica = _per_replica(two_replica_strategy, lambda s, t: dino_loss(s, t, center), student, teacher)
    assert len(per_replica) == 2 and not np.isclose(per_replica[0], per_replica[1])
    assert float(np.mean(per_replica)) == pytest.approx(single, rel=1e-6)
