"""SGD with L2 weight decay coupled to the gradient, as `torch.optim.SGD(weight_decay=...)` applies it.

The PyTorch reference implementations of MoCo v1/v2 (He et al. 2020; Chen et al. 2020), SimSiam (Chen &
He 2021) and InstDis (Wu et al. 2018) decay by adding `wd * w` to the gradient; that term then goes
through the momentum buffer, so at momentum m it acts about 1 / (1 - m) times as strongly as Keras'
decoupled `SGD(weight_decay=wd)` (`w -= lr * wd * w`, outside the momentum). Recipes that claim a paper's
SGD weight decay use this class (`--weight_decay_mode=coupled`).
"""
import keras
import tensorflow as tf
from keras import ops

from tfssl.optim._checks import check_non_negative


@keras.saving.register_keras_serializable(package="tfssl")
class CoupledSGD(keras.optimizers.SGD):
    """Keras SGD whose weight decay is an L2 term in the gradient.

    For each decayed variable `w` with gradient `g` and momentum slot `v`:

        g = g + l2 * w
        v = momentum * v - lr * g       (Keras' form; PyTorch keeps lr outside v: the same at a fixed lr)
        w = w + v                       (nesterov: w = w + momentum * v - lr * g)

    Which variables are decayed is Keras' `exclude_from_weight_decay()` (the same name patterns as the
    decoupled optimizers; call it before the optimizer is built); the base class's decoupled decay is off.

    Args:
        learning_rate: float >= 0, `keras.optimizers.schedules.LearningRateSchedule` or callable.
        momentum: momentum coefficient in [0, 1).
        nesterov: use the Nesterov form.
        l2: coefficient >= 0 of the L2 term added to the gradient.
        name: optimizer name.
        **kwargs: other `keras.optimizers.Optimizer` arguments (clipnorm, loss_scale_factor, ...).
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, l2=0.0, name="coupled_sgd", **kwargs):
        if kwargs.pop("weight_decay", None):
            raise ValueError("CoupledSGD decays through `l2`; `weight_decay` (decoupled) must stay None.")
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, weight_decay=None,
                         name=name, **kwargs)
        self.l2 = check_non_negative("l2", l2)

    def update_step(self, gradient, variable, learning_rate):
        """Adds the L2 term to `gradient` (for decayed variables), then takes Keras' SGD step.

        Args:
            gradient: gradient tensor (or `tf.IndexedSlices`) with the variable's shape.
            variable: the variable to update.
            learning_rate: current learning rate (scalar).
        """
        if self.l2 and self._use_weight_decay(variable):
            if isinstance(gradient, tf.IndexedSlices):
                gradient = tf.convert_to_tensor(gradient)  # the decay touches every row
            gradient = ops.cast(gradient, variable.dtype) + ops.cast(self.l2, variable.dtype) * variable
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        """All constructor arguments (round-trips through `from_config`)."""
        config = super().get_config()
        config["l2"] = self.l2
        return config
