"""DINO: self-distillation with a centred, sharpened teacher over multi-crop views.

Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin. "Emerging Properties in Self-Supervised
Vision Transformers", ICCV 2021, sec. 3.1 and Algorithm 1 (the reference `DINOLoss` of main_dino.py).
"""
import tensorflow as tf

from tfssl.distribute import cross_replica_sum


def _check_positive(name, value):
    """Raises ValueError unless `value` (a number, or a tensor whose value is known) is > 0."""
    static = tf.get_static_value(value) if tf.is_tensor(value) else value
    if static is None:  # a traced tensor (e.g. the schedule inside tf.function): not checkable here
        return
    if isinstance(static, (str, bytes)) or not static > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def _check_crops(student, teacher):
    if len(teacher) < 1:
        raise ValueError(f"teacher needs at least 1 crop, got {len(teacher)}")
    if len(student) < 2:
        raise ValueError(f"student needs at least 2 crops, got {len(student)}")
    if len(teacher) > len(student):
        raise ValueError(f"teacher has {len(teacher)} crops but student only {len(student)}")


def dino_loss(student, teacher, center, student_temperature=0.1, teacher_temperature=0.04):
    """Cross-entropy H(p_t, p_s) averaged over every (teacher crop, other student crop) pair.

    p_t = softmax((t - center) / teacher_temperature), with no gradient; log p_s = log_softmax(s /
    student_temperature). Teacher crop i is the same crop as student crop i, and that pair is skipped.
    The result is the plain mean over this replica's rows: it is NOT divided by the number of replicas.

    Args:
      student: list of `[n, K]` student logits, one per crop, the global crops first.
      teacher: list of `[n, K]` teacher logits for the global crops (usually 2), in the same order.
      center: `[1, K]` or `[K]` running centre of the teacher logits (see `update_center`).
      student_temperature: tau_s > 0 (0.1 in the paper).
      teacher_temperature: tau_t > 0, a number or a float scalar tensor (see
        `teacher_temperature_schedule`).

    Returns:
      Scalar float32 loss. Logits of any float dtype (bfloat16/float16 under mixed precision) are cast
      to float32 first.
    """
    student, teacher = list(student), list(teacher)
    _check_crops(student, teacher)
    _check_positive("student_temperature", student_temperature)
    _check_positive("teacher_temperature", teacher_temperature)
    center = tf.cast(center, tf.float32)
    rank = center.shape.rank
    if rank is not None and (rank not in (1, 2) or (rank == 2 and center.shape[0] not in (1, None))):
        raise ValueError(f"center must have shape [1, K] or [K], got {center.shape}")
    center = tf.reshape(center, [1, -1])
    student_t = tf.cast(student_temperature, tf.float32)
    teacher_t = tf.cast(teacher_temperature, tf.float32)

    log_p_s = [tf.nn.log_softmax(tf.cast(s, tf.float32) / student_t, axis=-1) for s in student]
    p_t = [tf.stop_gradient(tf.nn.softmax((tf.cast(t, tf.float32) - center) / teacher_t, axis=-1))
           for t in teacher]
    terms = []
    for i, q in enumerate(p_t):
        for v, log_p in enumerate(log_p_s):
            if v != i:  # the student never predicts the teacher on the very same crop
                terms.append(tf.reduce_mean(-tf.reduce_sum(q * log_p, axis=-1)))
    return tf.add_n(terms) / float(len(terms))


def teacher_temperature_schedule(epoch, warmup_temperature=0.04, temperature=0.04, warmup_epochs=0):
    """Teacher temperature at `epoch`: linear from `warmup_temperature` to `temperature`, then flat.

    The paper warms tau_t up from 0.04 to 0.07 over the first 30 epochs (sec. 3.1, appendix). The value
    is `warmup + (temperature - warmup) * min(epoch / warmup_epochs, 1)`: linear in a possibly
    fractional epoch (per-step values), reaching `temperature` at `epoch == warmup_epochs`.

    Args:
      epoch: number or tensor (any real dtype, any shape); fractional values allowed.
      warmup_temperature: tau_t at epoch 0, > 0.
      temperature: tau_t from `warmup_epochs` on, > 0.
      warmup_epochs: length of the warm-up, >= 0 (0: always `temperature`).

    Returns:
      float32 tensor with the shape of `epoch`. Usable inside `tf.function`.
    """
    _check_positive("warmup_temperature", warmup_temperature)
    _check_positive("temperature", temperature)
    if not isinstance(warmup_epochs, (int, float)) or warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be a number >= 0, got {warmup_epochs!r}")
    epoch = tf.cast(epoch, tf.float32)
    if warmup_epochs == 0:
        return tf.fill(tf.shape(epoch), tf.constant(temperature, tf.float32))
    progress = tf.clip_by_value(epoch / float(warmup_epochs), 0.0, 1.0)
    start = tf.constant(warmup_temperature, tf.float32)
    return start + (tf.constant(temperature, tf.float32) - start) * progress


def update_center(center, teacher, momentum=0.9):
    """New centre `center * m + (1 - m) * mean of the teacher logits over the global batch` (eq. 4).

    The mean runs over every row of every teacher crop on every replica (one all-reduce of the row sum
    and the row count, so replicas may hold different numbers of rows). No gradient flows through it.

    Args:
      center: `[1, K]` or `[K]` current centre.
      teacher: list of `[n, K]` teacher logits (the global crops).
      momentum: m in [0, 1] (0.9 in the paper).

    Returns:
      float32 tensor shaped like `center`; the caller assigns it to its centre variable.
    """
    teacher = list(teacher)
    if len(teacher) < 1:
        raise ValueError(f"teacher needs at least 1 crop, got {len(teacher)}")
    if not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be a number in [0, 1], got {momentum!r}")
    center = tf.cast(center, tf.float32)
    teacher = [tf.stop_gradient(tf.cast(t, tf.float32)) for t in teacher]
    row_sum = tf.add_n([tf.reduce_sum(t, axis=0) for t in teacher])  # [K]
    rows = tf.cast(tf.add_n([tf.shape(t)[0] for t in teacher]), tf.float32)
    # One all-reduce for both: [sum over rows (K values), number of rows].
    total = cross_replica_sum(tf.concat([row_sum, rows[None]], axis=0))
    batch_center = tf.reshape(total[:-1] / total[-1], tf.shape(center))
    return center * momentum + (1.0 - momentum) * batch_center
