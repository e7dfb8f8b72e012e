"""Learning-rate schedule and batch-size scaling used by the SimCLR family of recipes.

References:
    Goyal et al. 2017, "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour" (linear scaling, warmup).
    Loshchilov & Hutter 2017, "SGDR: Stochastic Gradient Descent with Warm Restarts" (cosine decay).
    Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations" (SimCLR),
    Appendix B.1: lr = 0.3 * B / 256 ("linear") or 0.075 * sqrt(B) ("sqrt"), 10 warmup epochs then cosine.
"""
import math

import keras
from keras import ops

from tfssl.optim._checks import check_non_negative, is_number

LR_SCALINGS = ("linear", "sqrt", "none")


@keras.saving.register_keras_serializable(package="tfssl")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to a peak, then half-cosine decay to a final value.

    lr(s) = peak * s / warmup                                        for s < warmup
    lr(s) = final + (peak - final) * (1 + cos(pi * p)) / 2,  p = (s - warmup) / (total - warmup)
                                                                     for warmup <= s < total
    lr(s) = final                                                    for s >= total

    Args:
        peak_learning_rate: learning rate reached at the end of warmup (>= 0).
        total_steps: step at which the cosine reaches `final_learning_rate` (>= 1).
        warmup_steps: number of linear-warmup steps, 0 <= warmup_steps <= total_steps.
        final_learning_rate: value at and after `total_steps`, 0 <= final <= peak.
    """

    def __init__(self, peak_learning_rate, total_steps, warmup_steps=0, final_learning_rate=0.0):
        self.peak_learning_rate = check_non_negative("peak_learning_rate", peak_learning_rate)
        self.final_learning_rate = check_non_negative("final_learning_rate", final_learning_rate)
        if self.final_learning_rate > self.peak_learning_rate:
            raise ValueError(
                f"`final_learning_rate` ({final_learning_rate}) must be <= `peak_learning_rate` "
                f"({peak_learning_rate})."
            )
        if not _is_int(total_steps) or total_steps < 1:
            raise ValueError(f"`total_steps` must be an integer >= 1, got {total_steps!r}.")
        if not _is_int(warmup_steps) or not 0 <= warmup_steps <= total_steps:
            raise ValueError(
                f"`warmup_steps` must be an integer in [0, total_steps={total_steps}], got {warmup_steps!r}."
            )
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        """Learning rate at `step`.

        Args:
            step: scalar int or float (tensor), e.g. `optimizer.iterations`.

        Returns:
            float32 scalar tensor.
        """
        step = ops.cast(step, "float32")
        peak, final = self.peak_learning_rate, self.final_learning_rate
        warmup = float(self.warmup_steps)
        # max(warmup, 1) only guards the division; with warmup == 0 the branch is never selected.
        warm_lr = peak * step / max(warmup, 1.0)
        decay_steps = float(self.total_steps - self.warmup_steps)
        if decay_steps > 0:
            progress = ops.clip((step - warmup) / decay_steps, 0.0, 1.0)
            cosine_lr = final + 0.5 * (peak - final) * (1.0 + ops.cos(math.pi * progress))
        else:  # warmup-only schedule: it ends at total_steps, where the contract says "final".
            cosine_lr = ops.full_like(step, final)
        return ops.where(step < warmup, warm_lr, cosine_lr)

    def get_config(self):
        """Returns the constructor arguments (round-trips through `from_config`)."""
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "final_learning_rate": self.final_learning_rate,
        }


def scale_learning_rate(learning_rate, global_batch_size, scaling):
    """Scales a base learning rate with the global batch size (SimCLR Appendix B.1).

    Args:
        learning_rate: base learning rate (>= 0).
        global_batch_size: batch size summed over all replicas (integer >= 1).
        scaling: "linear" -> lr * B / 256 (Goyal et al. 2017); "sqrt" -> lr * sqrt(B) (SimCLR's
            definition, so 0.075 at B=4096 gives 4.8); "none" -> lr unchanged.

    Returns:
        The scaled learning rate as a float.
    """
    learning_rate = check_non_negative("learning_rate", learning_rate)
    if not _is_int(global_batch_size) or global_batch_size < 1:
        raise ValueError(f"`global_batch_size` must be an integer >= 1, got {global_batch_size!r}.")
    if scaling == "linear":
        return learning_rate * global_batch_size / 256.0
    if scaling == "sqrt":
        return learning_rate * math.sqrt(global_batch_size)
    if scaling == "none":
        return learning_rate
    raise ValueError(f"Unknown learning-rate scaling {scaling!r}; choose one of {LR_SCALINGS}.")


def _is_int(value):
    return is_number(value) and float(value) == int(value)
