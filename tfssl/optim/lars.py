"""LARS: layer-wise adaptive rate scaling, in the form used by SimCLR.

References:
    You, Gitman & Ginsburg 2017, "Large Batch Training of Convolutional Networks" (LARS).
    Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations"
    (SimCLR, Section B.1): LARS with momentum 0.9, weight decay 1e-6, trust coefficient 1e-3; biases and
    batch-norm parameters excluded from both weight decay and the trust-ratio adaptation.
"""
import keras
import tensorflow as tf
from keras import ops

from tfssl.optim._checks import check_learning_rate, check_momentum, check_non_negative


@keras.saving.register_keras_serializable(package="tfssl")
class LARS(keras.optimizers.Optimizer):
    """Momentum SGD whose per-variable step is scaled by a trust ratio ||w|| / ||g||.

    For each variable `w` with gradient `g` and momentum slot `v` (classic momentum, as in SimCLR):

        if decayed:  g = g + weight_decay * w                      (L2 term, added to the gradient)
        if adapted:  lr_w = lr * trust_coefficient * ||w|| / ||g||  (lr_w = lr if either norm is 0)
        else:        lr_w = lr
        v = momentum * v + lr_w * g
        w = w - v                                (nesterov: w = w - (momentum * v + lr_w * g))

    A variable is neither decayed nor adapted when it has rank <= 1 (biases, batch-norm gamma / beta) and
    `exclude_rank1` is set, or when its path or name contains one of the corresponding substrings.

    The weight decay lives inside the rule above, so the base class's decoupled weight decay is disabled:
    `self.weight_decay` (the base-class attribute) is always None and the rate is `self.lars_weight_decay`.
    Keras' `exclude_from_weight_decay()` method configures only that (unused) base-class decay; use the
    constructor arguments instead.

    Args:
        learning_rate: float >= 0, `keras.optimizers.schedules.LearningRateSchedule` or callable.
        momentum: momentum coefficient in [0, 1).
        weight_decay: L2 coefficient (>= 0) added to the gradient of decayed variables.
        trust_coefficient: eta > 0 in the trust ratio eta * ||w|| / ||g||.
        nesterov: use the Nesterov form of the update.
        exclude_from_weight_decay: substrings; a variable whose path or name contains one is not decayed.
        exclude_from_layer_adaptation: substrings for the trust ratio; None means "same as
            `exclude_from_weight_decay`" (SimCLR's convention).
        exclude_rank1: exclude every variable of rank <= 1 from both decay and adaptation.
        name: optimizer name.
        **kwargs: other `keras.optimizers.Optimizer` arguments (clipnorm, use_ema, loss_scale_factor, ...);
            `weight_decay` cannot be passed twice.
    """

    def __init__(
        self,
        learning_rate=0.1,
        momentum=0.9,
        weight_decay=0.0,
        trust_coefficient=0.001,
        nesterov=False,
        exclude_from_weight_decay=None,
        exclude_from_layer_adaptation=None,
        exclude_rank1=True,
        name="lars",
        **kwargs,
    ):
        # weight_decay=None keeps the base class from also applying decoupled decay.
        super().__init__(learning_rate=check_learning_rate(learning_rate), weight_decay=None, name=name, **kwargs)
        self.momentum = check_momentum(momentum)
        self.lars_weight_decay = check_non_negative("weight_decay", weight_decay)
        self.trust_coefficient = check_non_negative("trust_coefficient", trust_coefficient)
        if self.trust_coefficient == 0:
            raise ValueError("`trust_coefficient` must be > 0 (SimCLR uses 0.001), got 0.")
        self.nesterov = bool(nesterov)
        self.exclude_rank1 = bool(exclude_rank1)
        self.decay_exclusions = _substrings("exclude_from_weight_decay", exclude_from_weight_decay)
        self.adaptation_exclusions = _substrings("exclude_from_layer_adaptation", exclude_from_layer_adaptation)

    def uses_weight_decay(self, variable):
        """Whether `variable` gets the L2 term.

        Args:
            variable: a `keras.Variable` or `tf.Variable`.

        Returns:
            bool.
        """
        if self.lars_weight_decay == 0:
            return False
        return not self._excluded(variable, self.decay_exclusions)

    def uses_layer_adaptation(self, variable):
        """Whether `variable` gets the trust-ratio scaling of its learning rate.

        Args:
            variable: a `keras.Variable` or `tf.Variable`.

        Returns:
            bool.
        """
        exclusions = self.adaptation_exclusions
        if exclusions is None:
            exclusions = self.decay_exclusions
        return not self._excluded(variable, exclusions)

    def _excluded(self, variable, substrings):
        if self.exclude_rank1 and len(variable.shape) <= 1:
            return True
        labels = (str(getattr(variable, "path", "")), str(variable.name))
        return any(s in label for s in substrings or () for label in labels)

    def build(self, variables):
        """Creates one momentum slot per variable and fixes the exclusion flags.

        The flags are decided here, on the Keras variables (whose `path` is known), because
        `update_step` receives the backend's `tf.Variable`s (per replica under tf.distribute).

        Args:
            variables: list of trainable variables.
        """
        if self.built:
            return
        super().build(variables)
        self._decay_flags = tuple(self.uses_weight_decay(v) for v in variables)
        self._adapt_flags = tuple(self.uses_layer_adaptation(v) for v in variables)
        self._momentums = []
        if self.momentum != 0:
            self._momentums = self.add_optimizer_variables(variables, "momentum")

    def update_step(self, gradient, variable, learning_rate):
        """Applies the LARS rule (see class docstring) to one variable.

        Args:
            gradient: gradient tensor (or `tf.IndexedSlices`) with the variable's shape.
            variable: the variable to update.
            learning_rate: current global learning rate (scalar).
        """
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        if isinstance(gradient, tf.IndexedSlices):
            # The trust ratio needs the norm of the full gradient, so sparse updates are densified.
            gradient = tf.convert_to_tensor(gradient)
        gradient = ops.cast(gradient, dtype)
        lr = ops.cast(learning_rate, dtype)
        if self._decay_flags[index]:
            gradient = gradient + ops.cast(self.lars_weight_decay, dtype) * variable
        if self._adapt_flags[index]:
            lr = lr * _trust_ratio(variable, gradient, self.trust_coefficient)
        step = lr * gradient
        if self.momentum == 0:
            self.assign_sub(variable, step)
            return
        momentum = ops.cast(self.momentum, dtype)
        velocity = self._momentums[index]
        new_velocity = momentum * velocity + step
        self.assign(velocity, new_velocity)
        if self.nesterov:
            self.assign_sub(variable, momentum * new_velocity + step)
        else:
            self.assign_sub(variable, new_velocity)

    def get_config(self):
        """Returns all constructor arguments (round-trips through `from_config`)."""
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "weight_decay": self.lars_weight_decay,
                "trust_coefficient": self.trust_coefficient,
                "nesterov": self.nesterov,
                "exclude_from_weight_decay": _as_list(self.decay_exclusions),
                "exclude_from_layer_adaptation": _as_list(self.adaptation_exclusions),
                "exclude_rank1": self.exclude_rank1,
            }
        )
        return config


def _trust_ratio(variable, gradient, trust_coefficient):
    """eta * ||w|| / ||g||, or 1 when either norm is 0 (a fresh zero-initialised layer, a dead unit).

    Args:
        variable: weight tensor w.
        gradient: gradient tensor g (already including the L2 term), same shape as w.
        trust_coefficient: eta.

    Returns:
        scalar tensor of the variable's dtype.
    """
    w_norm = ops.sqrt(ops.sum(ops.square(variable)))
    g_norm = ops.sqrt(ops.sum(ops.square(gradient)))
    both_positive = ops.logical_and(w_norm > 0, g_norm > 0)
    # The safe denominator keeps the unselected branch finite.
    ratio = trust_coefficient * w_norm / ops.where(both_positive, g_norm, ops.ones_like(g_norm))
    return ops.where(both_positive, ratio, ops.ones_like(ratio))


def _substrings(name, value):
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    value = tuple(value)
    if not all(isinstance(s, str) and s for s in value):
        raise ValueError(f"`{name}` must be None or a list of non-empty strings, got {value!r}.")
    return value


def _as_list(value):
    return None if value is None else list(value)
