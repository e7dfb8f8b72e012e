"""Momentum (EMA) schedules for target / key encoders.

BYOL (Grill et al. 2020, sec. 3.2) raises the target decay from tau_base to 1 with a cosine:
tau(k) = 1 - (1 - tau_base) * (cos(pi * k / K) + 1) / 2. MoCo v1/v2 keep it constant (m = 0.999);
MoCo v3 uses the same cosine rise.
"""
import math

import tensorflow as tf


def cosine_momentum(step, total_steps, base=0.996, final=1.0):
    """EMA momentum at `step` of `total_steps`, rising from `base` to `final` on a half cosine.

    Args:
      step: current step (python number or scalar tensor); clipped to [0, total_steps].
      total_steps: K > 0.
      base: momentum at step 0, in [0, 1].
      final: momentum at step K, in [base, 1].

    Returns:
      float32 scalar tensor.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    if not 0.0 <= base <= final <= 1.0:
        raise ValueError(f"need 0 <= base <= final <= 1, got base={base}, final={final}")
    progress = tf.clip_by_value(tf.cast(step, tf.float32) / float(total_steps), 0.0, 1.0)
    return final - (final - base) * (tf.cos(math.pi * progress) + 1.0) / 2.0
